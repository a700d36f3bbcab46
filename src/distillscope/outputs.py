"""Every output distillscope writes (stores, results, reports) goes through here.

``check_output_path`` refuses, before any work, an output that would destroy something;
``publish`` moves a finished temporary file into place atomically.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ._errors import OutputError

__all__ = ["check_output_path", "refuse_special_file", "publish", "temporary_name"]


def check_output_path(path: Path, *, overwrite: bool, what: str,
                      inputs: Iterable[str | os.PathLike[str] | None] = ()) -> None:
    """Refuse an output that would destroy something, before any work is done.

    Refused always: a directory; an existing path that is not a regular file (a device, a FIFO,
    a socket: ``os.replace`` would put a regular file in its place); the same file as any of
    ``inputs`` (by ``os.path.samefile``: any spelling, a symbolic or a hard link), with or
    without ``overwrite``. Refused unless ``overwrite``: an existing regular file. Refused too: a
    missing or read-only folder.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name for the {what}")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise OutputError(f"{path}: is the input {source}; writing the {what} there would "
                              "destroy it: choose another output path")
    refuse_special_file(path, what)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: the {what} exists; pass overwrite=True (--overwrite) to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: folder {parent} is not writable; choose another output path")


def refuse_special_file(path: Path, what: str) -> None:
    """Raise OutputError if ``path`` exists and is not a regular file (checked again just before
    an output is renamed into place, which would put a regular file where a device was)."""
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise OutputError(f"{path}: is not a regular file (a device, FIFO or socket); the {what} "
                          "is only ever written to a regular file: choose another output path")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two existing paths name one file (False if either is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def temporary_name(path: Path) -> Path:
    """The hidden name an output is written under before ``publish`` renames it into place."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def publish(tmp: Path, path: Path, *, overwrite: bool, what: str) -> Path:
    """Move the finished file ``tmp`` to ``path`` atomically, after an fsync; ``tmp`` is gone.

    Without ``overwrite`` a file that appeared at ``path`` meanwhile is never replaced (a hard
    link fails if the name exists; on file systems without links, a last check then a rename).
    With it, only a regular file is replaced: a device, FIFO or socket at ``path`` is refused.
    """
    try:
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if overwrite:
            refuse_special_file(path, what)
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path appeared meanwhile: never clobber
            except FileExistsError:
                raise OutputError(
                    f"{path}: the {what} appeared while writing; pass overwrite=True "
                    "(--overwrite) to replace it"
                ) from None
            except OSError:  # a file system without hard links
                if path.exists():
                    raise OutputError(f"{path}: the {what} appeared while writing; pass "
                                      "overwrite=True (--overwrite) to replace it") from None
                os.replace(tmp, path)
    except OutputError:
        raise
    except OSError as err:
        raise OutputError(f"{path}: cannot write ({err.strerror or err}); choose another output "
                          "path") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
