"""The feature store, format version 1: write, read and validate. ``docs/store-format.md``.

The store is the contract between ``extract/`` and the library, and the door for features from
any other pipeline. Layout (every name is a plain string without ``/``)::

    /                         attrs format, format_version, complete, producer, producer_version,
                              created, config, n_samples
    /samples/id               (n,) int64, unique: one sample order shared by every model
    /samples/label            (n,) int64, optional
    /samples/split            (n,) str, optional ("train", "test", ...)
    /conditions/<condition>   attrs kind (+ its parameters)
    /models/<model>           attrs role ("teacher" | "student"), architecture, n_params, ...
    /models/<model>/<condition>/<layer>
                              float16/32/64 dataset, axis 0 = sample, chunked along samples,
                              fletcher32 checksums; attrs kind = "embedding" (n, d) |
                              "map" (n, c, h, w) | "tokens" (n, t, d) with grid = (h, w) and
                              num_prefix_tokens, t = num_prefix_tokens + h * w

A store is written to ``<name>.partial`` and renamed into place only after ``complete`` is set
and the file is flushed and synced, so a store under its final name is always whole.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ._errors import InputError, OutputError, StoreError
from ._scratch import cast_into, scratch
from ._version import __version__
from .moments import FLOAT_DTYPES

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LayerInfo",
    "ModelInfo",
    "Store",
    "StoreWriter",
    "open_store",
    "validate_store",
]

FORMAT = "distillscope.store"
FORMAT_VERSION = 1
ROLES = ("teacher", "student")
LAYER_KINDS = {"embedding": 2, "map": 4, "tokens": 3}
_CHUNK_BYTES = 1 << 20  # HDF5 chunk size target (h5py's guidance: 10 KiB to 1 MiB)
_WRITE_BYTES = 16 << 20  # bytes per block copied into a new store
# Streamed blocks: as many rows as fit 128 MiB once converted to float64, at most 16384. BLAS
# syrk on a block of k rows runs faster the larger k is (docs/performance.md): 16384 rows cost
# 1.11-1.15x one call on the whole matrix at d = 768, 8192 rows 1.17x, 2048 rows 1.34x.
_BLOCK_FLOAT64_BYTES = 128 << 20
_BLOCK_MAX_ROWS = 16384


@dataclass(frozen=True)
class ModelInfo:
    """A model of the store: its name, role, architecture, parameter count and other attrs."""

    name: str
    role: str
    architecture: str
    n_params: int
    attrs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        """Configuration shared by the seeds of one model (defaults to the model's name)."""
        return str(self.attrs.get("family", self.name))

    @property
    def seed(self) -> int:
        """Training seed, or -1 when the store does not say."""
        return int(self.attrs.get("seed", -1))


@dataclass(frozen=True)
class LayerInfo:
    """One stored activation dataset: ``/models/<model>/<condition>/<layer>``."""

    model: str
    condition: str
    layer: str
    kind: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...] | None
    grid: tuple[int, int] | None = None
    num_prefix_tokens: int | None = None

    @property
    def path(self) -> str:
        return f"/models/{self.model}/{self.condition}/{self.layer}"


# ----------------------------------------------------------------------------- validation helpers
def _check_name(what: str, name: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise InputError(
            f"{what} name must be a non-empty string without '/'; got {name!r}"
        )
    return name


def _attr_value(value: Any) -> Any:
    """An HDF5-storable attribute value (None becomes the string 'none')."""
    if value is None:
        return "none"
    if isinstance(value, (bool, np.bool_)):
        return np.bool_(value)
    if isinstance(value, (int, float, str, np.integer, np.floating)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
        return np.asarray(value)
    return json.dumps(value, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _float_dtype(array_dtype: np.dtype, where: str) -> None:
    if np.dtype(array_dtype) not in FLOAT_DTYPES:
        raise InputError(
            f"{where}: features must be float16, float32 or float64; got {np.dtype(array_dtype)} "
            "(convert with .astype(np.float32); integer or complex activations are not features)"
        )


def _layer_kind(ndim: int, kind: str | None, where: str) -> str:
    if kind is None:
        kind = {2: "embedding", 4: "map"}.get(ndim)
        if kind is None:
            raise InputError(
                f"{where}: cannot tell the layer kind of a {ndim}-D array; pass kind='tokens' "
                "with grid and num_prefix_tokens for (n, t, d) tokens"
            )
    if kind not in LAYER_KINDS:
        raise InputError(f"{where}: kind must be one of {', '.join(LAYER_KINDS)}; got {kind!r}")
    if LAYER_KINDS[kind] != ndim:
        raise InputError(
            f"{where}: a {kind} layer is {LAYER_KINDS[kind]}-D (samples first); got {ndim}-D"
        )
    return kind


# ----------------------------------------------------------------------------------- the writer
class LayerWriter:
    """Writes one layer's activations in blocks of samples (returned by ``StoreWriter.create_layer``)."""

    def __init__(self, dataset: h5py.Dataset, where: str):
        self._ds = dataset
        self._where = where
        self.rows_written = 0

    @property
    def n_samples(self) -> int:
        return self._ds.shape[0]

    def append(self, block) -> None:
        """Write the next ``len(block)`` samples (any array-like, e.g. ``tensor.numpy()``)."""
        block = np.asarray(block)
        _float_dtype(block.dtype, self._where)
        if block.shape[1:] != self._ds.shape[1:]:
            raise InputError(
                f"{self._where}: a block must have per-sample shape {self._ds.shape[1:]}; "
                f"got {block.shape[1:]}"
            )
        stop = self.rows_written + block.shape[0]
        if stop > self.n_samples:
            raise InputError(
                f"{self._where}: {stop} samples written, but the store has {self.n_samples}"
            )
        self._ds[self.rows_written:stop] = block
        self.rows_written = stop


class StoreWriter:
    """Create a feature store from arrays: for ``extract/`` and for features from any pipeline.

    Parameters
    ----------
    path : path-like
        The store to create. Written as ``<path>.partial`` and renamed into place by ``close``.
    sample_ids : array_like of int, shape (n,)
        Stable sample identities, unique; every layer written must follow this order.
    labels : array_like of int, optional
    splits : array_like of str, optional
        For example "train" / "test" per sample.
    config : str or mapping, optional
        The producing configuration, kept as text (a mapping is stored as JSON).
    producer : str
        Name of the producing program.
    overwrite : bool, default False
        Replace an existing store at ``path`` (only once the new one is complete).
    compression : str, optional
        HDF5 filter, e.g. "gzip"; off by default (dense activations shrink 1.1-1.2x).
    provenance : mapping, optional
        Anything else worth keeping about how the features were made (package versions, data
        digests, ...), stored as JSON text in the root attribute ``provenance``.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "features.h5")
    >>> with StoreWriter(path, sample_ids=np.arange(100)) as w:
    ...     w.add_condition("clean")
    ...     w.add_model("teacher", role="teacher", architecture="mine", n_params=0)
    ...     w.write_layer("teacher", "clean", "embedding", np.ones((100, 8), np.float32))
    >>> open_store(path).layers("teacher", "clean")["embedding"].shape
    (100, 8)
    """

    def __init__(self, path: str | os.PathLike[str], sample_ids, *, labels=None, splits=None,
                 config: str | Mapping[str, Any] | None = None, producer: str = "distillscope",
                 overwrite: bool = False, compression: str | None = None,
                 provenance: Mapping[str, Any] | None = None):
        self.path = Path(path)
        check_output_path(self.path, overwrite=overwrite, what="store")
        ids = np.asarray(sample_ids)
        if ids.ndim != 1 or ids.size == 0 or ids.dtype.kind not in "iu":
            raise InputError(
                f"sample_ids must be a non-empty 1-D integer array; got dtype {ids.dtype}, "
                f"shape {ids.shape}"
            )
        unique, counts = np.unique(ids, return_counts=True)
        if unique.size != ids.size:
            raise InputError(
                f"sample_ids must be unique; id {unique[counts > 1][0]} appears "
                f"{counts[counts > 1][0]} times"
            )
        self.sample_ids = ids.astype(np.int64)
        self.n_samples = ids.size
        self._compression = compression
        self._partial = self.path.with_name(self.path.name + ".partial")
        self._layers: dict[str, LayerWriter] = {}
        self._file = h5py.File(self._partial, "w", track_order=True)
        try:
            root = self._file.attrs
            root["format"] = FORMAT
            root["format_version"] = FORMAT_VERSION
            root["complete"] = np.bool_(False)
            root["producer"] = producer
            root["producer_version"] = __version__
            root["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            root["config"] = (config if isinstance(config, str)
                              else json.dumps(config or {}, sort_keys=True, default=str))
            root["n_samples"] = self.n_samples
            if provenance is not None:
                root["provenance"] = json.dumps(provenance, sort_keys=True, default=str)
            root["numpy_version"] = np.__version__
            root["h5py_version"] = h5py.__version__
            root["hdf5_version"] = h5py.version.hdf5_version
            samples = self._file.create_group("samples", track_order=True)
            samples.create_dataset("id", data=self.sample_ids)
            if labels is not None:
                labels = np.asarray(labels)
                if labels.shape != (self.n_samples,) or labels.dtype.kind not in "iu":
                    raise InputError(
                        f"labels must be {self.n_samples} integers; got dtype {labels.dtype}, "
                        f"shape {labels.shape}"
                    )
                samples.create_dataset("label", data=labels.astype(np.int64))
            if splits is not None:
                splits = np.asarray(splits, dtype=object)
                if splits.shape != (self.n_samples,):
                    raise InputError(f"splits must be {self.n_samples} strings; got shape {splits.shape}")
                samples.create_dataset("split", data=splits.astype(str).astype(object),
                                       dtype=h5py.string_dtype())
            self._file.create_group("conditions", track_order=True)
            self._file.create_group("models", track_order=True)
        except BaseException:
            self.abort()
            raise

    # -- structure --------------------------------------------------------------------------
    def add_condition(self, name: str, kind: str = "clean", **params: Any) -> None:
        """Declare an input condition (``kind`` e.g. "clean", "gaussian_noise"; parameters as attrs)."""
        group = self._file["conditions"].create_group(_check_name("condition", name),
                                                      track_order=True)
        group.attrs["kind"] = kind
        for key, value in params.items():
            group.attrs[key] = _attr_value(value)

    def add_model(self, name: str, *, role: str, architecture: str, n_params: int = -1,
                  **attrs: Any) -> None:
        """Declare a model. ``attrs`` may hold ``family`` and ``seed`` (seeds of one student)."""
        if role not in ROLES:
            raise InputError(f"model {name!r}: role must be 'teacher' or 'student'; got {role!r}")
        if role == "teacher" and any(
            g.attrs.get("role") == "teacher" for g in self._file["models"].values()
        ):
            raise InputError(f"model {name!r}: the store already has a teacher")
        group = self._file["models"].create_group(_check_name("model", name), track_order=True)
        group.attrs["role"] = role
        group.attrs["architecture"] = architecture
        group.attrs["n_params"] = int(n_params)
        for key, value in attrs.items():
            group.attrs[key] = _attr_value(value)

    def create_layer(self, model: str, condition: str, layer: str, sample_shape: tuple[int, ...],
                     *, dtype="float32", kind: str | None = None,
                     grid: tuple[int, int] | None = None, num_prefix_tokens: int | None = None,
                     **attrs: Any) -> LayerWriter:
        """Create an empty layer dataset to be filled in sample order with ``append``."""
        where = f"/models/{model}/{condition}/{_check_name('layer', layer)}"
        if model not in self._file["models"]:
            raise InputError(f"{where}: add_model({model!r}, ...) first")
        if condition not in self._file["conditions"]:
            raise InputError(f"{where}: add_condition({condition!r}, ...) first")
        dtype = np.dtype(dtype)
        _float_dtype(dtype, where)
        sample_shape = tuple(int(s) for s in sample_shape)
        if kind is None and grid is not None:
            kind = "tokens"
        kind = _layer_kind(1 + len(sample_shape), kind, where)
        if kind == "tokens":
            if grid is None or num_prefix_tokens is None:
                raise InputError(
                    f"{where}: tokens need grid=(h, w) and num_prefix_tokens (CLS = 1, "
                    "distillation token +1, registers +r); take them from the model"
                )
            grid = (int(grid[0]), int(grid[1]))
            if int(num_prefix_tokens) + grid[0] * grid[1] != sample_shape[0]:
                raise InputError(
                    f"{where}: {sample_shape[0]} tokens != {num_prefix_tokens} prefix + "
                    f"{grid[0]}x{grid[1]} grid; check grid and num_prefix_tokens"
                )
        row_bytes = dtype.itemsize * int(np.prod(sample_shape))
        rows = max(1, min(self.n_samples, _CHUNK_BYTES // max(row_bytes, 1)))
        models = self._file["models"][model]
        group = models[condition] if condition in models else models.create_group(
            condition, track_order=True)
        ds = group.create_dataset(
            layer, shape=(self.n_samples, *sample_shape), dtype=dtype,
            chunks=(rows, *sample_shape), fletcher32=True, compression=self._compression,
        )
        ds.attrs["kind"] = kind
        if kind == "tokens":
            ds.attrs["grid"] = np.asarray(grid, dtype=np.int64)
            ds.attrs["num_prefix_tokens"] = int(num_prefix_tokens)
        for key, value in attrs.items():
            ds.attrs[key] = _attr_value(value)
        writer = LayerWriter(ds, f"{self._partial}:{where}")
        self._layers[where] = writer
        return writer

    def write_layer(self, model: str, condition: str, layer: str, data, *,
                    dtype=None, kind: str | None = None, grid: tuple[int, int] | None = None,
                    num_prefix_tokens: int | None = None, sample_ids=None, **attrs: Any) -> None:
        """Write a whole layer from an array, a ``.npy`` path, or anything ``np.asarray`` takes.

        ``.npy`` files are memory-mapped and written in blocks. When ``sample_ids`` is given it
        must equal the store's order; the first mismatch is named otherwise.
        """
        where = f"/models/{model}/{condition}/{layer}"
        if isinstance(data, (str, os.PathLike)):
            data = np.load(data, mmap_mode="r", allow_pickle=False)
        data = np.asarray(data) if not isinstance(data, np.ndarray) else data
        if data.ndim < 2 or data.shape[0] != self.n_samples:
            raise InputError(
                f"{where}: expected {self.n_samples} samples along axis 0; got shape {data.shape}"
            )
        if sample_ids is not None:
            ids = np.asarray(sample_ids)
            if ids.shape != self.sample_ids.shape or not np.array_equal(ids, self.sample_ids):
                if ids.shape != self.sample_ids.shape:
                    raise InputError(
                        f"{where}: {ids.size} sample ids given, the store has {self.n_samples}"
                    )
                i = int(np.flatnonzero(ids != self.sample_ids)[0])
                raise InputError(
                    f"{where}: sample ids differ from the store's order, first at position {i} "
                    f"(got id {ids[i]}, store has {self.sample_ids[i]}); reorder the features"
                )
        writer = self.create_layer(model, condition, layer, data.shape[1:],
                                   dtype=data.dtype if dtype is None else dtype, kind=kind,
                                   grid=grid, num_prefix_tokens=num_prefix_tokens, **attrs)
        step = max(1, _WRITE_BYTES // max(data[:1].nbytes, 1))
        for start in range(0, self.n_samples, step):
            writer.append(data[start:start + step])

    # -- finishing ---------------------------------------------------------------------------
    def close(self) -> Path:
        """Check every layer is full, mark the store complete, sync it and move it into place."""
        for where, writer in self._layers.items():
            if writer.rows_written != writer.n_samples:
                raise InputError(
                    f"{where}: only {writer.rows_written} of {writer.n_samples} samples written"
                )
        self._file.attrs["complete"] = np.bool_(True)
        self._file.flush()
        self._file.close()
        with open(self._partial, "rb+") as fh:
            os.fsync(fh.fileno())
        refuse_special_file(self.path, "store")
        os.replace(self._partial, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the partial file; nothing at ``path`` is touched."""
        try:
            self._file.close()
        finally:
            self._partial.unlink(missing_ok=True)

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.close()
            except BaseException:
                self.abort()
                raise
        else:
            self.abort()


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


# ----------------------------------------------------------------------------------- the reader
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
        self.attrs = {k: _plain(v) for k, v in file.attrs.items()}
        self.n_samples = int(file["samples/id"].shape[0])
        self.sample_ids = file["samples/id"][()]
        self.labels = file["samples/label"][()] if "label" in file["samples"] else None
        self.splits = (file["samples/split"].asstr()[()] if "split" in file["samples"] else None)
        self.conditions = {
            name: {k: _plain(v) for k, v in group.attrs.items()}
            for name, group in file["conditions"].items()
        }
        self.models = {}
        groups = sorted(file["models"].items(), key=lambda item: item[1].attrs.get("role") != "teacher")
        for name, group in groups:  # the teacher first, then the file's order
            attrs = {k: _plain(v) for k, v in group.attrs.items()}
            self.models[name] = ModelInfo(
                name=name, role=attrs.pop("role"), architecture=str(attrs.pop("architecture")),
                n_params=int(attrs.pop("n_params")), attrs=attrs,
            )

    def layers(self, model: str, condition: str) -> dict[str, LayerInfo]:
        """The layers stored for one model under one condition."""
        group = self._file["models"][model].get(condition)
        if group is None:
            return {}
        return {name: _layer_info(model, condition, name, ds) for name, ds in group.items()}

    def entries(self) -> Iterator[LayerInfo]:
        """Every stored dataset, in model, condition, layer order."""
        for model in self.models:
            for condition in self.conditions:
                yield from self.layers(model, condition).values()

    def _raw_reader(self, ds: h5py.Dataset, rows: int) -> "_RawChunks | None":
        """A direct reader of ``ds``'s chunks when its layout allows one, else None.

        Not with ``NUMBA_DISABLE_JIT=1``: the checksum kernel would run as Python, byte by byte.
        """
        from ._kernels import jit_enabled

        if self._raw_fd is None or not jit_enabled():
            return None
        return _RawChunks.open(self, ds, rows)

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
            rows = min(_BLOCK_MAX_ROWS, _BLOCK_FLOAT64_BYTES // max(row_bytes, 1))
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
                    f"cannot read samples {start}..{stop - 1} ({_first_line(err)}); the file is "
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


class _RawChunks:
    """Reads a dataset's chunks straight from the file, verifying fletcher32 in numba.

    Used when the dataset is chunked along samples only, stored little-endian, filtered by
    fletcher32 alone (or nothing), every chunk written with its filter applied, and blocks are
    whole chunks. Each chunk's bytes go by ``preadv`` directly into the caller's block (the edge
    chunk through a scratch buffer) and its checksum is verified with HDF5's exact algorithm,
    accepting the byte-swapped variant HDF5 itself accepts from files of before 1.6.3. This
    skips HDF5's filter pipeline, which copies every chunk twice and checksums at a quarter of
    the speed (docs/performance.md). Anything else reads through h5py.
    """

    def __init__(self, store: "Store", ds: h5py.Dataset, chunk_rows: int, row_bytes: int,
                 verify: bool, chunks: dict[int, tuple[int, int]]):
        self.fd = store._raw_fd
        self.store = store
        self.n = ds.shape[0]
        self.chunk_rows = chunk_rows
        self.row_bytes = row_bytes
        self.verify = verify
        self.chunks = chunks
        self.scratch = np.empty(chunk_rows * row_bytes + 4, dtype=np.uint8)
        self.tail = np.empty(4, dtype=np.uint8)

    @classmethod
    def open(cls, store: "Store", ds: h5py.Dataset, rows: int) -> "_RawChunks | None":
        import sys

        if ds.chunks is None or tuple(ds.chunks[1:]) != tuple(ds.shape[1:]):
            return None
        chunk_rows = ds.chunks[0]
        if rows % chunk_rows or sys.byteorder != "little" or ds.dtype.byteorder == ">":
            return None
        plist = ds.id.get_create_plist()
        filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
        if filters not in ([], [h5py.h5z.FILTER_FLETCHER32]):
            return None
        row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:]))
        expected = chunk_rows * row_bytes + (4 if filters else 0)
        chunks = {}
        for i in range(ds.id.get_num_chunks()):
            info = ds.id.get_chunk_info(i)
            if info.filter_mask != 0 or info.size != expected:
                return None
            chunks[info.chunk_offset[0]] = (info.byte_offset, info.size)
        if len(chunks) != -(-ds.shape[0] // chunk_rows):
            return None  # unwritten chunks: let HDF5 supply the fill value
        return cls(store, ds, chunk_rows, row_bytes, bool(filters), chunks)

    def read(self, start: int, stop: int, block: np.ndarray, where: str) -> None:
        from ._kernels import fletcher32

        flat = block.reshape(-1).view(np.uint8)
        for row0 in range(start, stop, self.chunk_rows):
            offset, size = self.chunks[row0]
            rows_here = min(self.chunk_rows, self.n - row0)
            data_bytes = self.chunk_rows * self.row_bytes
            if rows_here == self.chunk_rows:
                lo = (row0 - start) * self.row_bytes
                target = flat[lo:lo + data_bytes]
                parts = [target, self.tail] if self.verify else [target]
            else:
                target = self.scratch[:data_bytes]
                parts = [self.scratch[:size]]
            got = os.preadv(self.fd, parts, offset)
            if got != size:
                raise StoreError(self.store.path, where, f"chunk at samples {row0}.. is cut short "
                                 f"({got} of {size} bytes); the file is truncated")
            if self.verify:
                stored = (self.tail if rows_here == self.chunk_rows
                          else self.scratch[data_bytes:data_bytes + 4])
                value = int.from_bytes(bytes(stored), "little")
                computed = fletcher32(target)
                swapped = ((computed & 0x00FF00FF) << 8) | ((computed >> 8) & 0x00FF00FF)
                if value not in (computed, swapped):
                    raise StoreError(self.store.path, where, f"cannot read samples {row0}.."
                                     f"{row0 + rows_here - 1} (fletcher32 checksum mismatch); "
                                     "the file is damaged: re-extract or restore it")
            if rows_here != self.chunk_rows:
                lo = (row0 - start) * self.row_bytes
                flat[lo:lo + rows_here * self.row_bytes] = target[:rows_here * self.row_bytes]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _layer_info(model: str, condition: str, layer: str, ds: h5py.Dataset) -> LayerInfo:
    grid = tuple(int(g) for g in ds.attrs["grid"]) if "grid" in ds.attrs else None
    prefix = int(ds.attrs["num_prefix_tokens"]) if "num_prefix_tokens" in ds.attrs else None
    return LayerInfo(model, condition, layer, str(_plain(ds.attrs.get("kind", ""))), ds.shape,
                     ds.dtype, ds.chunks, grid, prefix)


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
        reason = _first_line(err)
        hint = ("the file is truncated: the writer was interrupted or the copy is incomplete"
                if "truncated" in reason else "the file is not HDF5 or is damaged")
        raise StoreError(path, None, f"cannot open as HDF5 ({reason}); {hint}") from None
    try:
        _validate_structure(path, file, allow_incomplete)
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


def nonfinite_message(n_nan: int, n_inf: int, sample: int, sample_id: int,
                      feature: tuple[int, ...]) -> str:
    """The one-line description of NaN/Inf values in a layer."""
    at = ", ".join(str(i) for i in feature)
    return (f"{n_nan + n_inf} non-finite values ({n_nan} NaN, {n_inf} infinite), first at sample "
            f"{sample} (id {sample_id}), feature index ({at}); the producer wrote invalid "
            "activations: fix it or drop those samples")


def _validate_structure(path: Path, f: h5py.File, allow_incomplete: bool) -> None:
    def fail(where: str | None, problem: str) -> None:
        raise StoreError(path, where, problem)

    fmt = _plain(f.attrs.get("format"))
    if fmt != FORMAT:
        fail("/", f"not a distillscope store (root attribute 'format' is {fmt!r}, expected "
                  f"{FORMAT!r}); write stores with extract or distillscope.StoreWriter")
    version = _plain(f.attrs.get("format_version"))
    if version != FORMAT_VERSION:
        fail("/", f"format_version {version!r} is not supported (this distillscope "
                  f"{__version__} reads version {FORMAT_VERSION}); use a matching distillscope")
    if not allow_incomplete and not bool(_plain(f.attrs.get("complete", False))):
        fail("/", "the store is incomplete (complete=False): its writer did not finish; rerun "
                  "the extraction, or pass allow_incomplete=True (--allow-incomplete) to read it")
    for group in ("samples", "conditions", "models"):
        if not isinstance(f.get(group), h5py.Group):
            fail(f"/{group}", "required group is missing; the store was not written by a "
                              "format-1 writer")
    ids = f["samples"].get("id")
    if not isinstance(ids, h5py.Dataset) or ids.ndim != 1 or ids.dtype.kind not in "iu":
        fail("/samples/id", "must be a 1-D integer dataset of sample ids")
    n = ids.shape[0]
    if n == 0:
        fail("/samples/id", "the store holds no samples")
    id_values = ids[()]
    increasing = bool(np.all(id_values[1:] > id_values[:-1]))  # O(n); the usual case
    if not increasing and np.unique(id_values).size != n:
        fail("/samples/id", "sample ids are not unique")
    for name in ("label", "split"):
        ds = f["samples"].get(name)
        if ds is not None and ds.shape != (n,):
            fail(f"/samples/{name}", f"has shape {ds.shape}; expected ({n},) like /samples/id")
    conditions = f["conditions"]
    if not len(conditions):
        fail("/conditions", "no condition is declared")
    for name, group in conditions.items():
        if "kind" not in group.attrs:
            fail(f"/conditions/{name}", "attribute 'kind' is missing")
    models = f["models"]
    if not len(models):
        fail("/models", "no model is stored")
    for name, group in models.items():
        where = f"/models/{name}"
        role = _plain(group.attrs.get("role"))
        if role not in ROLES:
            fail(where, f"attribute 'role' is {role!r}; expected 'teacher' or 'student'")
        for key in ("architecture", "n_params"):
            if key not in group.attrs:
                fail(where, f"attribute {key!r} is missing")
        for condition, sub in group.items():
            if condition not in conditions:
                fail(f"{where}/{condition}", f"condition {condition!r} is not declared under "
                                             "/conditions")
            for layer, ds in sub.items():
                _validate_layer(path, f"{where}/{condition}/{layer}", ds, n)


def _validate_layer(path: Path, where: str, ds: h5py.Dataset, n: int) -> None:
    def fail(problem: str) -> None:
        raise StoreError(path, where, problem)

    if not isinstance(ds, h5py.Dataset):
        fail("expected a dataset of activations, found a group")
    if ds.dtype not in FLOAT_DTYPES:
        fail(f"dtype {ds.dtype} is not float16/32/64; store activations as floating point")
    if ds.shape[0] != n:
        fail(f"holds {ds.shape[0]} samples but /samples/id has {n}; every model must cover "
             "the same samples in the same order")
    kind = _plain(ds.attrs.get("kind"))
    if kind not in LAYER_KINDS:
        fail(f"attribute 'kind' is {kind!r}; expected one of {', '.join(LAYER_KINDS)}")
    if ds.ndim != LAYER_KINDS[kind]:
        fail(f"a {kind} layer must be {LAYER_KINDS[kind]}-D; got shape {ds.shape}")
    if kind == "tokens":
        if "grid" not in ds.attrs or "num_prefix_tokens" not in ds.attrs:
            fail("tokens need attributes 'grid' (h, w) and 'num_prefix_tokens'")
        h, w = (int(g) for g in ds.attrs["grid"])
        prefix = int(ds.attrs["num_prefix_tokens"])
        if prefix + h * w != ds.shape[1]:
            fail(f"{ds.shape[1]} tokens != {prefix} prefix + {h}x{w} grid")
