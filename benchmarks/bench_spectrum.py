"""Streaming eigen-spectrum from an HDF5 store vs in-memory baselines, with peak memory.

Methods, each timed in this process on the same data (best of ``repeats``):

* ``in-memory X.T@X+eigvalsh``: the baseline. X (n x d, float64) already in memory; BLAS syrk
  and LAPACK eigvalsh. Uncentred, so it does strictly less work than the others.
* ``full svd``: ``np.linalg.svd(X, compute_uv=False)`` of the same in-memory X.
* ``stream (numba prepare)``: what ``distillscope.analyze`` does: read float32 blocks from the
  store (fletcher32 verified), one fused numba pass (float64, finiteness, shift, column sums),
  one syrk per block, eigvalsh at the end. Centred.
* ``stream (numpy prepare)``: the same streaming with the per-block preparation written in
  numpy (astype, isfinite, subtract, sum), to decide numba against numpy.
* ``stream, no fletcher32``: the library's streaming on a copy of the store written without
  checksums, to show what HDF5's checksum verification costs on every read.

Peak memory is measured in a fresh subprocess per method: peak RSS (``VmHWM``, which, unlike
``ru_maxrss``, does not inherit the parent's size across fork and exec) minus RSS after imports, which counts HDF5 and BLAS buffers as well as numpy arrays. The store file is
read from the page cache (it was just written), so I/O is memory bandwidth, not disk.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import distillscope as ds
from _common import arguments, best_time, peak_memory as _peak

LAYER = ("teacher", "clean", "embedding")


def make_store(path: Path, n: int, d: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    scale = np.arange(1, d + 1) ** -0.5
    with ds.StoreWriter(path, sample_ids=np.arange(n), overwrite=True) as w:
        w.add_condition("clean")
        w.add_model("teacher", role="teacher", architecture="bench", n_params=0)
        layer = w.create_layer(*LAYER, (d,), dtype=np.float32)
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            layer.append((rng.standard_normal((m, d)) * scale + 0.3).astype(np.float32))
    return path


def load(path: Path) -> np.ndarray:
    with ds.open_store(path) as st:
        return st.read(st.layers(*LAYER[:2])[LAYER[2]]).astype(np.float64)


# ------------------------------------------------------------------------------------ methods
def in_memory(x: np.ndarray) -> np.ndarray:
    return np.linalg.eigvalsh(x.T @ x)[::-1]


def full_svd(x: np.ndarray) -> np.ndarray:
    return np.linalg.svd(x, compute_uv=False) ** 2


def stream_numba(path: Path) -> np.ndarray:
    with ds.open_store(path) as st:
        info = st.layers(*LAYER[:2])[LAYER[2]]
        moments = ds.SecondMoments(info.shape[1])
        for _, block in st.iter_chunks(info):
            moments.update(block)
        return moments.eigenvalues()


def stream_numpy(path: Path) -> np.ndarray:
    with ds.open_store(path) as st:
        info = st.layers(*LAYER[:2])[LAYER[2]]
        d = info.shape[1]
        count, shift, total, cross = 0, None, np.zeros(d), np.zeros((d, d))
        for _, block in st.iter_chunks(info):
            y = block.astype(np.float64)
            if not np.isfinite(y).all():
                raise ValueError("non-finite")
            if shift is None:
                shift = y.mean(axis=0)
            y -= shift
            total += y.sum(axis=0)
            cross += y.T @ y
            count += y.shape[0]
        m2 = cross - np.outer(total, total / count)
        return np.linalg.eigvalsh(m2 / (count - 1))[::-1]


def without_checksums(path: Path) -> Path:
    """A copy of the store whose dataset has no fletcher32 filter (to measure its cost)."""
    import h5py

    copy = path.with_name(path.stem + "_nochecksum.h5")
    with h5py.File(path) as src, h5py.File(copy, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in ("samples", "conditions"):
            src.copy(src[name], dst, name)
        for group in ("models", f"models/{LAYER[0]}", f"models/{LAYER[0]}/{LAYER[1]}"):
            dst.require_group(group).attrs.update(src[group].attrs)
        data = src["/".join(("models", *LAYER))]
        out = dst.create_dataset("/".join(("models", *LAYER)), shape=data.shape,
                                 dtype=data.dtype, chunks=data.chunks)
        out.attrs.update(data.attrs)
        for start in range(0, data.shape[0], 10_000):
            out[start:start + 10_000] = data[start:start + 10_000]
    return copy


def stream_unverified(path: Path) -> np.ndarray:
    """``stream_numba`` on the copy of the store without checksums (see ``run``)."""
    return stream_numba(path.with_name(path.stem + "_nochecksum.h5"))


METHODS = {
    "in-memory X.T@X+eigvalsh": ("memory", in_memory),
    "full svd": ("memory", full_svd),
    "stream (numba prepare)": ("store", stream_numba),
    "stream (numpy prepare)": ("store", stream_numpy),
    "stream, no fletcher32": ("store", stream_unverified),
}


def peak_memory(method: str, path: Path) -> float:
    return _peak("bench_spectrum", "METHODS", method, path,
                 "b.stream_numba(b.make_store(path.with_name('warm.h5'), 50, 4))")


def run(sizes, repeats: int, memory: bool, folder: Path) -> list[dict]:
    rows = []
    stream_numba(make_store(folder / "warm.h5", 50, 4))  # compile the kernel outside timing
    for n, d in sizes:
        path = make_store(folder / f"store_{n}_{d}.h5", n, d)
        without_checksums(path)
        x = load(path)
        check = stream_numba(path)
        xc = x - x.mean(axis=0)
        reference = np.linalg.eigvalsh(xc.T @ xc / (n - 1))[::-1]
        error = float(np.abs(check - reference).max() / reference[0])
        base = best_time(in_memory, x, repeats)
        for name, (kind, fn) in METHODS.items():
            t = base if fn is in_memory else best_time(fn, x if kind == "memory" else path,
                                                        1 if fn is full_svd else repeats)
            mem = peak_memory(name, path) if memory else float("nan")
            rows.append({"n": n, "d": d, "method": name, "seconds": t, "ratio": t / base,
                         "peak_mib": mem, "max_rel_error": error})
        del x, xc
        path.unlink()
        path.with_name(path.stem + "_nochecksum.h5").unlink()
    return rows


def report(rows: list[dict]) -> str:
    lines = [f"{'n':>7} {'d':>4}  {'method':<26} {'time':>9} {'vs baseline':>12} {'peak MiB':>9}"]
    for r in rows:
        lines.append(f"{r['n']:>7} {r['d']:>4}  {r['method']:<26} {r['seconds']:8.3f}s "
                     f"{r['ratio']:11.2f}x {r['peak_mib']:9.1f}")
    errors = {(r["n"], r["d"]): r["max_rel_error"] for r in rows}
    lines.append("stream vs in-memory centred eigvalsh, max |diff| / lam_max: "
                 + ", ".join(f"n={n} d={d}: {e:.1e}" for (n, d), e in errors.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = arguments(__doc__.splitlines()[0], repeats=3)
    args = p.parse_args(argv)
    sizes = [(2000, 64), (20_000, 64)] if args.quick else [
        (10_000, 512), (10_000, 768), (100_000, 512), (100_000, 768)]
    with tempfile.TemporaryDirectory() as folder:
        rows = run(sizes, args.repeats, not args.no_memory, Path(folder))
    print(report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
