"""Writing a feature store: ``StoreWriter`` (``docs/store-format.md``).

A store is written to ``<name>.partial`` and renamed into place only after ``complete`` is set
and the file is flushed and synced, so a store under its final name is always whole.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._errors import InputError, OutputError
from .._version import __version__
from ..outputs import OutputLock, check_output_path, check_room, partial_name, publish
from .schema import (ATTRIBUTES, CHUNK_BYTES, CONDITION, FORMAT, FORMAT_VERSION, MODEL, ROLES,
                     WRITE_BYTES, attr_value, check_float_dtype, check_name, first_line,
                     layer_kind)

__all__ = ["StoreWriter", "LayerWriter"]

# ----------------------------------------------------------------------------------- the writer
#: room kept for HDF5's own structures and its unflushed chunks when checking the disk, and
#: the bytes written between flushes (one flush per append cost 2.3x on 384 KiB appends)
METADATA_BYTES = 2 << 20
FLUSH_BYTES = 1 << 20


class LayerWriter:
    """Writes one layer's activations in blocks of samples (returned by ``StoreWriter.create_layer``)."""

    def __init__(self, dataset: h5py.Dataset, where: str, room=lambda more: None):
        self._ds = dataset
        self._where = where
        self._room = room  # raises OutputError when ``more`` bytes would not fit
        self._unflushed = 0
        self.rows_written = 0
        # fixed at creation; kept, as the room check sums them over every layer at each append
        self.n_samples = dataset.shape[0]
        self.row_bytes = dataset.dtype.itemsize * int(np.prod(dataset.shape[1:]))

    def append(self, block) -> None:
        """Write the next ``len(block)`` samples (any array-like, e.g. ``tensor.numpy()``)."""
        block = np.asarray(block)
        check_float_dtype(block.dtype, self._where)
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
        self._room(block.shape[0] * self.row_bytes)  # HDF5 never gets a write that cannot fit
        try:
            self._ds[self.rows_written:stop] = block
            self._unflushed += block.shape[0] * self.row_bytes
            if self._unflushed >= FLUSH_BYTES:  # little waits in HDF5's caches: the checks
                self._ds.file.flush()           # see (nearly) all that is written
                self._unflushed = 0
        except OSError as err:  # a disk that filled up all the same
            raise OutputError(f"{self._where}: cannot write samples {self.rows_written}.."
                              f"{stop - 1} ({first_line(err)}); free space or choose another "
                              "output path") from None
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
    >>> from distillscope import open_store
    >>> open_store(path).layers("teacher", "clean")["embedding"].shape
    (100, 8)
    """

    def __init__(self, path: str | os.PathLike[str], sample_ids, *, labels=None, splits=None,
                 config: str | Mapping[str, Any] | None = None, producer: str = "distillscope",
                 overwrite: bool = False, compression: str | None = None,
                 provenance: Mapping[str, Any] | None = None):
        self.path = Path(path)
        check_output_path(self.path, overwrite=overwrite, what="store")
        self._overwrite = overwrite
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
        self._partial = partial_name(self.path)
        self._layers: dict[str, LayerWriter] = {}
        self._lock = OutputLock(self.path, "store")  # until close or abort
        try:
            check_room(self.path, METADATA_BYTES + ids.size * 24, "store")  # ids, labels, split
            self._file = h5py.File(self._partial, "w", track_order=True)
        except OutputError:
            self._lock.release()
            raise
        except OSError as err:
            self._lock.release()
            raise OutputError(f"{self._partial}: cannot create the store ({first_line(err)}); "
                              "choose another output path") from None
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
        values = _checked(CONDITION, f"condition {name!r}", {"kind": kind, **params})
        group = self._file["conditions"].create_group(check_name("condition", name),
                                                      track_order=True)
        for key, value in values.items():
            group.attrs[key] = attr_value(value)

    def add_model(self, name: str, *, role: str, architecture: str, n_params: int = -1,
                  **attrs: Any) -> None:
        """Declare a model. ``attrs`` may hold ``family`` and ``seed`` (seeds of one student)."""
        if role not in ROLES:
            raise InputError(f"model {name!r}: role must be 'teacher' or 'student'; got {role!r}")
        if role == "teacher" and any(
            g.attrs.get("role") == "teacher" for g in self._file["models"].values()
        ):
            raise InputError(f"model {name!r}: the store already has a teacher")
        values = _checked(MODEL, f"model {name!r}", {"role": role, "architecture": architecture,
                                                     "n_params": n_params, **attrs})
        group = self._file["models"].create_group(check_name("model", name), track_order=True)
        for key, value in values.items():
            group.attrs[key] = attr_value(value)

    def create_layer(self, model: str, condition: str, layer: str, sample_shape: tuple[int, ...],
                     *, dtype="float32", kind: str | None = None,
                     grid: tuple[int, int] | None = None, num_prefix_tokens: int | None = None,
                     **attrs: Any) -> LayerWriter:
        """Create an empty layer dataset to be filled in sample order with ``append``."""
        where = f"/models/{model}/{condition}/{check_name('layer', layer)}"
        if model not in self._file["models"]:
            raise InputError(f"{where}: add_model({model!r}, ...) first")
        if condition not in self._file["conditions"]:
            raise InputError(f"{where}: add_condition({condition!r}, ...) first")
        dtype = np.dtype(dtype).newbyteorder("=")  # stores are written native
        check_float_dtype(dtype, where)
        sample_shape = tuple(int(s) for s in sample_shape)
        if any(s < 1 for s in sample_shape):
            raise InputError(f"{self.path}:{where}: per-sample shape {sample_shape} holds no "
                             "features; store at least one feature per sample")
        if kind is None and grid is not None:
            kind = "tokens"
        kind = layer_kind(1 + len(sample_shape), kind, where)
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
        rows = max(1, min(self.n_samples, CHUNK_BYTES // max(row_bytes, 1)))
        if self._compression is None:  # room for this layer and what the others still need
            self._check_room(self.n_samples * row_bytes + sum(
                (w.n_samples - w.rows_written) * w.row_bytes for w in self._layers.values()))
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
            ds.attrs[key] = attr_value(value)
        writer = LayerWriter(ds, f"{self._partial}:{where}", self._check_room)
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
        step = max(1, WRITE_BYTES // max(data[:1].nbytes, 1))
        for start in range(0, self.n_samples, step):
            writer.append(data[start:start + step])

    def _check_room(self, more: int) -> None:
        """Refuse ``more`` bytes (and room for HDF5's own) that the disk or ``ulimit -f`` cannot
        take, before HDF5 is asked to write them: after a failed write HDF5 cannot close the
        file cleanly (HDF5 2.0 crashes at exit), so the writer never lets one happen."""
        written = sum(w.rows_written * w.row_bytes for w in self._layers.values())
        size_now = max(written, self._partial.stat().st_size)
        check_room(self.path, more + METADATA_BYTES, "store", size_now=size_now)

    # -- finishing ---------------------------------------------------------------------------
    def close(self) -> Path:
        """Check every layer is full, mark the store complete, sync it and move it into place."""
        for where, writer in self._layers.items():
            if writer.rows_written != writer.n_samples:
                raise InputError(
                    f"{where}: only {writer.rows_written} of {writer.n_samples} samples written"
                )
        try:
            self._file.attrs["complete"] = np.bool_(True)
            self._file.flush()
            self._file.close()
        except OSError as err:
            raise OutputError(f"{self._partial}: cannot finish the store ({first_line(err)}); "
                              "free space or choose another output path") from None
        try:
            return publish(self._partial, self.path, overwrite=self._overwrite, what="store")
        finally:
            self._lock.release()

    def abort(self) -> None:
        """Close and delete the partial file; nothing at ``path`` is touched."""
        try:
            self._file.close()
        except OSError:
            pass  # a full disk: the partial file is deleted all the same
        finally:
            self._partial.unlink(missing_ok=True)
            self._lock.release()

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


def _checked(where: str, what: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes to write, checked against the format's declarations
    (``store.schema.ATTRIBUTES``: a store this writer finishes passes validation); a declared
    attribute given as None is left out (unknown)."""
    declared = {rule.name: rule for rule in ATTRIBUTES if rule.where == where}
    out = {}
    for key, value in values.items():
        rule = declared.get(key)
        if rule is not None:
            if value is None:
                continue
            problem = rule.problem(np.asarray(value) if isinstance(value, (list, tuple))
                                   else value)
            if problem:
                raise InputError(f"{what}: {problem}")
        out[key] = value
    return out
