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

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._errors import InputError, StoreError
from .._version import __version__
from ..metrics.moments import FLOAT_DTYPES

__all__ = ["FORMAT", "FORMAT_VERSION", "ROLES", "LAYER_KINDS", "ModelInfo", "LayerInfo",
           "validate_structure", "nonfinite_message", "plain_attr", "first_line"]

FORMAT = "distillscope.store"
FORMAT_VERSION = 1
ROLES = ("teacher", "student")
LAYER_KINDS = {"embedding": 2, "map": 4, "tokens": 3}
CHUNK_BYTES = 1 << 20  # HDF5 chunk size target (h5py's guidance: 10 KiB to 1 MiB)
WRITE_BYTES = 16 << 20  # bytes per block copied into a new store
# Streamed blocks: as many rows as fit 128 MiB once converted to float64, at most 16384. BLAS
# syrk on a block of k rows runs faster the larger k is (docs/performance.md): 16384 rows cost
# 1.11-1.15x one call on the whole matrix at d = 768, 8192 rows 1.17x, 2048 rows 1.34x.
BLOCK_FLOAT64_BYTES = 128 << 20
BLOCK_MAX_ROWS = 16384


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
def check_name(what: str, name: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise InputError(
            f"{what} name must be a non-empty string without '/'; got {name!r}"
        )
    return name


def attr_value(value: Any) -> Any:
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


def plain_attr(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def check_float_dtype(array_dtype: np.dtype, where: str) -> None:
    if np.dtype(array_dtype) not in FLOAT_DTYPES:
        raise InputError(
            f"{where}: features must be float16, float32 or float64; got {np.dtype(array_dtype)} "
            "(convert with .astype(np.float32); integer or complex activations are not features)"
        )


def layer_kind(ndim: int, kind: str | None, where: str) -> str:
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


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def layer_info(model: str, condition: str, layer: str, ds: h5py.Dataset) -> LayerInfo:
    grid = tuple(int(g) for g in ds.attrs["grid"]) if "grid" in ds.attrs else None
    prefix = int(ds.attrs["num_prefix_tokens"]) if "num_prefix_tokens" in ds.attrs else None
    return LayerInfo(model, condition, layer, str(plain_attr(ds.attrs.get("kind", ""))), ds.shape,
                     ds.dtype.newbyteorder("="), ds.chunks, grid, prefix)


def nonfinite_message(n_nan: int, n_inf: int, sample: int, sample_id: int,
                      feature: tuple[int, ...]) -> str:
    """The one-line description of NaN/Inf values in a layer."""
    at = ", ".join(str(i) for i in feature)
    return (f"{n_nan + n_inf} non-finite values ({n_nan} NaN, {n_inf} infinite), first at sample "
            f"{sample} (id {sample_id}), feature index ({at}); the producer wrote invalid "
            "activations: fix it or drop those samples")


def validate_structure(path: Path, f: h5py.File, allow_incomplete: bool) -> None:
    def fail(where: str | None, problem: str) -> None:
        raise StoreError(path, where, problem)

    fmt = plain_attr(f.attrs.get("format"))
    if fmt != FORMAT:
        fail("/", f"not a distillscope store (root attribute 'format' is {fmt!r}, expected "
                  f"{FORMAT!r}); write stores with extract or distillscope.StoreWriter")
    version = plain_attr(f.attrs.get("format_version"))
    if version != FORMAT_VERSION:
        fail("/", f"format_version {version!r} is not supported (this distillscope "
                  f"{__version__} reads version {FORMAT_VERSION}); use a matching distillscope")
    if not allow_incomplete and not bool(plain_attr(f.attrs.get("complete", False))):
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
        role = plain_attr(group.attrs.get("role"))
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
    if ds.dtype.newbyteorder("=") not in FLOAT_DTYPES:  # any byte order: read as native
        fail(f"dtype {ds.dtype} is not float16/32/64; store activations as floating point")
    if ds.shape[0] != n:
        fail(f"holds {ds.shape[0]} samples but /samples/id has {n}; every model must cover "
             "the same samples in the same order")
    kind = plain_attr(ds.attrs.get("kind"))
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

