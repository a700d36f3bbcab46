"""The extraction run: plan, extract into crash-safe shards, assemble the store.

Crash safety and resumption
---------------------------
Activations go first to *shards* in ``<output>.work/``: one ``.npz`` per model, condition and
range of whole batches, written to a temporary name, fsynced and renamed, so a shard under its
final name is always whole (a killed h5py writer, by contrast, leaves an unreadable file unless
flushed, and ``flush`` does not fsync). A shard is cut every ``checkpoint_seconds`` (30 s by
default), so a kill, SIGKILL included, loses at most that much work. When every shard exists the
store is assembled through ``distillscope.StoreWriter``, which writes ``<output>.partial`` and
renames it into place only once complete and synced. Rerunning the same command checks that the
plan (configuration text, batch size, data, layer shapes) is unchanged, skips the shards that
exist and continues. Batches always start at multiples of the batch size and every corrupted
image is seeded by (seed, condition, sample id), so a resumed store holds exactly the features of
an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillscope import OutputError
from distillscope.outputs import OutputLock, check_output_path, check_room, write_atomically
from distillscope.store import StoreWriter
from distillscope.store.shards import manifest_for, parse_shard, shard_name, write_manifest

from .conditions import Condition
from .config import Config, PreprocessSpec, load_config
from .data import ImageData, load_data
from .errors import ConfigError
from .models import LoadedModel, build_model, to_numpy
from .pipeline import build_batches, memory_format
from .preprocess import Preprocessing, resolve_preprocessing

__all__ = ["Plan", "extract", "plan_extraction"]

# a shard is also cut when the buffered activations reach this: the writer thread saves one set
# while the next fills (at most twice this held), and the last, which the run waits for, is small
_SHARD_MAX_BYTES = 64 << 20
PRODUCER = "distillscope-extract"


@dataclass
class Plan:
    """Everything an extraction will do, known before the first batch runs."""

    config: Config
    output: Path
    data: ImageData
    models: list[LoadedModel]
    preprocessing: dict[str, Preprocessing]
    layers: dict[str, dict[str, dict[str, Any]]]  # model -> layer -> shape, kind, grid, ...
    device: str
    batch_size: int
    amp: bool
    workers: int = 0
    #: ``(index, count)`` and the manifest of an extraction in shards (``--shard I/N``)
    shard: tuple[int, int] | None = None
    manifest: dict[str, Any] | None = None
    channels_last: bool = False
    fuse_batchnorm: bool = False

    @property
    def work(self) -> Path:
        return self.output.with_name(self.output.name + ".work")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.config.run.dtype)

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between an interrupted run and its resumption."""
        return {
            "config_sha256": self.config.sha256,
            "batch_size": self.batch_size,
            "dtype": self.config.run.dtype,
            "sample_ids_sha256": hashlib.sha256(self.data.ids.tobytes()).hexdigest(),
            "models": {m.spec.name: m.weights["state_sha256"] for m in self.models},
            "layers": self.layers,
            # both change the features within float rounding: a resumed store keeps one
            "mixed_precision": self.amp, "channels_last": self.channels_last,
            "fuse_batchnorm": self.fuse_batchnorm,
        }

    def n_bytes(self) -> int:
        per_sample = sum(int(np.prod(v["shape"])) * len(v["conditions"])
                         for layers in self.layers.values() for v in layers.values())
        return per_sample * len(self.data) * self.dtype.itemsize

    def layers_of(self, model: str, condition: str) -> dict[str, dict[str, Any]]:
        """The layers of ``model`` stored under ``condition``."""
        return {k: v for k, v in self.layers[model].items() if condition in v["conditions"]}

    def describe(self) -> str:
        cfg, data = self.config, self.data
        splits = ", ".join(f"{c} {s}" for s, c in zip(*np.unique(data.splits, return_counts=True)))
        lines = [
            f"extract {cfg.path} -> {self.output}",
            f"  data: {data.source}, {len(data)} samples ({splits})"
            + (f", {len(np.unique(data.labels))} labels" if data.labels is not None else ""),
            f"  device {self.device}, batch {self.batch_size}, {cfg.run.dtype}, "
            f"{self.workers} input threads"
            + (", mixed precision" if self.amp else "")
            + (", channels-last" if self.channels_last else "")
            + (", batch norms folded" if self.fuse_batchnorm else "") + f", seed {cfg.run.seed}",
            f"  conditions ({len(cfg.conditions)}):",
        ]
        for c in cfg.conditions:
            params = ", ".join(f"{k}={v}" for k, v in c.params.items() if k != "band_edges")
            lines.append(f"    {c.name:<20} {c.kind}" + (f" ({params})" if params else ""))
        lines.append(f"  models ({len(self.models)}):")
        for m in self.models:
            p = self.preprocessing[m.spec.name]
            size = "source size" if p.size is None else f"{p.size[0]}x{p.size[1]}"
            lines.append(f"    {m.spec.name:<20} {m.spec.role:<8} {m.architecture}  "
                         f"{m.n_params:,} params  {m.weights['weights']}  input {size} "
                         f"({p.interpolation})")
            for layer, info in self.layers[m.spec.name].items():
                extra = (f" grid {info['grid'][0]}x{info['grid'][1]} + {info['num_prefix_tokens']} prefix"
                         if info["kind"] == "tokens" else "")
                if len(info["conditions"]) < len(cfg.conditions):
                    extra += f" [{', '.join(info['conditions'])}]"
                lines.append(f"      {layer:<24} {info['kind']:<9} {tuple(info['shape'])}{extra}")
        lines.append(f"  store: {len(self.models)} models x {len(cfg.conditions)} conditions x "
                     f"{len(data)} samples = {self.n_bytes() / 2**20:.1f} MiB "
                     f"(the work folder holds as much again until the store is assembled)")
        return "\n".join(lines)


def _device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but torch sees no CUDA device; use --device cpu")
    return requested


def _where(config: Config, i: int) -> str:
    return f"{config.path} [[models]] #{i + 1} ({config.models[i].name})"


def _output_path(config: Config, output: str | os.PathLike[str] | None) -> Path:
    return Path(output if output is not None else config.run.output or f"{config.path.stem}.h5")


def plan_extraction(config: Config | str | os.PathLike[str], *, output: str | os.PathLike[str] | None = None,
                    device: str | None = None, batch_size: int | None = None,
                    amp: bool | None = None, workers: int | None = None,
                    allow_code: bool = False, shard: tuple[int, int] | None = None,
                    channels_last: bool | None = None,
                    fuse_batchnorm: bool | None = None) -> Plan:
    """Check the configuration, data, models and layers; measure every layer's shape.
    ``allow_code`` lets the configuration name factories outside distillscope; ``shard``
    ``(I, N)`` keeps slice ``I`` of ``N`` of the samples (``distillscope.store.shards``)."""
    if not isinstance(config, Config):
        config = load_config(config)
    run = config.run
    out = _output_path(config, output)
    device = _device(device or run.device)
    amp = run.amp if amp is None else amp
    if amp and device != "cuda":
        raise ConfigError("mixed precision (amp) runs on CUDA only; drop --amp or use --device cuda")
    batch_size = batch_size or run.batch_size
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1; got {batch_size}")
    data = load_data(config.data)
    manifest = None
    if shard is not None:  # whole batches: the shard runs the batches an unsharded run would
        manifest = manifest_for(shard[1], config.sha256, data.ids, batch_size)
        data = data.slice(*manifest["bounds"][shard[0]:shard[0] + 2])
    models = [build_model(spec, seed=run.seed, where=_where(config, i), allow_code=allow_code)
              for i, spec in enumerate(config.models)]
    fuse_batchnorm = run.fuse_batchnorm if fuse_batchnorm is None else fuse_batchnorm
    if fuse_batchnorm:  # after the weights' digests: the store records the weights loaded
        for i, model in enumerate(models):
            model.fuse_batchnorm(_where(config, i))
    teacher = next((m for m in models if m.spec.role == "teacher"), models[0])
    shared = (resolve_preprocessing(config.preprocess, teacher.module)
              if any(m.spec.preprocess == "shared" for m in models) else None)
    preprocessing, layers = {}, {}
    probe = Condition(name="probe", kind="clean")  # shapes do not depend on the condition
    for i, model in enumerate(models):
        spec = model.spec
        prep = (resolve_preprocessing(PreprocessSpec(preset="model"), model.module)
                if spec.preprocess == "model" else shared)
        with torch.inference_mode():
            outs = model.forward(prep(data.images(0, 1), probe, data.ids[:1], run.seed))
        layers[spec.name] = {}
        for layer in spec.layers:
            shape = tuple(outs[layer.name].shape[1:])
            layers[spec.name][layer.name] = {
                "module": layer.module, "shape": list(shape),
                "conditions": list(layer.conditions or (c.name for c in config.conditions)),
                **model.layer_layout(layer, shape, _where(config, i))}
        preprocessing[spec.name] = prep
    workers = run.workers if workers is None else workers
    if workers is None:  # threads building inputs ahead: worth it when a GPU runs the models
        workers = min(8, max(1, (os.cpu_count() or 2) - 2)) if device == "cuda" else 0
    channels_last = run.channels_last if channels_last is None else channels_last
    return Plan(config, out, data, models, preprocessing, layers, device, batch_size, amp, workers,
                shard, manifest, channels_last, fuse_batchnorm)


# ------------------------------------------------------------------------------------ shards
def _atomic_write(path: Path, write) -> None:
    """Work files (shards, the plan) through the library's one atomic-write helper."""
    write_atomically(path, write, overwrite=True, what="work file")


def _shard_name(start: int, stop: int) -> str:
    return f"{start:010d}-{stop:010d}.npz"


def _shards(folder: Path) -> list[tuple[int, int, Path]]:
    """The whole shards of a folder that continue each other from sample 0, in order."""
    found = []
    for p in folder.glob("*.npz") if folder.is_dir() else []:
        with contextlib.suppress(ValueError):
            start, stop = (int(v) for v in p.stem.split("-"))
            found.append((start, stop, p))
    found.sort()
    chain, expected = [], 0
    for start, stop, p in found:
        if start != expected:
            break
        chain.append((start, stop, p))
        expected = stop
    return chain


class _Buffers:
    """The batches of every (model, condition) pair, each pair written as its own shard when
    due: every ``checkpoint_seconds``, or when all the buffered activations reach
    ``_SHARD_MAX_BYTES``, so memory is bounded whatever the number of pairs. A thread writes
    the shards (concatenate, save, fsync) while the models go on with the next batches; it
    finishes one set before it is handed the next, so at most twice the cap is held."""

    def __init__(self, work: Path, every_seconds: float):
        from concurrent.futures import ThreadPoolExecutor

        self.work = work
        self.every = every_seconds
        self.pairs: dict[tuple[str, str], tuple[int, int, dict[str, list[np.ndarray]]]] = {}
        self.nbytes = 0
        self.last = time.monotonic()
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="distillscope-shards")
        self.writing = None

    def add(self, pair: tuple[str, str], start: int, stop: int,
            arrays: dict[str, np.ndarray]) -> None:
        first, _, blocks = self.pairs.get(pair, (start, stop, {}))
        for name, a in arrays.items():
            blocks.setdefault(name, []).append(a)
            self.nbytes += a.nbytes
        self.pairs[pair] = (first, stop, blocks)

    def due(self) -> None:
        if time.monotonic() - self.last >= self.every or self.nbytes >= _SHARD_MAX_BYTES:
            self.flush()

    def flush(self, last: bool = False) -> None:
        """Hand the buffered batches to the writer thread once it wrote the previous ones (a
        failed write is raised here); ``last``: and wait for them too."""
        writing, self.writing = self.writing, None
        if writing is not None:
            writing.result()
        if self.pairs:
            self.writing = self.writer.submit(self._write, self.pairs)
        self.pairs, self.nbytes, self.last = {}, 0, time.monotonic()
        if last:
            self.flush()

    def _write(self, pairs: dict) -> None:
        for (model, condition), (start, stop, blocks) in pairs.items():
            arrays = {name: np.concatenate(parts) for name, parts in blocks.items()}
            _atomic_write(self.work / model / condition / _shard_name(start, stop),
                          lambda fh, arrays=arrays: np.savez(fh, **arrays))


# ------------------------------------------------------------------------------------ the run
def _prepare_work(plan: Plan) -> None:
    """Create the work folder, or check that the one there belongs to this very plan."""
    fingerprint = plan.fingerprint()
    state = plan.work / "plan.json"
    if state.is_file():
        previous = json.loads(state.read_text())
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise ConfigError(
                f"{plan.work}: an unfinished extraction with another {', '.join(changed)} is "
                f"here; rerun it with the same configuration and options, or delete {plan.work}")
        return
    plan.work.mkdir(parents=True, exist_ok=True)
    _atomic_write(state, lambda fh: fh.write(json.dumps(fingerprint, indent=1).encode()))


def _is_finished_store(path: Path, config_sha256: str) -> bool:
    """True when ``path`` is a complete store of this very configuration (a run killed
    between renaming the store and deleting its work folder)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            prov = json.loads(f.attrs.get("provenance", "{}"))
            return bool(f.attrs.get("complete")) and prov.get("config_sha256") == config_sha256
    except (OSError, ValueError):
        return False


def _progress(total: int, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="img",
                disable=None if enabled else True,  # None: a bar only on a terminal
                dynamic_ncols=True, leave=True, file=sys.stderr)


def _extract_shards(plan: Plan, *, progress: bool) -> None:
    """Every (model, condition) pair still missing, batch after batch: each batch is read
    once and each model input built once (``pipeline.py``), every model runs on it, and each
    pair's activations go to its own shards (a resumed pair starts where its shards stop)."""
    n, bs, cfg = len(plan.data), plan.batch_size, plan.config
    done: dict[tuple[str, str], int] = {}
    for model in plan.models:
        for c in cfg.conditions:
            if plan.layers_of(model.spec.name, c.name):
                folder = plan.work / model.spec.name / c.name
                folder.mkdir(parents=True, exist_ok=True)
                for stale in folder.glob(".*.tmp-*"):  # a killed run's unfinished shard
                    stale.unlink()
                done[model.spec.name, c.name] = (_shards(folder) or [(0, 0, None)])[-1][1]
    todo = [(m, c) for m in plan.models for c in cfg.conditions
            if done.get((m.spec.name, c.name), n) < n]
    layers = {(m.spec.name, c.name): list(plan.layers_of(m.spec.name, c.name)) for m, c in todo}
    if not todo:
        return

    def needs(start: int) -> tuple:
        pairs = {(plan.preprocessing[m.spec.name], c.name): c
                 for m, c in todo if done[m.spec.name, c.name] <= start}
        return tuple((prep, c) for (prep, _), c in pairs.items())

    first = min(done[m.spec.name, c.name] for m, c in todo)
    running = list({id(m): m for m, _ in todo}.values())
    fmt = memory_format(plan.channels_last)
    for model in running:
        model.module.to(plan.device, memory_format=fmt)
    autocast = (torch.autocast("cuda", dtype=torch.float16) if plan.amp
                else contextlib.nullcontext())
    buffers = _Buffers(plan.work, cfg.run.checkpoint_seconds)
    started = time.perf_counter()
    desc = f"{len(running)} models x {len({c.name for _, c in todo})} conditions"
    with _progress(n, first, desc, progress) as bar, contextlib.ExitStack() as finish:
        finish.callback(buffers.writer.shutdown)  # a failed run: its last shards still land
        for batch in build_batches(plan.data, range(first, n, bs), bs, needs, seed=cfg.run.seed,
                                   device=plan.device, workers=plan.workers,
                                   channels_last=plan.channels_last):
            for model, condition in todo:
                name = model.spec.name
                if done[name, condition.name] > batch.start:
                    continue
                x = batch.input(plan.preprocessing[name], condition)
                with torch.inference_mode(), autocast:
                    outs = model.forward(x)
                buffers.add((name, condition.name), batch.start, batch.stop,
                            {k: to_numpy(outs[k], plan.dtype) for k in layers[name, condition.name]})
            buffers.due()
            bar.update(batch.stop - batch.start)
        buffers.flush(last=True)
    for model in running:
        model.module.to("cpu", memory_format=torch.contiguous_format)
    if progress and not sys.stderr.isatty():  # in a log: one line, no bars
        print(f"extracted {desc} x {n - first} images in {time.perf_counter() - started:.1f} s",
              file=sys.stderr, flush=True)


def _provenance(plan: Plan) -> dict[str, Any]:
    import timm

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "timm": timm.__version__, "numpy": np.__version__}
    with contextlib.suppress(ImportError):
        import torchvision

        versions["torchvision"] = torchvision.__version__
    out = {"config_sha256": plan.config.sha256, "config_file": str(plan.config.path),
           "versions": versions, "device": plan.device, "batch_size": plan.batch_size,
           "mixed_precision": plan.amp, "channels_last": plan.channels_last,
           "fuse_batchnorm": plan.fuse_batchnorm,
           "seed": plan.config.run.seed,
           "data": {"source": plan.data.source, **plan.data.provenance}}
    if plan.shard is not None:
        index, count = plan.shard
        start, stop = plan.manifest["bounds"][index:index + 2]
        out["shard"] = {"index": index, "count": count, "start": start, "stop": stop}
    return out


def _assemble(plan: Plan, *, overwrite: bool) -> Path:
    cfg, data = plan.config, plan.data
    with StoreWriter(plan.output, data.ids, labels=data.labels, splits=data.splits,
                     config=cfg.text, producer=PRODUCER, overwrite=overwrite,
                     compression=cfg.run.compression, provenance=_provenance(plan)) as w:
        for c in cfg.conditions:
            w.add_condition(c.name, c.kind, seed=cfg.run.seed, **c.params)
        for model in plan.models:
            name = model.spec.name
            w.add_model(name, role=model.spec.role, architecture=model.architecture,
                        n_params=model.n_params,
                        preprocessing=plan.preprocessing[name].to_dict(), **model.attrs())
            for c in cfg.conditions:
                chain = _shards(plan.work / name / c.name)
                writers = {}
                for layer, info in plan.layers_of(name, c.name).items():
                    extra = {k: v for k, v in info.items() if k not in ("shape", "kind", "conditions")}
                    grid = extra.pop("grid", None)
                    prefix = extra.pop("num_prefix_tokens", None)
                    writers[layer] = w.create_layer(name, c.name, layer, tuple(info["shape"]),
                                                    dtype=plan.dtype, kind=info["kind"],
                                                    grid=grid, num_prefix_tokens=prefix, **extra)
                for _start, _stop, path in chain:
                    with np.load(path, allow_pickle=False) as shard:
                        for layer, writer in writers.items():
                            writer.append(shard[layer])
    return plan.output


def _files_read(config) -> list[Path | None]:
    """Every file the extraction reads: the store must never be written over one of them."""
    return [config.path, config.data.root, *(m.weights for m in config.models)]


def extract(config: str | os.PathLike[str], *, output: str | os.PathLike[str] | None = None,
            overwrite: bool = False, device: str | None = None, batch_size: int | None = None,
            amp: bool | None = None, workers: int | None = None, dry_run: bool = False,
            progress: bool = True, allow_code: bool = False,
            shard: str | tuple[int, int] | None = None, channels_last: bool | None = None,
            fuse_batchnorm: bool | None = None, log=print) -> Path | Plan:
    """Run an extraction (or resume an interrupted one) and return the store's path.

    Parameters
    ----------
    config : path-like
        TOML configuration (``extract/README.md``).
    output : path-like, optional
        The store to write; default ``[run] output``, else ``<config name>.h5`` in the current
        folder.
    overwrite : bool
        Replace an existing store (only once the new one is complete).
    device, batch_size, amp, workers, channels_last, fuse_batchnorm :
        Override ``[run]``. A resumed run must use the batch size, mixed precision, memory
        layout and folding it started with; the number of input threads never changes the
        features.
    dry_run : bool
        Print the plan (models, layers and shapes, conditions, store size) and return it;
        nothing is written.
    allow_code : bool
        Run model factories that are not distillscope's own (``factory = "file.py:function"``
        or another package's module): a configuration is data unless you say otherwise.
    shard : "I/N" or (I, N), optional
        Extract slice ``I`` (0-based) of ``N`` of the samples, on whole batches, into
        ``output/shard-0000I-of-0000N.h5`` (``output`` is then the folder of the shards,
        default ``<config name>.shards``) with the folder's ``manifest.json``; each shard
        resumes on its own, and ``open_store(output)`` reads them all as one store
        (``distillscope.store.shards``, ``docs/scaling.md``).
    """
    config = load_config(config)
    if shard is not None:
        shard = parse_shard(shard) if isinstance(shard, str) else parse_shard("%d/%d" % shard)
        folder = Path(output if output is not None else f"{config.path.stem}.shards")
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{folder}: with --shard, -o names the folder of the shards; "
                              "this is a file")
        output = folder / shard_name(*shard)
    out = _output_path(config, output)
    if not dry_run:
        if shard is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
        work = out.with_name(out.name + ".work")
        if work.is_dir() and out.exists() and _is_finished_store(out, config.sha256):
            shutil.rmtree(work)
            log(f"{out} is already complete (removed the leftover {work})")
            return out
        check_output_path(out, overwrite=overwrite, what="store", inputs=_files_read(config))
    plan = plan_extraction(config, output=out, device=device, batch_size=batch_size, amp=amp,
                           workers=workers, allow_code=allow_code, shard=shard,
                           channels_last=channels_last, fuse_batchnorm=fuse_batchnorm)
    if dry_run:
        log(plan.describe())
        log("dry run: nothing written")
        return plan
    if plan.manifest is not None:
        write_manifest(out.parent, plan.manifest)
    with OutputLock(plan.output, "store"):  # one extraction per output at a time
        check_room(plan.output, 2 * plan.n_bytes(), "extraction (work shards, then the store)")
        try:
            _prepare_work(plan)
        except PermissionError as err:
            raise OutputError(f"{plan.work}: cannot write the work folder ({err.strerror})") \
                from None
        started = time.perf_counter()
        _extract_shards(plan, progress=progress)
        _assemble(plan, overwrite=overwrite)
        shutil.rmtree(plan.work)
    log(f"wrote {plan.output} ({plan.n_bytes() / 2**20:.1f} MiB, "
        f"{time.perf_counter() - started:.1f} s)")
    return plan.output
