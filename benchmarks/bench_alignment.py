"""Exact linear CKA and mutual kNN: streamed/blocked implementations against their baselines.

Linear CKA (teacher and student both 768-d, float32 stores), timed in this process:

* ``textbook n x n Gram``: K = Xc Xc^T and L = Yc Yc^T in float64, tr(KL) / (||K|| ||L||). Needs
  two n x n matrices (6.4 GB at n = 20k, 40 GB at 50k: skipped where it cannot fit).
* ``in-memory feature space``: the baseline. Xc, Yc already in memory as float64;
  ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with two syrk and one gemm.
* ``stream from HDF5``: what ``analyze`` does: both layers read in lockstep blocks into
  ``PairMoments`` (joint scatter plus the debiased sums), then CKA and debiased CKA.

Mutual kNN (n = 20k, d = 768, k = 10, float32):

* ``floor``: the two similarity matrices computed block by block with BLAS, nothing else.
* ``distillscope``: the same blocks, top-k kept by the numba selection kernel.
* ``argpartition``: the same blocks, top-k by ``np.argpartition`` over each row block.

Peak memory: VmHWM growth of a fresh process per method, as in bench_spectrum.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

import distillscope as ds
from distillscope.metrics import alignment as al
from distillscope.metrics import neighbours as nb
from _common import arguments, best_time, peak_memory as _peak

D = 768


def make_store(path: Path, n: int, d: int = D, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    with ds.StoreWriter(path, sample_ids=np.arange(n), overwrite=True) as w:
        w.add_condition("clean")
        w.add_model("teacher", role="teacher", architecture="bench")
        w.add_model("student", role="student", architecture="bench")
        t = w.create_layer("teacher", "clean", "embedding", (d,), dtype=np.float32)
        s = w.create_layer("student", "clean", "embedding", (d,), dtype=np.float32)
        for start in range(0, n, 10_000):
            m = min(10_000, n - start)
            x = rng.standard_normal((m, d)) * np.arange(1, d + 1) ** -0.5 + 0.2
            t.append(x.astype(np.float32))
            s.append((x @ mix + 0.5 * rng.standard_normal((m, d))).astype(np.float32))
    return path


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with ds.open_store(path) as st:
        x = st.read(st.layers("teacher", "clean")["embedding"]).astype(np.float64)
        y = st.read(st.layers("student", "clean")["embedding"]).astype(np.float64)
    return x, y


# ------------------------------------------------------------------------------- linear CKA
def cka_gram(xy) -> float:
    x, y = xy
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    k = xc @ xc.T
    l_ = yc @ yc.T
    return float(np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_)))


def cka_features(xy) -> float:
    x, y = xy
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    cross = yc.T @ xc
    return float(np.sum(cross * cross)
                 / np.sqrt(np.sum((xc.T @ xc) ** 2) * np.sum((yc.T @ yc) ** 2)))


def cka_stream(path: Path) -> float:
    with ds.open_store(path) as st:
        t = st.layers("teacher", "clean")["embedding"]
        s = st.layers("student", "clean")["embedding"]
        m = ds.PairMoments(t.shape[1], s.shape[1])
        for (_, x), (_, y) in zip(st.iter_chunks(t), st.iter_chunks(s)):
            m.update(x, y)
        al.linear_cka(m, debiased=True)
        with warnings.catch_warnings():  # the quick sizes have d > n / 10: a timing run only
            warnings.simplefilter("ignore", al.DegenerateWarning)
            return al.linear_cka(m)


# ------------------------------------------------------------------------------- mutual kNN
def _unit(z):
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def knn_floor(xy) -> None:
    x, y = (_unit(z).astype(np.float32) for z in xy)
    block = max(16, (16 << 20) // (x.shape[0] * 4))  # the same blocks as distillscope's
    for start in range(0, x.shape[0], block):
        x[start:start + block] @ x.T
        y[start:start + block] @ y.T


def knn_ours(xy) -> float:
    x, y = (z.astype(np.float32) for z in xy)
    return nb.mutual_knn(x, y, k=10)[0]


def knn_argpartition(xy, k: int = 10) -> float:
    x, y = (_unit(z).astype(np.float32) for z in xy)
    n = x.shape[0]
    block = max(16, (16 << 20) // (n * 4))
    total = 0
    for start in range(0, n, block):
        rows = np.arange(start, min(n, start + block))
        sets = []
        for z in (x, y):
            s = z[rows] @ z.T
            s[np.arange(rows.size), rows] = -np.inf
            sets.append(np.argpartition(-s, k, axis=1)[:, :k])
        total += sum(np.intersect1d(a, b).size for a, b in zip(*sets))
    return total / (n * k)


CKA = {"textbook n x n Gram": ("memory", cka_gram),
       "in-memory feature space": ("memory", cka_features),
       "stream from HDF5": ("store", cka_stream)}
KNN = {"floor (BLAS blocks only)": ("memory", knn_floor),
       "distillscope (numba top-k)": ("memory", knn_ours),
       "argpartition": ("memory", knn_argpartition)}


def peak_memory(table: str, method: str, path: Path) -> float:
    return _peak("bench_alignment", table, method, path,
                 "b.knn_ours(b.load(b.make_store(path.with_name('warm.h5'), 64, 8)))")


def timed(fn, arg, repeats: int) -> float:
    return best_time(fn, arg, repeats)


def run(cka_sizes, knn_n, repeats, memory, folder: Path, gram_limit_gib: float) -> str:
    knn_ours(load(make_store(folder / "warm.h5", 64, 8)))  # compile kernels outside timing
    lines = ["## exact linear CKA, d = 768 (teacher and student)",
             f"{'n':>7}  {'method':<26} {'time':>9} {'vs in-memory':>13} {'peak MiB':>9}  value"]
    for n in cka_sizes:
        path = make_store(folder / f"cka_{n}.h5", n)
        xy = load(path)
        base = timed(cka_features, xy, repeats)
        for name, (kind, fn) in CKA.items():
            if fn is cka_gram and 2 * n * n * 8 / 2**30 > gram_limit_gib:
                lines.append(f"{n:>7}  {name:<26} {'skipped':>9}: needs "
                             f"{2 * n * n * 8 / 2**30:.0f} GiB for two n x n matrices")
                continue
            t = base if fn is cka_features else timed(fn, xy if kind == "memory" else path,
                                                       1 if fn is cka_gram else repeats)
            value = fn(xy if kind == "memory" else path)
            mem = peak_memory("CKA", name, path) if memory else float("nan")
            lines.append(f"{n:>7}  {name:<26} {t:8.3f}s {t / base:12.2f}x {mem:9.1f}  {value:.12f}")
        del xy
        path.unlink()
    lines += ["", f"## mutual kNN, n = {knn_n}, d = 768, k = 10",
              f"{'method':<28} {'time':>9} {'vs floor':>9} {'peak MiB':>9}  score"]
    path = make_store(folder / "knn.h5", knn_n)
    xy = load(path)
    base = timed(knn_floor, xy, repeats)
    for name, (kind, fn) in KNN.items():
        t = base if fn is knn_floor else timed(fn, xy, repeats)
        value = fn(xy)
        mem = peak_memory("KNN", name, path) if memory else float("nan")
        shown = "" if value is None else f"{value:.6f}"
        lines.append(f"{name:<28} {t:8.3f}s {t / base:8.2f}x {mem:9.1f}  {shown}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = arguments(__doc__.splitlines()[0], repeats=2)
    p.add_argument("--gram-limit-gib", type=float, default=12.0,
                   help="skip the n x n Gram baseline above this much memory")
    args = p.parse_args(argv)
    cka_sizes, knn_n = ([2000, 5000], 2000) if args.quick else ([20_000, 50_000], 20_000)
    with tempfile.TemporaryDirectory() as folder:
        print(run(cka_sizes, knn_n, args.repeats, not args.no_memory, Path(folder),
                  args.gram_limit_gib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
