"""Neighbour search and pair sums at large n: faiss indexes, and uniformity on a subsample.

Mutual kNN, kNN accuracy and uniformity cost ``n^2 d`` when done exactly (``neighbours.py``'s
similarity pass): minutes at ImageNet-val's 50,000 samples, years at 1.28 M. Two ways out,
both asked for explicitly (``analyze --neighbours``, ``--uniformity-samples``):

* **faiss** (Johnson, Douze & Jegou, "Billion-scale similarity search with GPUs", arXiv
  1702.08734; ``pip install faiss-cpu``) finds the k nearest rows by inner product of the unit
  rows, which is cosine similarity: ``flat`` (``IndexFlatIP``) is exact, the same neighbour sets
  as the engine's pass but for ties, on a GPU when faiss sees one; ``ivf`` (``IndexIVFFlat``,
  ``4 sqrt(n)`` lists, ``nprobe`` 32) and ``hnsw`` (``IndexHNSWFlat``, 32 links, ``efSearch``
  128) are approximate, their recall against the exact lists measured by
  ``benchmarks/bench_neighbours.py`` and stated in ``docs/scaling.md``.
* **Uniformity on a seeded subsample** of ``m`` rows when ``n > m``: the mean of
  ``exp(-t ||u_i - u_j||^2)`` over the ordered pairs ``i != j`` of a simple random sample
  without replacement is a U-statistic, an unbiased estimator of the same mean over all pairs
  of the ``n`` rows (Hoeffding 1948); uniformity is its logarithm. Its standard error is
  Hoeffding's first-order one, ``sqrt((1 - m/n) 4 var(h_i) / m)`` with ``h_i`` the mean kernel of
  row ``i`` against the others, carried to the logarithm by the delta method (divided by the
  mean). Cost ``m^2 d``, memory ``m d``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .._errors import InputError

__all__ = ["INDEXES", "Estimate", "build_index", "index_neighbours", "index_cross_neighbours",
           "recall", "subsample_exp_mean"]

#: ``analyze --neighbours``: the engine's exact pass, or a faiss index
INDEXES = ("exact", "faiss", "faiss-ivf", "faiss-hnsw")
IVF_NPROBE = 32
HNSW_LINKS, HNSW_EF_SEARCH, HNSW_EF_CONSTRUCTION = 32, 128, 80


class Estimate(float):
    """A value estimated on a subsample: a float, with its standard error and sample size."""

    standard_error: float
    size: int

    def __new__(cls, value: float, standard_error: float, size: int) -> "Estimate":
        out = super().__new__(cls, value)
        out.standard_error, out.size = float(standard_error), int(size)
        return out


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError("--neighbours faiss needs faiss: pip install -e '.[faiss]' "
                         "(or pip install faiss-cpu)") from None
    return faiss


def build_index(kind: str, rows: np.ndarray, seed: int = 0):
    """A faiss index of ``rows`` (unit float32 rows), inner product."""
    faiss = _faiss()
    n, d = rows.shape
    if kind == "faiss":
        index = faiss.IndexFlatIP(d)
        if hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0:  # pragma: no cover
            index = faiss.index_cpu_to_all_gpus(index)
    elif kind == "faiss-ivf":
        lists = max(1, min(n // 39, int(4 * math.sqrt(n))))  # faiss wants >= 39 rows per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
        train = rows[np.random.default_rng(seed).permutation(n)[:256 * lists]]
        index.train(np.ascontiguousarray(train))
        index.nprobe = min(IVF_NPROBE, lists)
    elif kind == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise InputError(f"neighbours must be one of {', '.join(INDEXES)}; got {kind!r}")
    index.add(np.ascontiguousarray(rows))
    return index


def _as_float32(unit: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(unit, dtype=np.float32)


def index_neighbours(unit: np.ndarray, k: int, kind: str = "faiss") -> np.ndarray:
    """``(n, k)`` indices of every unit row's k most similar other rows, by a faiss index.

    The index is asked for ``k + 1`` neighbours and each row's own index removed (or, when a
    duplicate row displaced it, the last neighbour). Rows tied in similarity may come in
    another order than the exact pass's (lower index first).
    """
    rows = _as_float32(unit)
    n = rows.shape[0]
    if not 1 <= k < n:
        raise InputError(f"k must lie in 1..n-1 = {n - 1}; got {k}")
    _, found = build_index(kind, rows).search(rows, k + 1)
    own = found == np.arange(n)[:, None]
    keep = ~own
    keep[~own.any(axis=1), k] = False  # self not found: drop the (k+1)-th
    return found[keep].reshape(n, k).astype(np.int64)


def index_cross_neighbours(query: np.ndarray, reference: np.ndarray, k: int,
                           kind: str = "faiss") -> np.ndarray:
    """For each query row, the indices of its k most similar reference rows (faiss)."""
    _, found = build_index(kind, _as_float32(reference)).search(_as_float32(query), k)
    return found.astype(np.int64)


def recall(approximate: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact neighbours an approximate search found (``|A_i & E_i| / k``,
    averaged over the rows)."""
    from .._kernels import knn_overlap

    n, k = exact.shape
    return knn_overlap(np.ascontiguousarray(approximate), np.ascontiguousarray(exact)) / (n * k)


@dataclass(frozen=True)
class SubsampleMean:
    """The mean kernel over the pairs of a subsample, its standard error and the size."""

    mean: float
    standard_error: float
    size: int


def subsample_exp_mean(unit: np.ndarray, t: float, size: int, seed: int = 0) -> SubsampleMean:
    """Unbiased estimate of ``mean_{i != j} exp(-t ||u_i - u_j||^2)`` over all ordered pairs of
    the ``n`` unit rows, from ``size`` rows drawn without replacement (seeded); see the module
    docstring for the estimator and its standard error. Blocked: never an ``m x m`` matrix."""
    n = unit.shape[0]
    if size < 2:
        raise InputError(f"the uniformity subsample needs at least 2 samples; got {size}")
    m = min(int(size), n)
    chosen = np.sort(np.random.default_rng(seed).choice(n, m, replace=False))
    rows = np.asarray(unit[chosen], dtype=np.float64)
    block = max(1, min(1024, (1 << 23) // m))  # blocks of at most 64 MiB
    row_sums = np.zeros(m)
    for a in range(0, m, block):
        sims = rows[a:a + block] @ rows.T
        kernel = np.exp(-t * np.maximum(2.0 - 2.0 * sims, 0.0))
        kernel[np.arange(kernel.shape[0]), a + np.arange(kernel.shape[0])] = 0.0
        row_sums[a:a + block] = kernel.sum(axis=1)
    h = row_sums / (m - 1)
    mean = float(h.mean())
    variance = (1.0 - m / n) * 4.0 * float(h.var(ddof=1)) / m if m > 2 else 0.0
    return SubsampleMean(mean, math.sqrt(max(variance, 0.0)), m)
