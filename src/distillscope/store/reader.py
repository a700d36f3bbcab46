"""Reading a feature store: ``open_store``, ``validate_store`` and ``Store``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from .._errors import StoreError
from .chunks import DatasetReader
from .schema import (BLOCK_FLOAT64_BYTES, BLOCK_MAX_ROWS, LayerInfo, ModelInfo, first_line,
                     layer_info, nonfinite_message, plain_attr)
from .validate import validate_structure

__all__ = ["Store", "open_store", "validate_store"]


class Store:
    """A validated, read-only feature store. Open with ``open_store``; use as a context manager.

    Attributes
    ----------
    path : Path
    attrs : dict
        Root attributes (provenance).
    n_samples : int
    sample_ids : ndarray of int64
    labels : ndarray of int64 or None
    splits : ndarray of str or None
    conditions : dict of str to dict
        Each condition's attributes (``kind`` and parameters).
    models : dict of str to ModelInfo
    notes : list of str
        What the store reads from other files (only when opened with ``allow_external``).
    """

    def __init__(self, path: Path, file: h5py.File, notes: list[str] | None = None):
        self.path = path
        self._file = file
        self.notes = list(notes or [])
        self.attrs = {k: plain_attr(v) for k, v in file.attrs.items()}
        self.n_samples = int(file["samples/id"].shape[0])
        self.sample_ids = file["samples/id"][()]
        self.labels = file["samples/label"][()] if "label" in file["samples"] else None
        self.splits = (file["samples/split"].asstr()[()] if "split" in file["samples"] else None)
        self.conditions = {
            name: {k: plain_attr(v) for k, v in group.attrs.items()}
            for name, group in file["conditions"].items()
        }
        self.models = {}
        groups = sorted(file["models"].items(), key=lambda item: item[1].attrs.get("role") != "teacher")
        for name, group in groups:  # the teacher first, then the file's order
            attrs = {k: plain_attr(v) for k, v in group.attrs.items()}
            self.models[name] = ModelInfo(
                name=name, role=attrs.pop("role"), architecture=str(attrs.pop("architecture")),
                n_params=int(attrs.pop("n_params")), attrs=attrs,
            )
        #: rows read from the file per dataset path, over every reader of this store
        self.rows_read: dict[str, int] = {}

    def layers(self, model: str, condition: str) -> dict[str, LayerInfo]:
        """The layers stored for one model under one condition."""
        group = self._file["models"][model].get(condition)
        if group is None:
            return {}
        return {name: layer_info(model, condition, name, ds) for name, ds in group.items()}

    def entries(self) -> Iterator[LayerInfo]:
        """Every stored dataset, in model, condition, layer order."""
        for model in self.models:
            for condition in self.conditions:
                yield from self.layers(model, condition).values()

    def reader(self, info: LayerInfo, *, widen: bool = True) -> DatasetReader:
        """A reader of consecutive sample ranges of one layer (``store.chunks``)."""
        reader = DatasetReader(self._file[info.path], (self.path, info.path), widen=widen)
        reader.on_read = lambda m, path=info.path: self.rows_read.__setitem__(
            path, self.rows_read.get(path, 0) + m)
        return reader

    def default_rows(self, info: LayerInfo) -> int:
        """Rows per block when streaming one layer alone: at most 16384 samples and 128 MiB once
        converted to float64 (``docs/performance.md``)."""
        row_bytes = 8 * int(np.prod(info.shape[1:]))
        return max(1, min(BLOCK_MAX_ROWS, BLOCK_FLOAT64_BYTES // max(row_bytes, 1)))

    def iter_chunks(self, info: LayerInfo, rows: int | None = None, *,
                    widen: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` over the samples of a layer, each read once.

        ``rows`` defaults to ``default_rows``. With ``widen``, float16 layers come as float32
        blocks (exact; about 3x faster than numpy's cast, and numpy computes faster on float32
        than on float16); other dtypes as stored (big-endian converted to native). Each block is
        a buffer reused for the next step: copy it to keep it. Checksum failures and read errors
        become StoreError naming the file and path.
        """
        reader = self.reader(info, widen=widen)
        rows = rows or self.default_rows(info)
        for start in range(0, info.shape[0], rows):
            block = reader.read(start, min(info.shape[0], start + rows))
            try:
                yield start, block
            finally:
                reader.done(block)

    def read(self, info: LayerInfo) -> np.ndarray:
        """A whole layer in memory, in its stored dtype (native byte order)."""
        out = np.empty(info.shape, dtype=info.dtype.newbyteorder("="))
        for start, block in self.iter_chunks(info):
            out[start:start + block.shape[0]] = block
        return out

    def locate_nonfinite(self, info: LayerInfo) -> tuple[int, int, int, tuple[int, ...]]:
        """(n NaN, n infinite, first sample index, feature index) of a layer's bad values."""
        n_nan = n_inf = 0
        first: tuple[int, tuple[int, ...]] | None = None
        for start, block in self.iter_chunks(info):
            nan, inf = np.isnan(block), np.isinf(block)
            n_nan += int(nan.sum())
            n_inf += int(inf.sum())
            if first is None and (nan.any() or inf.any()):
                where = np.argwhere(nan | inf)[0]
                first = (start + int(where[0]), tuple(int(i) for i in where[1:]))
        if first is None:
            return 0, 0, -1, ()
        return n_nan, n_inf, first[0], first[1]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<distillscope.Store {self.path}: {self.n_samples} samples, "
                f"{len(self.models)} models, {len(self.conditions)} conditions>")


def open_store(path: str | os.PathLike[str], *, allow_incomplete: bool = False,
               allow_external: bool = False) -> Store:
    """Open and validate a feature store (structure only; values are checked as they stream).

    Parameters
    ----------
    path : path-like
        A store file, or a folder of shards with their ``manifest.json`` (``extract --shard``;
        ``store.shards``), read as one store.
    allow_incomplete : bool, default False
        Read a store whose writer did not finish (``complete = False``).
    allow_external : bool, default False
        Follow external links and read virtual datasets or external storage, which read other
        files (``Store.notes`` says which); refused by default.

    Raises
    ------
    StoreError
        With the file, the HDF5 path and the fix, for a missing, unreadable, truncated or
        malformed store, a store of another format version, or an incomplete one; listing
        every violation of the schema (``store.validate``) when there are several.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(path, None, "no such file; check the path (create stores with extract "
                                     "or distillscope.StoreWriter)")
    if path.is_dir():
        from .shards import MANIFEST, open_sharded

        if (path / MANIFEST).is_file():  # the shards of one extraction, read as one store
            return open_sharded(path, allow_incomplete=allow_incomplete,
                                allow_external=allow_external)
        raise StoreError(path, None, f"is a directory, not a store file (nor a folder of "
                                     f"shards: it has no {MANIFEST})")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        reason = first_line(err)
        hint = ("the file is truncated: the writer was interrupted or the copy is incomplete"
                if "truncated" in reason else "the file is not HDF5 or is damaged")
        raise StoreError(path, None, f"cannot open as HDF5 ({reason}); {hint}") from None
    try:
        notes = validate_structure(path, file, allow_incomplete, allow_external)
        return Store(path, file, notes)
    except BaseException:
        file.close()
        raise


def validate_store(path: str | os.PathLike[str], *, deep: bool = False,
                   allow_incomplete: bool = False, allow_external: bool = False) -> Store:
    """Validate a store and return it opened; with ``deep``, read every value.

    A deep check verifies every chunk's fletcher32 checksum and that no value is NaN or
    infinite, naming the first bad sample.
    """
    store = open_store(path, allow_incomplete=allow_incomplete, allow_external=allow_external)
    if deep:
        try:
            for info in store.entries():
                n_nan, n_inf, sample, feature = store.locate_nonfinite(info)
                if n_nan or n_inf:
                    raise StoreError(store.path, info.path, nonfinite_message(
                        n_nan, n_inf, sample, int(store.sample_ids[sample]), feature))
        except BaseException:
            store.close()
            raise
    return store

