"""Neighbours at large n: the exact pass against faiss, and the recall of approximate indexes.

``python benchmarks/bench_neighbours.py [--quick] [--n N] [--recall-n N] [--dim D]``

1. **Exact, two ways** (n = 20,000 rows of 768-d, float32, k = 10): the engine's blocked
   similarity pass (the baseline) against faiss's exact ``IndexFlatIP``; the share of rows
   whose neighbour sets are identical (ties aside, all of them).
2. **Approximate indexes at large n** (``--recall-n``, default 200,000 rows of ``--dim`` 64,
   clustered like embeddings: 1,000 Gaussian clusters under a power-law spectrum): ``faiss-ivf`` (``4 sqrt(n)`` lists,
   ``nprobe`` 32) and ``faiss-hnsw`` (32 links, ``efSearch`` 128) as the engine builds them,
   their recall@10 on 2,000 query rows against exact search (``IndexFlatIP``), build and
   search times, and the time an exact all-pairs search of every row would take, extrapolated
   from the queries. The recall at 1.28 M rows: ``--recall-n 1280000``.
3. **Uniformity on a subsample**: the estimate, its standard error and the exact value.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _common import arguments  # noqa: E402


def clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Unit rows like embeddings: around 1,000 random centres (spread as wide as the centres),
    then scaled by a power-law spectrum (column j by j^-1/2, as trained features decay)."""
    from distillscope.metrics.neighbours import unit_rows

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, d)).astype(np.float32)
    rows = centres[rng.integers(0, 1000, n)]
    rows += rng.standard_normal((n, d), dtype=np.float32)
    rows *= (np.arange(1, d + 1) ** -0.5).astype(np.float32)
    return unit_rows(rows, np.float32)


def exact_two_ways(n: int, d: int) -> None:
    from distillscope.metrics.neighbours import similarity_pass
    from distillscope.metrics.search import index_neighbours

    unit = clustered(n, d, seed=1)
    t = time.perf_counter()
    exact = similarity_pass(unit, knn=10)["knn"]
    base = time.perf_counter() - t
    t = time.perf_counter()
    found = index_neighbours(unit, 10, "faiss")
    fast = time.perf_counter() - t
    same = np.mean([set(a) == set(b) for a, b in zip(exact, found)])
    print(f"exact neighbours, n = {n}, d = {d}, k = 10:")
    print(f"  engine's similarity pass (baseline) {base:7.2f} s  1.00x")
    print(f"  faiss IndexFlatIP                   {fast:7.2f} s  {fast / base:.2f}x   "
          f"identical neighbour sets: {100 * same:.2f}% of rows")


def approximate(n: int, d: int, queries: int = 2000) -> None:
    import faiss

    from distillscope.metrics.search import build_index, recall

    unit = clustered(n, d, seed=2)
    ask = np.random.default_rng(3).choice(n, min(queries, n), replace=False)
    flat = faiss.IndexFlatIP(d)
    flat.add(unit)
    t = time.perf_counter()
    _, exact = flat.search(unit[ask], 11)
    per_query = (time.perf_counter() - t) / ask.size
    print(f"approximate indexes, n = {n}, d = {d}, recall@10 on {ask.size} queries "
          f"(exact all-pairs search of every row: {per_query * n:.0f} s here, extrapolated):")
    for kind in ("faiss-ivf", "faiss-hnsw"):
        t = time.perf_counter()
        index = build_index(kind, unit)
        built = time.perf_counter() - t
        t = time.perf_counter()
        _, found = index.search(unit[ask], 11)
        searched = time.perf_counter() - t
        print(f"  {kind:<11} recall {recall(found[:, 1:], exact[:, 1:]):.4f}  build {built:6.1f} s  "
              f"search {1e3 * searched / ask.size:.3f} ms/query "
              f"(all rows: {searched / ask.size * n:.0f} s)")


def uniformity_subsample(n: int, d: int, m: int) -> None:
    from distillscope.metrics.neighbours import uniformity
    from distillscope.metrics.search import subsample_exp_mean

    unit = clustered(n, d, seed=4)
    t = time.perf_counter()
    exact = uniformity(unit)
    base = time.perf_counter() - t
    t = time.perf_counter()
    estimate = subsample_exp_mean(unit, 2.0, m)
    sub = time.perf_counter() - t
    value = math.log(estimate.mean)
    se = estimate.standard_error / estimate.mean
    print(f"uniformity, n = {n}, d = {d}: exact {exact:.5f} in {base:.2f} s (baseline); "
          f"subsample of {m}: {value:.5f} +- {se:.5f} in {sub:.2f} s ({sub / base:.2f}x), "
          f"{(value - exact) / se:+.2f} standard errors from the exact value")


def main(argv=None) -> int:
    parser = arguments(__doc__.splitlines()[0], repeats=1)
    parser.add_argument("--n", type=int, default=20000, help="rows of the exact comparison")
    parser.add_argument("--recall-n", type=int, default=200000, help="rows of the recall run")
    parser.add_argument("--dim", type=int, default=64, help="width of the recall run")
    args = parser.parse_args(argv)
    try:
        import faiss  # noqa: F401
    except ImportError:
        print("faiss is not installed: pip install -e '.[faiss]'")
        return 0
    n, recall_n = (2000, 5000) if args.quick else (args.n, args.recall_n)
    exact_two_ways(n, 768)
    approximate(recall_n, args.dim)
    uniformity_subsample(n, 768, n // 4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
