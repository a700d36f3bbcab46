"""A store extracted in shards, read as one: a folder of shard stores and their manifest.

``distillscope extract CONFIG --shard I/N -o FOLDER`` writes slice ``I`` (0-based) of ``N`` of
the samples to ``FOLDER/shard-0000I-of-0000N.h5``, an ordinary store, and ``FOLDER/
manifest.json`` (every shard writes the same one). The slices are contiguous ranges of the
configuration's sample order whose bounds fall on whole batches (``shard_bounds``), so every
shard runs exactly the batches an unsharded run would, and the features are the same bit for
bit. ``open_store(FOLDER)`` validates the shards against the manifest and each other (every
one present and finished, none foreign, one configuration, disjoint sample ids, one structure)
and returns a ``ShardedStore``: the ``Store`` interface over all of them, whose readers read
across shard boundaries (``ConcatReader``), so ``inspect`` and ``analyze`` take the folder as
one store.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError, StoreError
from .._scratch import POOL
from .reader import Store, open_store
from .schema import LayerInfo, first_line

__all__ = ["MANIFEST", "FORMAT", "ShardedStore", "ConcatReader", "open_sharded", "shard_bounds",
           "shard_name", "parse_shard", "manifest_for", "write_manifest"]

MANIFEST = "manifest.json"
FORMAT = "distillscope-shards"
_VERSION = 1
_NAME = re.compile(r"^shard-(\d+)-of-(\d+)\.h5$")
_MANIFEST_MAX_BYTES = 1 << 20


def shard_name(index: int, count: int) -> str:
    """``shard-00001-of-00003.h5``: the file of shard ``index`` (0-based) of ``count``."""
    return f"shard-{index:05d}-of-{count:05d}.h5"


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)``, ``0 <= I < N``; anything else is an InputError naming it."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not match or not int(match[1]) < int(match[2]):
        raise InputError(f"--shard must be I/N with 0 <= I < N (shard I of N, 0-based: 0/3, "
                         f"1/3, 2/3); got {text!r}")
    return int(match[1]), int(match[2])


def shard_bounds(n: int, count: int, batch: int) -> list[int]:
    """The ``count + 1`` bounds of the shards over ``n`` samples: contiguous, on whole batches
    of ``batch`` (so a shard's batches are an unsharded run's), as even as whole batches allow.
    Refused when a shard would be empty."""
    batches = -(-n // batch)
    if count > batches:
        raise InputError(f"{count} shards of {n} samples in batches of {batch} would leave "
                         f"shards empty ({batches} batches); use at most {batches} shards")
    return [min(n, (i * batches // count) * batch) for i in range(count)] + [n]


def manifest_for(count: int, config_sha256: str, sample_ids: np.ndarray, batch: int) -> dict:
    """The manifest of an extraction in ``count`` shards (every shard writes the same)."""
    import hashlib

    ids = np.ascontiguousarray(sample_ids, dtype=np.int64)
    return {"format": FORMAT, "version": _VERSION, "count": int(count),
            "config_sha256": config_sha256, "batch_size": int(batch), "n_samples": int(ids.size),
            "sample_ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
            "bounds": shard_bounds(ids.size, count, batch),
            "files": [shard_name(i, count) for i in range(count)]}


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``folder/manifest.json`` atomically, or check that the one there is this very
    manifest (another extraction's folder is refused, naming what differs)."""
    from ..outputs import write_atomically

    path = folder / MANIFEST
    if path.is_file():
        found = _read_manifest(folder)
        if found != manifest:
            changed = sorted(k for k in manifest if found.get(k) != manifest[k])
            raise InputError(f"{path}: the shards here belong to another extraction (its "
                             f"{', '.join(changed)} differ); use another -o folder")
        return
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(manifest, indent=1).encode()
    write_atomically(path, lambda fh: fh.write(text), overwrite=True, what="shard manifest")


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        if path.stat().st_size > _MANIFEST_MAX_BYTES:
            raise ValueError(f"larger than {_MANIFEST_MAX_BYTES} bytes")
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} manifest")
        if manifest.get("version") != _VERSION:
            raise ValueError(f"version {manifest.get('version')!r}; this distillscope reads "
                             f"version {_VERSION}")
        count, bounds = manifest["count"], manifest["bounds"]
        if not (isinstance(count, int) and count >= 1 and isinstance(bounds, list)
                and len(bounds) == count + 1 and all(isinstance(b, int) for b in bounds)
                and bounds == sorted(bounds) and bounds[0] == 0
                and isinstance(manifest.get("config_sha256"), str)):
            raise ValueError("count, bounds or config_sha256 malformed")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise StoreError(path, None, f"unreadable shard manifest ({first_line(err)}); it is "
                                     "written by distillscope extract --shard") from None
    return manifest


class ConcatReader:
    """A ``DatasetReader`` over the same dataset of consecutive shards: rows ``start:stop`` of
    the whole, one shard's reader when they lie in one shard, copied together when they
    straddle a boundary."""

    def __init__(self, readers: list, bounds: list[int]):
        self.readers, self.bounds = readers, bounds
        self._lent: dict[int, Any] = {}  # id(block) -> the reader that lent it
        self.on_read = lambda rows: None

    def read(self, start: int, stop: int) -> np.ndarray:
        first = int(np.searchsorted(self.bounds, start, side="right")) - 1
        if stop <= self.bounds[first + 1]:
            block = self.readers[first].read(start - self.bounds[first],
                                             stop - self.bounds[first])
            self._lent[id(block)] = self.readers[first]
            self.on_read(stop - start)
            return block
        out = None
        for i in range(first, len(self.readers)):
            lo, hi = max(start, self.bounds[i]), min(stop, self.bounds[i + 1])
            if lo >= hi:
                continue
            part = self.readers[i].read(lo - self.bounds[i], hi - self.bounds[i])
            if out is None:
                out = POOL.take((stop - start,) + part.shape[1:], part.dtype)
            out[lo - start:hi - start] = part
            self.readers[i].done(part)
        self.on_read(stop - start)
        return out

    def done(self, block: np.ndarray) -> None:
        """Give a block back to the reader (or the pool) that lent it."""
        owner = self._lent.pop(id(block), None)
        if owner is not None:
            owner.done(block)
        else:
            POOL.give(block)


class ShardedStore(Store):
    """The shards of one extraction as one store (``Store``'s interface): samples in shard
    order, the models, conditions and layers they all hold. Open with ``open_store(folder)``."""

    def __init__(self, path: Path, shards: list[Store], bounds: list[int]):
        self.path, self.shards, self.bounds = path, shards, bounds
        first = shards[0]
        self.notes = [n for s in shards for n in s.notes]
        self.attrs = dict(first.attrs)
        self.n_samples = bounds[-1]
        self.sample_ids = np.concatenate([s.sample_ids for s in shards])
        self.labels = (None if first.labels is None
                       else np.concatenate([s.labels for s in shards]))
        self.splits = (None if first.splits is None
                       else np.concatenate([s.splits for s in shards]))
        self.conditions, self.models = first.conditions, first.models
        self.rows_read: dict[str, int] = {}

    def layers(self, model: str, condition: str) -> dict[str, LayerInfo]:
        return {name: dataclasses.replace(info, shape=(self.n_samples,) + info.shape[1:])
                for name, info in self.shards[0].layers(model, condition).items()}

    def reader(self, info: LayerInfo, *, widen: bool = True) -> ConcatReader:
        parts = [s.reader(s.layers(info.model, info.condition)[info.layer], widen=widen)
                 for s in self.shards]
        reader = ConcatReader(parts, self.bounds)
        reader.on_read = lambda m, path=info.path: self.rows_read.__setitem__(
            path, self.rows_read.get(path, 0) + m)
        return reader

    def close(self) -> None:
        for s in self.shards:
            s.close()

    def __repr__(self) -> str:
        return (f"<distillscope.ShardedStore {self.path}: {len(self.shards)} shards, "
                f"{self.n_samples} samples, {len(self.models)} models, "
                f"{len(self.conditions)} conditions>")


def open_sharded(folder: Path, *, allow_incomplete: bool = False,
                 allow_external: bool = False) -> ShardedStore:
    """Open and validate the shards of ``folder`` (``open_store`` does, given a folder)."""
    manifest = _read_manifest(folder)
    count, files = manifest["count"], [shard_name(i, manifest["count"])
                                       for i in range(manifest["count"])]
    for other in sorted(p.name for p in folder.iterdir()):
        if _NAME.match(other) and other not in files:
            raise StoreError(folder / other, None, f"foreign shard: the manifest of {folder} "
                             f"lists {count} shards, not this one; move it out of the folder")
    for i, name in enumerate(files):
        if not (folder / name).is_file():
            raise StoreError(folder / name, None, f"shard {i}/{count} is missing or unfinished;"
                             f" run distillscope extract CONFIG --shard {i}/{count} -o {folder}")
    shards: list[Store] = []
    try:
        for i, name in enumerate(files):
            shard = open_store(folder / name, allow_incomplete=allow_incomplete,
                               allow_external=allow_external)
            shards.append(shard)
            _check_shard(shard, i, manifest, shards[0])
        _check_disjoint(folder, shards)
    except BaseException:
        for s in shards:
            s.close()
        raise
    return ShardedStore(folder, shards, manifest["bounds"])


def _check_shard(shard: Store, index: int, manifest: dict, first: Store) -> None:
    """The shard's provenance, size and structure against the manifest and shard 0."""
    try:
        provenance = json.loads(str(shard.attrs.get("provenance", "{}")))
    except ValueError:
        provenance = {}
    config = provenance.get("config_sha256") if isinstance(provenance, dict) else None
    if config != manifest["config_sha256"]:
        raise StoreError(shard.path, None, f"foreign shard: extracted from configuration "
                         f"{str(config)[:12]}, the manifest's is "
                         f"{manifest['config_sha256'][:12]}; it belongs to another extraction")
    where = provenance.get("shard") or {}
    expected = manifest["bounds"][index + 1] - manifest["bounds"][index]
    if where.get("index") != index or where.get("count") != manifest["count"] \
            or shard.n_samples != expected:
        raise StoreError(shard.path, None, f"foreign shard: it says it is shard "
                         f"{where.get('index')}/{where.get('count')} of {shard.n_samples} "
                         f"samples, the manifest expects shard {index}/{manifest['count']} of "
                         f"{expected}")
    if shard is first:
        return
    if list(shard.models) != list(first.models) or list(shard.conditions) != list(first.conditions):
        raise StoreError(shard.path, "/models", "holds other models or conditions than shard 0;"
                         " re-extract it")
    for info in first.entries():
        mine = shard.layers(info.model, info.condition).get(info.layer)
        if mine is None or (mine.shape[1:], mine.dtype, mine.kind) != (
                info.shape[1:], info.dtype, info.kind):
            raise StoreError(shard.path, info.path, "missing or shaped otherwise than in shard "
                             "0; re-extract it")


def _check_disjoint(folder: Path, shards: list[Store]) -> None:
    ids = np.concatenate([s.sample_ids for s in shards])
    unique, counts = np.unique(ids, return_counts=True)
    if unique.size < ids.size:
        repeated = int(unique[counts > 1][0])
        holders = [i for i, s in enumerate(shards) if repeated in s.sample_ids]
        raise StoreError(folder, "/samples/id", f"sample id {repeated} is in more than one "
                         f"shard ({', '.join(map(str, holders))}); the shards overlap: "
                         "re-extract them with one --shard I/N count")
