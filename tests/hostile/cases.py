"""The hostile-store corpus: every case a tiny store built at test time, with its outcome.

A case is either **refused** (``distillscope inspect --deep`` and ``distillscope analyze`` exit
2 with one line naming the file and the HDF5 path, no output written) or **read** (both exit 0,
every dataset reads equal to plain h5py, and the note the case expects is printed).
``docs/security.md`` lists these cases with their outcomes (``markdown_table``; a test keeps the
two equal).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

import distillscope as ds

N = 40
TEACHER = "/models/teacher/clean/embedding"
STUDENT = "/models/student/clean/embedding"


def base_store(path: Path, n: int = N) -> Path:
    """A valid store: a teacher (8-d) and a student (6-d), clean and noisy, labels and a split."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((n, 4))
    with ds.StoreWriter(path, sample_ids=np.arange(n) + 100, labels=np.arange(n) % 2,
                        splits=np.where(np.arange(n) % 4 == 0, "test", "train")) as w:
        w.add_condition("clean")
        w.add_condition("noise", kind="gaussian_noise", sigma=0.1)
        w.add_model("teacher", role="teacher", architecture="t", n_params=100)
        w.add_model("student", role="student", architecture="s", n_params=10, seed=0)
        for c, sigma in (("clean", 0.0), ("noise", 0.1)):
            x = z + sigma * rng.standard_normal(z.shape)
            w.write_layer("teacher", c, "embedding", (x @ rng.standard_normal((4, 8))).astype("f4"))
            w.write_layer("student", c, "embedding", (x @ rng.standard_normal((4, 6))).astype("f4"))
    return path


def _edit(change: Callable[[h5py.File], None]) -> Callable[[Path, Path], Path]:
    """A builder: copy the base store, then apply ``change`` to it with h5py."""
    def build(base: Path, path: Path) -> Path:
        shutil.copy(base, path)
        with h5py.File(path, "r+") as f:
            change(f)
        return path
    return build


def _bytes(make: Callable[[bytes], bytes]) -> Callable[[Path, Path], Path]:
    def build(base: Path, path: Path) -> Path:
        path.write_bytes(make(base.read_bytes()))
        return path
    return build


def _replace(f: h5py.File, where: str, data=None, **create) -> h5py.Dataset:
    """Recreate ``where`` with new data or a new layout, keeping its attributes."""
    old = f[where]
    attrs, values = dict(old.attrs), old[()]
    del f[where]
    new = f.create_dataset(where, data=values if data is None else data, **create)
    for key, value in attrs.items():
        new.attrs[key] = value
    return new


def _attr(where: str, name: str, value) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        f[where].attrs[name] = value
    return change


def _del_attr(where: str, name: str) -> Callable[[h5py.File], None]:
    def change(f: h5py.File) -> None:
        del f[where].attrs[name]
    return change


def _virtual(source: str | None) -> Callable[[Path, Path], Path]:
    """The teacher's clean layer as a virtual dataset mapping ``source`` (written when given;
    missing.h5 otherwise)."""
    def build(base: Path, path: Path) -> Path:
        shutil.copy(base, path)
        name = source or "missing.h5"
        with h5py.File(path, "r+") as f:
            values, attrs = f[TEACHER][()], dict(f[TEACHER].attrs)
            if source:
                with h5py.File(path.parent / source, "w") as other:
                    other["x"] = values
            layout = h5py.VirtualLayout(shape=values.shape, dtype=values.dtype)
            layout[:] = h5py.VirtualSource(name, "x", shape=values.shape)
            del f[TEACHER]
            vds = f.create_virtual_dataset(TEACHER, layout, fillvalue=0)
            for key, value in attrs.items():
                vds.attrs[key] = value
        return path
    return build


def _external_link(f: h5py.File) -> None:
    other = Path(f.filename).parent / "other.h5"
    with h5py.File(other, "w") as o:
        o["x"] = f[STUDENT][()]
        for key, value in f[STUDENT].attrs.items():
            o["x"].attrs[key] = value
    del f[STUDENT]
    f[STUDENT] = h5py.ExternalLink("other.h5", "/x")


def _dangling_external(f: h5py.File) -> None:
    del f[STUDENT]
    f[STUDENT] = h5py.ExternalLink("gone.h5", "/x")


def _external_storage(f: h5py.File) -> None:
    values, attrs = f[STUDENT][()], dict(f[STUDENT].attrs)
    raw = Path(f.filename).parent / "raw.bin"
    raw.write_bytes(values.tobytes())
    del f[STUDENT]
    d = f.create_dataset(STUDENT, shape=values.shape, dtype=values.dtype,
                         external=[(str(raw), 0, values.nbytes)])
    for key, value in attrs.items():
        d.attrs[key] = value


def _soft_cycle(f: h5py.File) -> None:
    f["/models/a"] = h5py.SoftLink("/models/b")
    f["/models/b"] = h5py.SoftLink("/models/a")


def _unwritten_chunks(f: h5py.File) -> None:
    values, attrs = f[STUDENT][()], dict(f[STUDENT].attrs)
    del f[STUDENT]
    d = f.create_dataset(STUDENT, shape=values.shape, dtype=values.dtype, chunks=(10, 6),
                         fletcher32=True)
    d[:20] = values[:20]
    d[30:] = values[30:]
    for key, value in attrs.items():
        d.attrs[key] = value


def _huge_ids(f: h5py.File) -> None:
    del f["samples"]
    samples = f.create_group("samples")
    samples.create_dataset("id", shape=(10**11,), dtype="i8", chunks=(1 << 16,))


def _huge_layer(f: h5py.File) -> None:
    attrs = dict(f[STUDENT].attrs)
    del f[STUDENT]
    d = f.create_dataset(STUDENT, shape=(10**11, 6), dtype="f4", chunks=(4096, 6))
    for key, value in attrs.items():
        d.attrs[key] = value


def _unknown_filter(f: h5py.File) -> None:
    values, attrs = f[STUDENT][()], dict(f[STUDENT].attrs)
    del f[STUDENT]
    d = f.create_dataset(STUDENT, shape=values.shape, dtype=values.dtype, chunks=values.shape,
                         compression=32001, allow_unknown_filter=True)  # blosc: not installed
    d.id.write_direct_chunk((0, 0), values.tobytes())
    for key, value in attrs.items():
        d.attrs[key] = value


def _many_violations(f: h5py.File) -> None:
    f["/models/teacher"].attrs["n_params"] = "70k"
    f["/models/student"].attrs["seed"] = 1.5
    f["/conditions/noise"].attrs["sigma"] = -1.0


def _one_row_chunks(base: Path, path: Path) -> Path:
    n = 100_000
    rng = np.random.default_rng(1)
    with ds.StoreWriter(path, sample_ids=np.arange(n)) as w:
        w.add_condition("clean")
        w.add_model("teacher", role="teacher", architecture="t", n_params=1)
        w.write_layer("teacher", "clean", "embedding", rng.standard_normal((n, 4)).astype("f4"))
    with h5py.File(path, "r+") as f:
        _replace(f, TEACHER, chunks=(1, 4))
    return path


def _user_block(base: Path, path: Path) -> Path:
    with h5py.File(base, "r") as src, h5py.File(path, "w", userblock_size=512) as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            src.copy(src[name], dst, name=name)
    return path


@dataclass(frozen=True)
class Case:
    """One hostile store: how it is built, and what must happen."""

    name: str
    build: Callable[[Path, Path], Path]
    outcome: str  # "refused" or "read"
    expect: str  # text in the error (refused), or in a note (read; "" for none)
    where: str = ""  # the HDF5 path the error names ("" for the file itself)
    args: tuple[str, ...] = field(default_factory=tuple)  # more options for analyze


CASES: tuple[Case, ...] = (
    # files that are not stores
    Case("empty file", _bytes(lambda b: b""), "refused", "cannot open as HDF5"),
    Case("truncated store", _bytes(lambda b: b[:3000]), "refused", "cannot open as HDF5"),
    Case("random bytes", _bytes(lambda b: np.random.default_rng(0).bytes(4096)), "refused",
         "cannot open as HDF5"),
    Case("plain HDF5, not a store", _edit(_attr("/", "format", "other")), "refused",
         "not a distillscope store", "/"),
    Case("format_version 2", _edit(_attr("/", "format_version", 2)), "refused",
         "format_version 2 is not supported", "/"),
    # reaching outside the file, or looping
    Case("virtual dataset whose source file is missing", _virtual(None), "refused",
         "virtual dataset mapping missing.h5:x", TEACHER),
    Case("virtual dataset into another file", _virtual("source.h5"), "refused",
         "virtual dataset mapping source.h5:x; pass allow_external", TEACHER),
    Case("external link", _edit(_external_link), "refused", "external link to other.h5:/x",
         STUDENT),
    Case("external storage", _edit(_external_storage), "refused", "external storage in",
         STUDENT),
    Case("soft-link cycle under /models", _edit(_soft_cycle), "refused", "a cycle", "/models/a"),
    Case("dangling soft link under /models",
         _edit(lambda f: f["/models"].__setitem__("gone", h5py.SoftLink("/nowhere"))),
         "refused", "which does not exist (a dangling link)", "/models/gone"),
    Case("soft link to an ancestor", _edit(
        lambda f: f["/models/student"].__setitem__("up", h5py.SoftLink("/models"))),
         "refused", "which contains the link (a cycle)", "/models/student/up"),
    # what HDF5 would read as fill values, or could not decode
    Case("chunks never written", _edit(_unwritten_chunks), "refused",
         "1 of 4 chunks were never written (first: samples 20..29)", STUDENT),
    Case("sample ids declaring 1e11 rows", _edit(_huge_ids), "refused",
         "declares 100,000,000,000 rows: reading it takes 745.1 GiB", "/samples/id"),
    Case("a layer declaring 1e11 rows", _edit(_huge_layer), "refused",
         f"holds 100000000000 samples but /samples/id has {N}", STUDENT),
    Case("filter not available (blosc)", _edit(_unknown_filter), "refused",
         "HDF5 filter 32001", STUDENT),
    # the schema: types, shapes and ranges
    Case("complete is the string 'False'", _edit(_attr("/", "complete", "False")), "refused",
         "attribute 'complete' must be a boolean", "/"),
    Case("complete is an array", _edit(_attr("/", "complete", np.array([0, 0]))), "refused",
         "attribute 'complete' must be a boolean", "/"),
    Case("incomplete store", _edit(_attr("/", "complete", False)), "refused",
         "the store is incomplete", "/"),
    Case("two teachers", _edit(_attr("/models/student", "role", "teacher")), "refused",
         "2 models have role 'teacher' (teacher, student)", "/models"),
    Case("unknown role", _edit(_attr("/models/student", "role", "boss")), "refused",
         "attribute 'role' is 'boss'", "/models/student"),
    Case("n_params '70k'", _edit(_attr("/models/teacher", "n_params", "70k")), "refused",
         "attribute 'n_params' must be an integer; got the string '70k'", "/models/teacher"),
    Case("n_params NaN", _edit(_attr("/models/teacher", "n_params", np.nan)), "refused",
         "attribute 'n_params' must be an integer; got the float nan", "/models/teacher"),
    Case("non-integer seed", _edit(_attr("/models/student", "seed", 1.5)), "refused",
         "attribute 'seed' must be an integer", "/models/student"),
    Case("negative sigma", _edit(_attr("/conditions/noise", "sigma", -1.0)), "refused",
         "attribute 'sigma' is -1.0; expected >= 0", "/conditions/noise"),
    Case("integer samples/split", _edit(lambda f: _replace(f, "samples/split",
                                                           np.zeros(N, "i8"))),
         "refused", "has dtype int64; expected strings", "/samples/split"),
    Case("float labels", _edit(lambda f: _replace(f, "samples/label", np.arange(N) * 0.5)),
         "refused", "has dtype float64; expected integer class labels", "/samples/label"),
    Case("NaN labels", _edit(lambda f: _replace(f, "samples/label", np.full(N, np.nan))),
         "refused", "has dtype float64; expected integer class labels", "/samples/label"),
    Case("string labels", _edit(lambda f: _replace(
        f, "samples/label", np.array(["cat"] * N, dtype=object), dtype=h5py.string_dtype())),
         "refused", "expected integer class labels", "/samples/label"),
    Case("duplicate sample ids", _edit(lambda f: _replace(f, "samples/id", np.zeros(N, "i8"))),
         "refused", "sample ids are not unique", "/samples/id"),
    Case("scalar features dataset", _edit(lambda f: _replace(f, STUDENT, np.float32(1))),
         "refused", "is a scalar", STUDENT),
    Case("d = 0 features", _edit(lambda f: _replace(f, STUDENT, np.zeros((N, 0), "f4"))),
         "refused", "no features", STUDENT),
    Case("integer features", _edit(lambda f: _replace(f, STUDENT, np.ones((N, 6), "i4"))),
         "refused", "dtype int32 is not float16/32/64", STUDENT),
    Case("mismatched sample count", _edit(lambda f: _replace(f, STUDENT,
                                                             np.ones((N - 1, 6), "f4"))),
         "refused", f"holds {N - 1} samples but /samples/id has {N}", STUDENT),
    Case("layer kind is an array", _edit(_attr(STUDENT, "kind", np.array([0]))), "refused",
         "attribute 'kind' must be a string", STUDENT),
    Case("layer kind missing", _edit(_del_attr(STUDENT, "kind")), "refused",
         "attribute 'kind' is missing", STUDENT),
    Case("condition not declared", _edit(lambda f: f.move("/conditions/noise",
                                                          "/conditions/other")),
         "refused", "condition 'noise' is not declared", "/models/teacher/noise"),
    Case("NaN values", _edit(lambda f: f[STUDENT].__setitem__((3, 2), np.nan)), "refused",
         "non-finite values (1 NaN, 0 infinite), first at sample 3 (id 103)", STUDENT),
    Case("three violations at once", _edit(_many_violations), "refused",
         "3 violations of the store format (docs/store-format.md): /conditions/noise: "),
    # layouts read correctly (equal to h5py), some with a note
    Case("big-endian float32", _edit(lambda f: _replace(f, STUDENT, dtype=">f4")), "read", ""),
    Case("user block (512 bytes before the HDF5 data)", _user_block, "read", ""),
    Case("shuffle + gzip", _edit(lambda f: _replace(f, STUDENT, chunks=(16, 6), shuffle=True,
                                                    compression="gzip")), "read", ""),
    Case("contiguous storage", _edit(lambda f: _replace(f, STUDENT)), "read", ""),
    Case("soft link to a model (an alias)",
         _edit(lambda f: f["/models"].__setitem__("alias", h5py.SoftLink("/models/student"))),
         "read", ""),
    Case("virtual dataset with --allow-external", _virtual("source.h5"), "read",
         "is read from virtual dataset mapping source.h5:x", TEACHER, ("--allow-external",)),
    Case("virtual dataset, source missing, with --allow-external", _virtual(None), "refused",
         "reads missing.h5:x, which does not exist", TEACHER, ("--allow-external",)),
    Case("external link to a missing file, with --allow-external", _edit(_dangling_external),
         "refused", "external link to gone.h5:/x, which cannot be opened", STUDENT,
         ("--allow-external",)),
    Case("one-row chunks over 100k rows", _one_row_chunks, "read",
         "is stored in 100,000 chunks of (1, 4)", TEACHER, ("--metrics", "erank_variance")),
)


def markdown_table() -> str:
    """The corpus as the table of ``docs/security.md``."""
    lines = ["| case | outcome | what distillscope says |", "|---|---|---|"]
    for case in CASES:
        said = case.expect.replace("|", "\\|")
        if case.outcome == "refused":
            outcome = "refused, exit 2"
            said = f"`{case.where + ': ' if case.where else ''}{said} ...`"
        else:
            outcome = "read (equal to h5py)"
            said = f"note: `{said} ...`" if said else ""
        lines.append(f"| {case.name} | {outcome} | {said} |")
    return "\n".join(lines)
