"""Every output distillscope writes (stores, results, reports, extraction shards) goes through
here: one set of guarantees.

``check_output_path`` refuses, before any work, an output that would destroy something (an
input, a device, an existing file without ``overwrite``); the output is written under a
temporary name in the same folder; ``publish`` syncs it, moves it into place atomically (never
over a file that appeared meanwhile unless ``overwrite``, never over anything but a regular
file) and syncs the folder, so a reader sees the old file or the new one, whole, even after a
crash. ``write_atomically`` does all three for a file written in one go.

While an output is written its writer holds ``OutputLock``: an exclusive ``flock`` on the
hidden ``.NAME.lock`` beside it, which the kernel releases if the process dies. A second process
writing the same output fails at once with one line naming the holder; the first wins, whole.
Whoever takes the lock first removes what killed writers left of that output (``.NAME.tmp-*``,
``NAME.partial``): nothing is left behind that a later run does not clean up.
"""

from __future__ import annotations

import fcntl
import glob
import os
import resource
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from ._errors import OutputError

__all__ = ["check_output_path", "refuse_special_file", "publish", "temporary_name",
           "write_atomically", "OutputLock", "partial_name", "check_room"]


def check_output_path(path: Path, *, overwrite: bool, what: str,
                      inputs: Iterable[str | os.PathLike[str] | None] = ()) -> None:
    """Refuse an output that would destroy something, before any work is done.

    Refused always: a directory; an existing path that is not a regular file (a device, a FIFO,
    a socket: ``os.replace`` would put a regular file in its place); the same file as any of
    ``inputs`` (by ``os.path.samefile``: any spelling, a symbolic or a hard link; for a folder
    of shards, its manifest and every shard in it), with or without ``overwrite``. Refused unless ``overwrite``: an existing regular file. Refused too: a
    missing or read-only folder.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name for the {what}")
    for source in _with_shards(inputs):
        if _same_file(path, Path(source)):
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


def _with_shards(inputs: Iterable[str | os.PathLike[str] | None]) -> list[Path]:
    """The inputs, a folder of shards (``store.shards``) standing for its files."""
    out = []
    for source in (Path(s) for s in inputs if s is not None):
        out.append(source)
        if source.is_dir() and (source / "manifest.json").is_file():
            out += [source / "manifest.json", *source.glob("shard-*-of-*.h5")]
    return out


def check_room(path: Path, more: int, what: str, *, size_now: int = 0) -> None:
    """Refuse, before writing, ``more`` bytes that the folder's free space or the process's file
    size limit (``ulimit -f``) cannot take: HDF5 fails badly on a full disk (and may crash the
    process when it closes the file), so a store is never started where it cannot finish."""
    mib = 1 / 2**20
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and size_now + more > limit:
        raise OutputError(f"{path}: the {what} needs {(size_now + more) * mib:.1f} MiB but the "
                          f"file size limit (ulimit -f) is {limit * mib:.1f} MiB; raise it or "
                          "write less")
    folder = Path(path).parent
    free = shutil.disk_usage(folder).free
    if more > free:
        raise OutputError(f"{path}: the {what} needs {more * mib:.1f} MiB more but {folder} has "
                          f"{free * mib:.1f} MiB free; free space or choose another output path")


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
    """The hidden name an output is written under before ``publish`` renames it into place:
    ``.NAME.tmp-PID`` in the same folder."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def partial_name(path: Path) -> Path:
    """The name a store is written under until it is complete: ``NAME.partial``."""
    return path.with_name(path.name + ".partial")


class OutputLock:
    """Exclusive right to write ``path``, from now until ``release`` (or the ``with`` block's
    end); re-entrant within a process. See the module docstring."""

    _held: dict[Path, list] = {}  # absolute output path -> [file descriptor, depth]

    def __init__(self, path: str | os.PathLike[str], what: str):
        self.path = Path(os.path.abspath(path))
        self.released = False
        held = self._held.get(self.path)
        if held is not None:
            held[1] += 1
            return
        self._held[self.path] = [_take_lock(self.path, what), 1]
        pattern = glob.escape(f".{self.path.name}.tmp-") + "*"
        for stale in [*self.path.parent.glob(pattern), partial_name(self.path)]:
            stale.unlink(missing_ok=True)  # a killed writer's: no other writer is alive

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        held = self._held[self.path]
        held[1] -= 1
        if held[1] == 0:
            del self._held[self.path]
            _lock_file(self.path).unlink(missing_ok=True)
            os.close(held[0])

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


def _take_lock(path: Path, what: str) -> int:
    lock = _lock_file(path)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise OutputError(f"{path}: cannot create the lock {lock.name} ({err.strerror}); "
                              "choose another output path") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise OutputError(f"{path}: another process{f' (PID {holder})' if holder else ''} "
                              f"is writing the {what}; wait for it to finish or choose another "
                              "output path") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a lock file its last holder removed while we opened it
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)


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
    _sync_folder(path.parent)
    return path


def write_atomically(path: Path, write, *, overwrite: bool, what: str,
                     inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Path:
    """``write(file)`` into a temporary file, then ``publish`` it at ``path`` (checked first
    with ``check_output_path``); nothing is left behind if ``write`` fails."""
    path = Path(path)
    check_output_path(path, overwrite=overwrite, what=what, inputs=inputs)
    with OutputLock(path, what):
        tmp = temporary_name(path)
        try:
            with open(tmp, "wb") as fh:
                write(fh)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"{path}: cannot write the {what} ({err.strerror or err}); "
                              "choose another output path") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return publish(tmp, path, overwrite=overwrite, what=what)


def _sync_folder(folder: Path) -> None:
    """fsync a folder so a rename in it survives a crash (where the file system allows)."""
    try:
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
    except OSError:  # not every file system lets a folder be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
