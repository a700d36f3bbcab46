"""Validation of a feature store against its declared schema, every violation listed.

The schema of format version 1 is declared once, in ``schema``: ``ATTRIBUTES`` (every
attribute, with its type, whether it is required, and its range) and ``DATASETS`` (every
dataset, with its dtype and shape rule). ``validate_structure`` checks a file against them
before anything is analysed, without reading feature values, and raises one ``StoreError`` that
lists every violation (``docs/store-format.md``, section *Validation*, is generated from the
same declarations: ``schema_markdown``).

The walk refuses, before anything else, whatever would make HDF5 read outside the file or loop:
external links, virtual datasets, datasets with external storage, soft links that dangle or
form a cycle (``allow_external=True``, ``--allow-external``, opts in to the first three, and
the analysis then says what it reads from where). Each feature dataset must decode here (its
filters available), hold every chunk it declares (HDF5 would return fill values for the
others), and hold at least one feature.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._errors import StoreError
from .._system import available_memory
from .._version import __version__
from ..metrics.moments import FLOAT_DTYPES
from .chunks import DIRECT_MIN_CHUNK_BYTES, chunk_bytes, declared_chunks, unwritten
from .schema import (ATTRIBUTES, CONDITION, DOCS, FORMAT, FORMAT_VERSION, LAYER, LAYER_KINDS,
                     MODEL, ROOT, TYPE_WORDS, TYPES, first_line, is_int, plain_attr)

__all__ = ["validate_structure"]

# ------------------------------------------------------------------------------ the walk
class _Violations:
    """What is wrong with a store, in the order found."""

    def __init__(self, path: Path):
        self.path = path
        self.found: list[tuple[str, str]] = []
        self.notes: list[str] = []  # what is fine but costly, or read from elsewhere

    def add(self, where: str, problem: str) -> None:
        self.found.append((where, problem))

    def raise_any(self) -> None:
        if len(self.found) == 1:
            raise StoreError(self.path, *self.found[0])
        if self.found:
            listed = "; ".join(f"{where}: {problem}" for where, problem in self.found)
            error = StoreError(self.path, None, f"{len(self.found)} violations of the store "
                                                f"format ({DOCS}): {listed}")
            error.violations = list(self.found)
            raise error

    def attributes(self, where_kind: str, where: str, obj: h5py.HLObject) -> dict[str, Any]:
        """Check ``obj``'s declared attributes; return the readable ones."""
        values: dict[str, Any] = {}
        for name in obj.attrs:
            try:
                values[name] = obj.attrs[name]
            except (OSError, TypeError, ValueError) as err:
                self.add(where, f"attribute {name!r} cannot be read ({first_line(err)})")
        for rule in ATTRIBUTES:
            if rule.where != where_kind:
                continue
            if rule.name not in values:
                if rule.required:
                    self.add(where, f"attribute {rule.name!r} is missing ({TYPE_WORDS[rule.type]}"
                                    + (f", {rule.rule})" if rule.rule else ")"))
                continue
            problem = rule.problem(values[rule.name])
            if problem:
                self.add(where, problem)
        return values


def _outside(f: h5py.File, found: _Violations, allow_external: bool) -> list[str]:
    """Refuse links and datasets that reach outside the file or loop; return the notes on what
    is read from elsewhere when ``allow_external``."""
    notes: list[str] = []
    ask = "; pass allow_external=True (--allow-external) to read it"

    def visit(name: str, link) -> None:
        where = "/" + name
        if isinstance(link, h5py.ExternalLink):
            if not allow_external:
                found.add(where, f"external link to {link.filename}:{link.path}{ask}")
            elif _resolves(f, where):
                notes.append(f"{where} is read from {link.filename}:{link.path} (external link)")
            else:
                found.add(where, f"external link to {link.filename}:{link.path}, which cannot "
                                 "be opened")
            return
        if isinstance(link, h5py.SoftLink):
            found_problem = _soft_link_problem(f, where, link)
            if found_problem:
                found.add(where, found_problem)
            return
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset):
            for problem in _storage_outside(obj):
                if allow_external:
                    notes.append(f"{where} is read from {problem}")
                else:
                    found.add(where, f"{problem}{ask}")
            if allow_external:
                for missing in _missing_sources(obj, Path(f.filename).parent):
                    found.add(where, f"reads {missing}, which does not exist (HDF5 would read "
                                     "fill values in its place)")

    f.visititems_links(visit)
    return notes


def _resolves(f: h5py.File, where: str) -> bool:
    try:
        return f.get(where) is not None
    except (RuntimeError, KeyError, OSError):
        return False


def _missing_sources(ds: h5py.Dataset, folder: Path) -> list[str]:
    """The files (and datasets) a virtual or externally stored dataset names that are not there
    (relative names are looked up beside the store, as HDF5 does first)."""
    missing = []
    for e in ds.external or []:
        name = e[0].decode() if isinstance(e[0], bytes) else str(e[0])
        if not (folder / name).is_file():
            missing.append(name)
    if ds.is_virtual:
        for source in ds.virtual_sources():
            path = folder / source.file_name if source.file_name != "." else None
            if path is None:
                continue  # a mapping within this file
            try:
                with h5py.File(path, "r") as other:
                    ok = isinstance(other.get(source.dset_name), h5py.Dataset)
            except OSError:
                ok = False
            if not ok:
                missing.append(f"{source.file_name}:{source.dset_name}")
    return missing


def _soft_link_problem(f: h5py.File, where: str, link: h5py.SoftLink) -> str | None:
    try:
        target = f.get(where)
    except (RuntimeError, KeyError, OSError):
        return f"soft link to {link.path}, which leads back to itself (a cycle)"
    if target is None:
        return f"soft link to {link.path}, which does not exist (a dangling link)"
    if isinstance(target, h5py.Group):
        parent = posixpath.dirname(where)
        while True:  # the link's parent chain must not pass through its target
            if f[parent] == target:
                return f"soft link to {link.path}, which contains the link (a cycle)"
            if parent == "/":
                return None
            parent = posixpath.dirname(parent)
    return None


def _storage_outside(ds: h5py.Dataset) -> list[str]:
    out = []
    if ds.is_virtual:
        sources = sorted({f"{s.file_name}:{s.dset_name}" for s in ds.virtual_sources()})
        out.append(f"virtual dataset mapping {', '.join(sources)}")
    if ds.external:
        out.append(f"external storage in {', '.join(str(e[0]) for e in ds.external)}")
    return out


# ------------------------------------------------------------------------------ the store
def validate_structure(path: Path, f: h5py.File, allow_incomplete: bool = False,
                       allow_external: bool = False) -> list[str]:
    """Check an open store against the schema (no feature values read).

    Returns
    -------
    list of str
        Notes on what the store reads from other files (only with ``allow_external``).

    Raises
    ------
    StoreError
        Listing every violation found (``violations``: ``[(hdf5_path, problem), ...]`` when
        there are several), with ``docs/store-format.md`` to read.
    """
    found = _Violations(path)
    found.notes += _outside(f, found, allow_external)
    found.raise_any()  # what reaches outside or loops is not walked any further
    root = found.attributes(ROOT, "/", f)
    _fatal_root(path, root)
    complete = root.get("complete")
    if not allow_incomplete and isinstance(complete, (bool, np.bool_)) and not complete:
        found.add("/", "the store is incomplete (complete=False): its writer did not finish; "
                       "rerun the extraction, or pass allow_incomplete=True "
                       "(--allow-incomplete) to read it")
    groups = {name: f.get(name) for name in ("samples", "conditions", "models")}
    for name, group in groups.items():
        if not isinstance(group, h5py.Group):
            found.add(f"/{name}", "required group is missing; the store was not written by a "
                                  "format-1 writer")
    found.raise_any()
    n = _samples(found, groups["samples"])
    if "n_samples" in root and n is not None and is_int(root["n_samples"]) \
            and int(root["n_samples"]) != n:
        found.add("/", f"attribute 'n_samples' is {int(root['n_samples'])} but /samples/id "
                       f"holds {n} ids")
    _conditions(found, groups["conditions"])
    _models(found, groups["models"], groups["conditions"], n)
    found.raise_any()
    return found.notes


def _fatal_root(path: Path, root: dict[str, Any]) -> None:
    fmt = plain_attr(root.get("format"))
    if fmt != FORMAT:
        raise StoreError(path, "/", f"not a distillscope store (root attribute 'format' is "
                                    f"{fmt!r}, expected {FORMAT!r}); write stores with extract "
                                    "or distillscope.StoreWriter")
    version = plain_attr(root.get("format_version"))
    if version != FORMAT_VERSION or not is_int(root.get("format_version")):
        raise StoreError(path, "/", f"format_version {version!r} is not supported (this "
                                    f"distillscope {__version__} reads version "
                                    f"{FORMAT_VERSION}); use a matching distillscope")


def _samples(found: _Violations, samples: h5py.Group) -> int | None:
    """Check /samples; the number of samples, or None when the ids are unusable."""
    ids = samples.get("id")
    if not isinstance(ids, h5py.Dataset) or ids.ndim != 1 or ids.dtype.kind not in "iu":
        found.add("/samples/id", "must be a 1-D integer dataset of sample ids")
        return None
    n = ids.shape[0]
    if n == 0:
        found.add("/samples/id", "the store holds no samples")
        return None
    if not _readable(found, "/samples/id", ids, n * ids.dtype.itemsize):
        return None
    values = ids[()]
    if not bool(np.all(values[1:] > values[:-1])) and np.unique(values).size != n:
        found.add("/samples/id", "sample ids are not unique")
    for name, kind, words in (("label", "iu", "integer class labels"),
                              ("split", None, "strings such as 'train' and 'test'")):
        ds, where = samples.get(name), f"/samples/{name}"
        if ds is None:
            continue
        if not isinstance(ds, h5py.Dataset) or ds.shape != (n,):
            shape = getattr(ds, "shape", "a group")
            found.add(where, f"has shape {shape}; expected ({n},) like /samples/id")
        elif (ds.dtype.kind not in kind) if kind else h5py.check_string_dtype(ds.dtype) is None:
            found.add(where, f"has dtype {ds.dtype}; expected {words}")
        elif name == "split" and _readable(found, where, ds, 0):
            if any(not s.strip() for s in ds.asstr()[()]):
                found.add(where, "holds empty strings; name each sample's split ('train', "
                                 "'test', ...)")
    return n


def _readable(found: _Violations, where: str, ds: h5py.Dataset, memory: int) -> bool:
    """Every declared chunk written, filters available, and ``memory`` bytes to spare."""
    available = available_memory() if memory else 0
    if memory > available:
        found.add(where, f"declares {ds.shape[0]:,} rows: reading it takes {memory / 2**30:.1f} "
                         f"GiB, more than the {available / 2**30:.1f} GiB of memory available")
    problems = _decode_problems(ds)
    for problem in problems:
        found.add(where, problem)
    return not problems and memory <= available


def _decode_problems(ds: h5py.Dataset) -> list[str]:
    plist = ds.id.get_create_plist()
    out = []
    for i in range(plist.get_nfilters()):
        code, _, _, name = plist.get_filter(i)
        if not h5py.h5z.filter_avail(code):
            label = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
            out.append(f"compressed with HDF5 filter {code} ({label or 'unnamed'}), which is "
                       "not available here; install its plugin (hdf5plugin) or repack the file "
                       "with h5repack")
    if ds.size == 0 or ds.is_virtual or ds.external:
        return out
    if ds.chunks is None:
        if ds.id.get_storage_size() == 0:
            out.append("was never written (no storage allocated); HDF5 would read its fill "
                       "value: rerun the writer")
        return out
    gap = unwritten(ds)
    if gap is not None:
        first, last, missing, declared = gap
        out.append(f"{missing} of {declared} chunks were never written (first: samples "
                   f"{first}..{last}); HDF5 would read its fill value: rerun the writer")
    return out


def _conditions(found: _Violations, conditions: h5py.Group) -> None:
    if not len(conditions):
        found.add("/conditions", "no condition is declared")
    for name, group in conditions.items():
        where = f"/conditions/{name}"
        if not isinstance(group, h5py.Group):
            found.add(where, "expected a group (a condition and its attributes)")
            continue
        found.attributes(CONDITION, where, group)


def _models(found: _Violations, models: h5py.Group, conditions: h5py.Group,
            n: int | None) -> None:
    if not len(models):
        found.add("/models", "no model is stored")
    teachers = []
    for name, group in models.items():
        where = f"/models/{name}"
        if not isinstance(group, h5py.Group):
            found.add(where, "expected a group (a model, its attributes and its conditions)")
            continue
        attrs = found.attributes(MODEL, where, group)
        if plain_attr(attrs.get("role")) == "teacher":
            teachers.append(name)
        for condition, sub in group.items():
            if condition not in conditions:
                found.add(f"{where}/{condition}", f"condition {condition!r} is not declared "
                                                  "under /conditions")
            elif not isinstance(sub, h5py.Group):
                found.add(f"{where}/{condition}", "expected a group of layers")
            else:
                for layer, ds in sub.items():
                    _layer(found, f"{where}/{condition}/{layer}", ds, n)
    if len(teachers) > 1:
        found.add("/models", f"{len(teachers)} models have role 'teacher' ({', '.join(teachers)});"
                             " the format allows one: keep one teacher per store and set "
                             "role='student' on the others")


def _layer(found: _Violations, where: str, ds: h5py.Dataset, n: int | None) -> None:
    if not isinstance(ds, h5py.Dataset):
        found.add(where, "expected a dataset of activations, found a group")
        return
    attrs = found.attributes(LAYER, where, ds)
    if ds.dtype.kind != "f" or ds.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        found.add(where, f"dtype {ds.dtype} is not float16/32/64 (either byte order); store "
                         "activations as floating point")
    if ds.ndim == 0:
        found.add(where, "is a scalar; expected activations with the samples along axis 0")
        return
    if n is not None and ds.shape[0] != n:
        found.add(where, f"holds {ds.shape[0]} samples but /samples/id has {n}; every model "
                         "must cover the same samples in the same order")
    if 0 in ds.shape[1:]:
        found.add(where, f"has shape {ds.shape}: no features; store at least one feature per "
                         "sample")
    kind = plain_attr(attrs.get("kind"))  # a kind of the wrong type is already a violation
    if isinstance(kind, str) and kind in LAYER_KINDS and ds.ndim != LAYER_KINDS[kind]:
        found.add(where, f"a {kind} layer must be {LAYER_KINDS[kind]}-D; got shape {ds.shape}")
    elif kind == "tokens":
        _tokens(found, where, attrs, ds.shape)
    if _readable(found, where, ds, 0):
        _chunk_cost(found, where, ds)


#: chunks under DIRECT_MIN_CHUNK_BYTES cost more in HDF5 calls than in bytes: this many of them
#: get a note, at about this many seconds a chunk per pass
MANY_CHUNKS, SECONDS_PER_CHUNK = 50_000, 8e-6


def _chunk_cost(found: _Violations, where: str, ds: h5py.Dataset) -> None:
    """A note when a dataset's chunking makes every pass slow (read correctly all the same)."""
    if ds.chunks is None or chunk_bytes(ds) >= DIRECT_MIN_CHUNK_BYTES:
        return
    count = declared_chunks(ds)
    if count < MANY_CHUNKS:
        return
    better = "x".join(str(c) for c in (min(1024, ds.shape[0]), *ds.shape[1:]))
    found.notes.append(
        f"{where} is stored in {count:,} chunks of {ds.chunks} ({chunk_bytes(ds):,} bytes): "
        f"each pass spends about {count * SECONDS_PER_CHUNK:.1f} s in HDF5 calls "
        f"({SECONDS_PER_CHUNK * 1e6:.0f} us a chunk), where chunks of {better} take a few "
        f"milliseconds; repack once: h5repack -l {where}:CHUNK={better} STORE REPACKED")


def _tokens(found: _Violations, where: str, attrs: dict[str, Any], shape: tuple) -> None:
    grid, prefix = attrs.get("grid"), attrs.get("num_prefix_tokens")
    if grid is None or prefix is None:
        found.add(where, "tokens need attributes 'grid' (h, w) and 'num_prefix_tokens'")
    elif TYPES["int pair"](grid) and is_int(prefix):
        h, w = (int(g) for g in grid)
        if int(prefix) + h * w != shape[1]:
            found.add(where, f"{shape[1]} tokens != {int(prefix)} prefix + {h}x{w} grid")
