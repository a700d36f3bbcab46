"""The extraction configuration: a TOML file, checked strictly before anything runs.

Every table accepts a fixed set of keys; an unknown key is an error that lists the valid ones.
Relative paths inside the file (data roots, weights, factory files) are relative to the folder
of the configuration file. ``extract/README.md`` documents every key.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conditions import Condition, parse_condition, with_rng
from .counter import RNGS
from .errors import ConfigError

__all__ = ["Config", "DataSpec", "LayerSpec", "ModelSpec", "PreprocessSpec", "RunSpec",
           "load_config"]

DATA_SOURCES = ("cifar10", "cifar100", "imagefolder", "numpy", "digits")
PRESETS = ("clip", "model", "none")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")


@dataclass(frozen=True)
class RunSpec:
    seed: int = 0
    batch_size: int = 64
    dtype: str = "float16"
    device: str = "auto"
    amp: bool = False
    checkpoint_seconds: float = 30.0
    output: str | None = None
    compression: str | None = None
    workers: int | None = None  # threads building inputs ahead; None: 0 on CPU, up to 8 on CUDA
    channels_last: bool = False  # NHWC models and inputs: faster convolutions, rounding differs
    rng: str = "numpy"  # "counter": noise drawn on the batch's device (counter.py)
    fuse_batchnorm: bool = False  # fold eval-mode batch norms into the convolutions before them


@dataclass(frozen=True)
class DataSpec:
    source: str
    root: Path | None = None
    splits: tuple[str, ...] = ("train", "test")
    limit: int = 0
    per_class: int = 0  # image folders: the first k images (sorted) of each class; 0: all


@dataclass(frozen=True)
class PreprocessSpec:
    """Shared preprocessing: a preset and/or explicit values (explicit values win)."""

    preset: str = "model"
    size: tuple[int, int] | None = None
    resize: int | None = None
    interpolation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    quantize: bool | None = None


@dataclass(frozen=True)
class LayerSpec:
    name: str
    module: str
    grid: tuple[int, int] | None = None
    num_prefix_tokens: int | None = None
    conditions: tuple[str, ...] | None = None  # None: every condition
    #: "nchw": a 4-d output is a feature map (channels first); "nhwc": a channels-last grid
    #: (Swin's stages), stored as tokens, one per grid position, row by row
    layout: str = "nchw"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: str
    timm: str | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    weights: Path | None = None
    layers: tuple[LayerSpec, ...] = ()
    embedding: str = "output"
    preprocess: str = "shared"
    family: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    text: str
    run: RunSpec
    data: DataSpec
    preprocess: PreprocessSpec
    conditions: tuple[Condition, ...]
    models: tuple[ModelSpec, ...]

    @property
    def sha256(self) -> str:
        """Digest of the configuration text: a resumed run must use the very same file."""
        return hashlib.sha256(self.text.encode()).hexdigest()


def _check_keys(table: Any, valid: tuple[str, ...], where: str, required: tuple[str, ...] = ()
                ) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table; got {type(table).__name__}")
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")
    for key in required:
        if key not in table:
            raise ConfigError(f"{where}: missing key {key!r}")
    return table


def _typed(value: Any, kind: type | tuple[type, ...], where: str, what: str) -> Any:
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, float, (int, float)))
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: {what} must be {names}; got {value!r}")
    return value


def _choice(value: Any, choices: tuple[str, ...], where: str, what: str) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: {what} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _path(base: Path, value: Any, where: str, what: str) -> Path:
    p = Path(_typed(value, str, where, what)).expanduser()
    return p if p.is_absolute() else (base / p)


def _run(table: dict, where: str) -> RunSpec:
    valid = tuple(RunSpec.__dataclass_fields__)
    t = _check_keys(table, valid, where)
    spec = RunSpec(**t)
    _typed(spec.seed, int, where, "seed")
    if _typed(spec.batch_size, int, where, "batch_size") < 1:
        raise ConfigError(f"{where}: batch_size must be >= 1; got {spec.batch_size}")
    _choice(spec.dtype, ("float16", "float32"), where, "dtype")
    _choice(spec.device, ("auto", "cpu", "cuda"), where, "device")
    _typed(spec.amp, bool, where, "amp")
    _typed(spec.channels_last, bool, where, "channels_last")
    _choice(spec.rng, RNGS, where, "rng")
    _typed(spec.fuse_batchnorm, bool, where, "fuse_batchnorm")
    if _typed(spec.checkpoint_seconds, (int, float), where, "checkpoint_seconds") < 0:
        raise ConfigError(f"{where}: checkpoint_seconds must be >= 0")
    if spec.output is not None:
        _typed(spec.output, str, where, "output")
    if spec.compression is not None:
        _choice(spec.compression, ("gzip", "lzf"), where, "compression")
    if spec.workers is not None and _typed(spec.workers, int, where, "workers") < 0:
        raise ConfigError(f"{where}: workers must be >= 0 (0: build inputs in the main thread)")
    return spec


def _data(table: dict, base: Path, where: str) -> DataSpec:
    t = _check_keys(table, ("source", "root", "splits", "limit", "per_class"), where,
                    required=("source",))
    source = _choice(t["source"], DATA_SOURCES, where, "source")
    root = _path(base, t["root"], where, "root") if "root" in t else None
    if source in ("cifar10", "cifar100", "imagefolder", "numpy") and root is None:
        raise ConfigError(f"{where}: source {source!r} needs root = the local folder or file")
    splits = tuple(_typed(t.get("splits", ["train", "test"]), list, where, "splits"))
    if not splits or not all(isinstance(s, str) for s in splits):
        raise ConfigError(f"{where}: splits must be a non-empty list of names; got {splits!r}")
    limit = _typed(t.get("limit", 0), int, where, "limit")
    if limit < 0:
        raise ConfigError(f"{where}: limit must be >= 0 (0 = every sample)")
    per_class = _typed(t.get("per_class", 0), int, where, "per_class")
    if per_class < 0 or (per_class and source != "imagefolder"):
        raise ConfigError(f"{where}: per_class must be >= 0 (0 = every image), and is an "
                          f"imagefolder option; got {per_class} for source {source!r}")
    return DataSpec(source=source, root=root, splits=splits, limit=limit, per_class=per_class)


def _preprocess(table: dict, where: str) -> PreprocessSpec:
    valid = tuple(PreprocessSpec.__dataclass_fields__)
    t = dict(_check_keys(table, valid, where))
    _choice(t.get("preset", "model"), PRESETS, where, "preset")
    if "size" in t:
        size = t["size"]
        size = [size, size] if isinstance(size, int) else size
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
            raise ConfigError(f"{where}: size must be an integer or [height, width]; got {t['size']!r}")
        t["size"] = tuple(size)
    if "resize" in t and _typed(t["resize"], int, where, "resize") < 1:
        raise ConfigError(f"{where}: resize must be >= 1")
    if "interpolation" in t:
        _choice(t["interpolation"], INTERPOLATIONS, where, "interpolation")
    if "quantize" in t:
        _typed(t["quantize"], bool, where, "quantize")
    for key in ("mean", "std"):
        if key in t:
            v = t[key]
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
                raise ConfigError(f"{where}: {key} must be three numbers (R, G, B); got {v!r}")
            t[key] = tuple(float(x) for x in v)
    return PreprocessSpec(**t)


def _layer(value: Any, where: str) -> LayerSpec:
    if isinstance(value, str):
        return LayerSpec(name=value, module=value)
    t = _check_keys(value, ("name", "module", "grid", "num_prefix_tokens", "conditions",
                            "layout"), where, required=("module",))
    layout = t.get("layout", "nchw")
    if layout not in ("nchw", "nhwc"):
        raise ConfigError(f"{where}: layout must be 'nchw' (feature maps, channels first) or "
                          f"'nhwc' (channels-last grids such as Swin's stages); got {layout!r}")
    conditions = t.get("conditions")
    if conditions is not None and not (isinstance(conditions, list) and conditions
                                       and all(isinstance(c, str) for c in conditions)):
        raise ConfigError(f"{where}: conditions must be a non-empty list of condition names")
    grid = t.get("grid")
    if grid is not None and not (isinstance(grid, list) and len(grid) == 2
                                 and all(isinstance(g, int) and g > 0 for g in grid)):
        raise ConfigError(f"{where}: grid must be [height, width]; got {grid!r}")
    prefix = t.get("num_prefix_tokens")
    if (grid is None) != (prefix is None):
        raise ConfigError(f"{where}: give grid and num_prefix_tokens together")
    return LayerSpec(name=_typed(t.get("name", t["module"]), str, where, "name"),
                     module=_typed(t["module"], str, where, "module"),
                     grid=tuple(grid) if grid else None, num_prefix_tokens=prefix,
                     conditions=tuple(conditions) if conditions else None, layout=layout)


def _model(table: dict, base: Path, where: str) -> ModelSpec:
    valid = ("name", "role", "timm", "factory", "kwargs", "pretrained", "weights", "layers",
             "embedding", "preprocess", "family", "seed")
    t = _check_keys(table, valid, where, required=("name", "role"))
    name = _typed(t["name"], str, where, "name")
    where = f"{where} ({name})"
    if ("timm" in t) == ("factory" in t):
        raise ConfigError(f"{where}: give exactly one of timm = 'model name' or "
                          "factory = 'module:function' / 'file.py:function'")
    factory = t.get("factory")
    if factory is not None:
        target, sep, func = _typed(factory, str, where, "factory").rpartition(":")
        if not sep or not target or not func:
            raise ConfigError(f"{where}: factory must look like 'package.module:function' or "
                              f"'path/to/file.py:function'; got {factory!r}")
        if target.endswith(".py"):
            factory = f"{_path(base, target, where, 'factory')}:{func}"
    if t.get("pretrained") and "weights" in t:
        raise ConfigError(f"{where}: give pretrained = true or weights = 'file', not both")
    layers = t.get("layers", ["embedding"])
    _typed(layers, list, where, "layers")
    specs = tuple(_layer(v, f"{where} layers[{i}]") for i, v in enumerate(layers))
    names = [s.name for s in specs]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"{where}: layers must be distinct and non-empty; got {names}")
    seed = t.get("seed")
    return ModelSpec(
        name=name, role=_choice(t["role"], ("teacher", "student"), where, "role"),
        timm=_typed(t["timm"], str, where, "timm") if "timm" in t else None,
        factory=factory, kwargs=dict(_typed(t.get("kwargs", {}), dict, where, "kwargs")),
        pretrained=_typed(t.get("pretrained", False), bool, where, "pretrained"),
        weights=_path(base, t["weights"], where, "weights") if "weights" in t else None,
        layers=specs,
        embedding=_choice(t.get("embedding", "output"), ("output", "pre_logits"), where, "embedding"),
        preprocess=_choice(t.get("preprocess", "shared"), ("shared", "model"), where, "preprocess"),
        family=_typed(t["family"], str, where, "family") if "family" in t else None,
        seed=_typed(seed, int, where, "seed") if seed is not None else None,
    )


def load_config(path: str | Path, text: str | None = None) -> Config:
    """Read and check a configuration file (``text`` replaces the file's content if given)."""
    path = Path(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the configuration ({err.strerror})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    where = str(path)
    _check_keys(raw, ("run", "data", "preprocess", "conditions", "models"), where,
                required=("data", "models"))
    base = path.resolve().parent
    run = _run(raw.get("run", {}), f"{where} [run]")
    rng = run.rng
    conditions = raw.get("conditions", [{"name": "clean", "kind": "clean"}])
    models = raw["models"]
    for what, value in (("conditions", conditions), ("models", models)):
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: [[{what}]] must be a non-empty array of tables")
    config = Config(
        path=path, text=text,
        run=run,
        data=_data(raw["data"], base, f"{where} [data]"),
        preprocess=_preprocess(raw.get("preprocess", {}), f"{where} [preprocess]"),
        conditions=tuple(with_rng(parse_condition(c, f"{where} [[conditions]] #{i + 1}"), rng)
                         for i, c in enumerate(conditions)),
        models=tuple(_model(m, base, f"{where} [[models]] #{i + 1}") for i, m in enumerate(models)),
    )
    for what, names in (("condition", [c.name for c in config.conditions]),
                        ("model", [m.name for m in config.models])):
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"{where}: {what} name {sorted(dup)[0]!r} is used twice")
        bad = [n for n in names if not n or "/" in n]
        if bad:
            raise ConfigError(f"{where}: {what} name {bad[0]!r} must be non-empty without '/'")
    known = [c.name for c in config.conditions]
    for m in config.models:
        for layer in m.layers:
            unknown = [c for c in layer.conditions or () if c not in known]
            if unknown:
                raise ConfigError(f"{where}: model {m.name!r} layer {layer.name!r} names an unknown "
                                  f"condition {unknown[0]!r}; conditions: {', '.join(known)}")
    if sum(m.role == "teacher" for m in config.models) > 1:
        raise ConfigError(f"{where}: at most one model may have role = 'teacher'")
    return config
