"""Reading a feature store: ``open_store``, ``validate_store`` and ``Store``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from .._errors import StoreError
from .._scratch import cast_into, scratch
from .chunks import ChunkReader
from .schema import (BLOCK_FLOAT64_BYTES, BLOCK_MAX_ROWS, LayerInfo, ModelInfo, first_line,
                     layer_info, nonfinite_message, plain_attr, validate_structure)

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
    """

    def __init__(self, path: Path, file: h5py.File):
        self.path = path
        self._file = file
        # chunks are read straight from the file when the layout allows (docs/store-format.md)
        self._raw_fd = os.open(path, os.O_RDONLY) if file.driver == "sec2" else None
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

    def _raw_reader(self, ds: h5py.Dataset, rows: int) -> "ChunkReader | None":
        """A direct reader of ``ds``'s chunks when its layout allows one, else None.

        Not with ``NUMBA_DISABLE_JIT=1``: the checksum kernel would run as Python, byte by byte.
        """
        from .._kernels import jit_enabled

        if self._raw_fd is None or not jit_enabled():
            return None
        return ChunkReader.open(self, ds, rows)

    def iter_chunks(self, info: LayerInfo, rows: int | None = None, *,
                    widen: bool = False) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, block)`` over the samples of a layer, in whole HDF5 chunks.

        ``rows`` defaults to at most 16384 samples and 128 MiB once converted to float64,
        rounded to a multiple of the HDF5 chunk rows. With ``widen``, float16 layers come as
        float32 blocks (exact; about 3x faster than numpy's cast, and numpy computes faster on
        float32 than on float16); other dtypes as stored.
        Each block is a view of one reused buffer, valid until the next step: copy it to keep
        it. Checksum failures and read errors become StoreError naming the file and path.
        """
        ds = self._file[info.path]
        n = ds.shape[0]
        if rows is None:
            row_bytes = 8 * int(np.prod(ds.shape[1:]))
            chunk_rows = ds.chunks[0] if ds.chunks else 1
            rows = min(BLOCK_MAX_ROWS, BLOCK_FLOAT64_BYTES // max(row_bytes, 1))
            rows = max(chunk_rows, rows // chunk_rows * chunk_rows)
        buffer = scratch("store-read", (min(rows, n), *ds.shape[1:]), ds.dtype)
        raw = self._raw_reader(ds, rows)
        wide = (scratch("store-widen", buffer.shape, np.float32)
                if widen and ds.dtype == np.float16 else None)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            block = buffer[: stop - start]
            try:
                if raw is not None:
                    raw.read(start, stop, block, info.path)
                else:
                    ds.read_direct(block, np.s_[start:stop], np.s_[0:stop - start])
            except OSError as err:
                raise StoreError(
                    self.path, info.path,
                    f"cannot read samples {start}..{stop - 1} ({first_line(err)}); the file is "
                    "damaged: re-extract or restore it",
                ) from None
            if wide is not None:
                cast_into(block, wide[: stop - start])
                block = wide[: stop - start]
            yield start, block

    def read(self, info: LayerInfo) -> np.ndarray:
        """A whole layer in memory, in its stored dtype."""
        out = np.empty(info.shape, dtype=info.dtype)
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
        if self._raw_fd is not None:
            os.close(self._raw_fd)
            self._raw_fd = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<distillscope.Store {self.path}: {self.n_samples} samples, "
                f"{len(self.models)} models, {len(self.conditions)} conditions>")


def open_store(path: str | os.PathLike[str], *, allow_incomplete: bool = False) -> Store:
    """Open and validate a feature store (structure only; values are checked as they stream).

    Raises
    ------
    StoreError
        With the file, the HDF5 path and the fix, for a missing, unreadable, truncated or
        malformed store, a store of another format version, or an incomplete one.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(path, None, "no such file; check the path (create stores with extract "
                                     "or distillscope.StoreWriter)")
    if path.is_dir():
        raise StoreError(path, None, "is a directory, not a store file")
    try:
        file = h5py.File(path, "r")
    except OSError as err:
        reason = first_line(err)
        hint = ("the file is truncated: the writer was interrupted or the copy is incomplete"
                if "truncated" in reason else "the file is not HDF5 or is damaged")
        raise StoreError(path, None, f"cannot open as HDF5 ({reason}); {hint}") from None
    try:
        validate_structure(path, file, allow_incomplete)
    except BaseException:
        file.close()
        raise
    return Store(path, file)


def validate_store(path: str | os.PathLike[str], *, deep: bool = False,
                   allow_incomplete: bool = False) -> Store:
    """Validate a store and return it opened; with ``deep``, read every value.

    A deep check verifies every chunk's fletcher32 checksum and that no value is NaN or
    infinite, naming the first bad sample.
    """
    store = open_store(path, allow_incomplete=allow_incomplete)
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

