"""Exceptions and the one message style used at every public boundary.

Every message is one line: *where* (file, HDF5 path or parameter), *what* was found, *what* was
expected and *how to fix it*. The command-line interface prints the message alone and exits
non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

from os import PathLike

__all__ = ["DistillscopeError", "StoreError", "InputError", "OutputError"]


class DistillscopeError(Exception):
    """Base class of every error distillscope raises on purpose."""


class InputError(DistillscopeError, ValueError):
    """A parameter or an in-memory array is not what a function accepts."""


class StoreError(DistillscopeError):
    """A feature store is missing, unreadable, malformed or holds values that cannot be analysed.

    Parameters
    ----------
    file : path-like
        The store file.
    hdf5_path : str or None
        The HDF5 object concerned (``"/"`` for the file itself), or None.
    problem : str
        What was found and what was expected, and how to fix it.
    """

    def __init__(self, file: str | PathLike[str], hdf5_path: str | None, problem: str):
        self.file = str(file)
        self.hdf5_path = hdf5_path
        self.problem = problem
        where = self.file if hdf5_path is None else f"{self.file}:{hdf5_path}"
        super().__init__(f"{where}: {problem}")


class OutputError(DistillscopeError, OSError):
    """An output path cannot be written, or exists and overwriting was not asked for."""
