"""The feature store, format version 1: write, read and validate. ``docs/store-format.md``.

The schema (every attribute and dataset with its type, shape rule and range) is declared once,
at the end of this module: ``ATTRIBUTES`` and ``DATASETS``; ``validate.validate_structure``
checks a file against them, ``StoreWriter`` checks what it writes against them, and the tables of
``docs/store-format.md`` are generated from them (``schema_markdown``).

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
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from .._errors import InputError
from ..metrics.moments import FLOAT_DTYPES

__all__ = ["FORMAT", "FORMAT_VERSION", "ROLES", "LAYER_KINDS", "ModelInfo", "LayerInfo",
           "nonfinite_message", "plain_attr", "first_line", "Attribute", "DatasetRule",
           "ATTRIBUTES", "DATASETS", "schema_markdown", "DOCS"]

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
    """Refuse anything but float16/32/64 (either byte order: stores are written native)."""
    dtype = np.dtype(array_dtype)
    if dtype.kind != "f" or dtype.newbyteorder("=") not in FLOAT_DTYPES:
        raise InputError(
            f"{where}: features must be float16, float32 or float64 (either byte order); got "
            f"{dtype} (convert with .astype(np.float32); integer or complex activations are "
            "not features)"
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


# ------------------------------------------------------------------- the declared schema
DOCS = "docs/store-format.md"
ROOT, CONDITION, MODEL, LAYER = ("/", "/conditions/<condition>", "/models/<model>",
                                 "/models/<model>/<condition>/<layer>")


# ------------------------------------------------------------------------------ value checks
def _describe(value: Any) -> str:
    if isinstance(value, (str, bytes, np.str_, np.bytes_)):
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return f"the string {text[:40]!r}"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} ({value.dtype})"
    if isinstance(value, (bool, np.bool_)):
        return f"the boolean {bool(value)}"
    if isinstance(value, np.generic):
        value = value.item()
    return f"the {type(value).__name__} {value!r}"


def is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_str(value: Any) -> bool:
    return isinstance(value, (str, bytes, np.str_, np.bytes_))


def _number(value: Any) -> float | None:
    """A finite real number, else None."""
    if is_int(value) or isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return None


TYPES: dict[str, Callable[[Any], bool]] = {
    "str": _is_str,
    "int": is_int,
    "number": lambda v: _number(v) is not None,
    "bool": lambda v: isinstance(v, (bool, np.bool_)),
    "int pair": lambda v: (isinstance(v, np.ndarray) and v.shape == (2,) and v.dtype.kind in "iu"),
}
TYPE_WORDS = {"str": "a string", "int": "an integer", "number": "a finite number",
              "bool": "a boolean (True/False)", "int pair": "two integers (h, w)"}


@dataclass(frozen=True)
class Attribute:
    """One attribute of the format: where it lives, its type, whether required, its range."""

    where: str
    name: str
    type: str
    required: bool
    rule: str = ""
    check: Callable[[Any], bool] | None = None  # the range: True when the value is valid

    def problem(self, value: Any) -> str | None:
        """None when ``value`` is valid, else what is wrong (one clause)."""
        if not TYPES[self.type](value):
            return (f"attribute {self.name!r} must be {TYPE_WORDS[self.type]}; got "
                    f"{_describe(value)}")
        if self.check is not None and not self.check(plain_attr(value)):
            return f"attribute {self.name!r} is {plain_attr(value)!r}; expected {self.rule}"
        return None


@dataclass(frozen=True)
class DatasetRule:
    """One dataset of the format (checked in code below; declared here for the docs)."""

    path: str
    dtype: str
    shape: str
    required: bool
    rule: str


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(ROOT, "format", "str", True, f"{FORMAT!r}", lambda v: v == FORMAT),
    Attribute(ROOT, "format_version", "int", True, f"{FORMAT_VERSION}",
              lambda v: v == FORMAT_VERSION),
    Attribute(ROOT, "complete", "bool", True, "True (the writer finished; --allow-incomplete "
              "reads a store whose writer did not)"),
    Attribute(ROOT, "n_samples", "int", False, "the length of /samples/id", lambda v: v >= 1),
    *(Attribute(ROOT, name, "str", False) for name in (
        "producer", "producer_version", "created", "config", "provenance", "numpy_version",
        "h5py_version", "hdf5_version")),
    Attribute(CONDITION, "kind", "str", True, "a non-empty name (clean, gaussian_noise, ...)",
              lambda v: bool(v.strip())),
    Attribute(CONDITION, "sigma", "number", False, ">= 0", lambda v: v >= 0),
    Attribute(CONDITION, "seed", "int", False),
    Attribute(CONDITION, "space", "str", False),
    Attribute(CONDITION, "band", "str", False),
    Attribute(MODEL, "role", "str", True, "'teacher' or 'student'; at most one teacher",
              lambda v: v in ROLES),
    Attribute(MODEL, "architecture", "str", True),
    Attribute(MODEL, "n_params", "int", True, ">= 0, or -1 when unknown", lambda v: v >= -1),
    Attribute(MODEL, "family", "str", False, "a non-empty name", lambda v: bool(v.strip())),
    Attribute(MODEL, "seed", "int", False, ">= -1 (-1: unknown)", lambda v: v >= -1),
    Attribute(LAYER, "kind", "str", True, " or ".join(repr(k) for k in LAYER_KINDS),
              lambda v: v in LAYER_KINDS),
    Attribute(LAYER, "grid", "int pair", False, "(h, w), both >= 1; required for tokens",
              lambda v: min(v) >= 1),
    Attribute(LAYER, "num_prefix_tokens", "int", False, ">= 0; required for tokens",
              lambda v: v >= 0),
)

DATASETS: tuple[DatasetRule, ...] = (
    DatasetRule("/samples/id", "integer", "(n,), n >= 1", True, "unique"),
    DatasetRule("/samples/label", "integer", "(n,)", False, "class labels"),
    DatasetRule("/samples/split", "string", "(n,)", False,
                "non-empty strings; probes use 'train' and 'test'"),
    DatasetRule(LAYER, "float16/32/64, either byte order", "(n, d) embedding, (n, c, h, w) map, "
                "(n, t, d) tokens; every size >= 1", True,
                "in this file; filters available; every chunk written; "
                "t = num_prefix_tokens + h w for tokens"),
)


def schema_markdown() -> str:
    """The schema as the tables of ``docs/store-format.md`` (section *Validation*)."""
    lines = ["| where | attribute | type | required | range |", "|---|---|---|---|---|"]
    for a in ATTRIBUTES:
        lines.append(f"| `{a.where}` | `{a.name}` | {a.type} | {'yes' if a.required else ''} | "
                     f"{a.rule} |")
    lines += ["", "| dataset | dtype | shape | required | rule |", "|---|---|---|---|---|"]
    for d in DATASETS:
        lines.append(f"| `{d.path}` | {d.dtype} | {d.shape} | {'yes' if d.required else ''} | "
                     f"{d.rule} |")
    return "\n".join(lines)
