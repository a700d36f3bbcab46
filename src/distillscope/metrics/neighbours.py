"""Sample-level metrics: neighbour lists, mutual kNN, uniformity, InfoNCE, the kNN vote.

These need the samples themselves, not their moments. ``Samples`` holds the pooled rows of one
representation (``n x d``) and computes, in **one blocked similarity pass** over the upper tiles
of its cosine-similarity matrix (a BLAS GEMM per ``tile x tile`` block, then a numba kernel that
reads the block once for its rows and once, transposed in place, for its columns), every product
asked of it: the k nearest neighbours of every sample (mutual kNN), the sum of
``exp(-t ||u_i - u_j||^2)`` over all pairs (uniformity), and the nearest training samples of
every test sample (kNN accuracy). A teacher's pass is done once and shared by every student.
Never an ``n x n`` matrix. Similarities are float32 for float16/32 features, float64 for
float64 ones (mean-pooled maps).

Memory: the rows and their unit-normalised copy (``2 n d`` values) and ``n k`` neighbour
lists; this is the one family whose memory grows with n (``docs/performance.md``).
Definitions: ``docs/metrics.md`` section 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .._errors import InputError
from .dimensionality import check_matrix
from .registry import REPRESENTATION, TEACHER_STUDENT, metric

__all__ = ["Samples", "unit_rows", "mutual_knn", "uniformity", "infonce", "cross_neighbours",
           "knn_vote", "KNN_K"]

#: neighbours per sample for mutual kNN and the kNN vote
KNN_K = 10
_TINY_NORM = 1e-12  # torch.nn.functional.normalize's eps: a zero row stays zero


def unit_rows(z: np.ndarray, dtype) -> np.ndarray:
    """Rows divided by their norm (``max(||z||, 1e-12)``), as a new array of ``dtype``."""
    z = np.array(z, dtype=dtype, copy=True)
    norms = np.sqrt(np.einsum("ij,ij->i", z, z))
    z /= np.maximum(norms, _TINY_NORM)[:, None]
    return z


def _tile(n: int, dtype, tile: int | None) -> int:
    # 1 MiB tiles (512 x 512 float32) stay in the core's cache between the BLAS call that writes
    # them and the kernel that reads them (docs/performance.md)
    return int(tile or max(16, min(n, int(np.sqrt((1 << 20) / np.dtype(dtype).itemsize)))))


class Samples:
    """The pooled rows of one representation, in memory, and their similarity products.

    Parameters
    ----------
    values : array_like (n, d)
        float16/32/64 rows; kept as float32 (float64 when given float64).

    Notes
    -----
    Products are computed by one pass, on first use, for everything ``request``-ed before:
    ``neighbours(k)``, ``exp_sum(t)`` and ``train_neighbours(k)`` (with ``split``).
    """

    def __init__(self, values):
        values = check_matrix(values, "Z")
        self.values = values.astype(np.promote_types(values.dtype, np.float32), copy=False)
        self.dtype = np.float64 if self.values.dtype == np.float64 else np.float32
        self._wanted: dict = {"knn": 0, "exp": set(), "train": 0}
        self._train_split: tuple[np.ndarray, np.ndarray] | None = None
        self._products: dict | None = None
        self._unit: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.values.shape[0]

    def unit(self) -> np.ndarray:
        """The unit-normalised rows in the similarity dtype (cached)."""
        if self._unit is None:
            self._unit = unit_rows(self.values, self.dtype)
        return self._unit

    def request(self, *, knn: int = 0, exp_t: float | None = None, train_knn: int = 0,
                split: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Ask for products of the coming pass (before the first one is read)."""
        if self._products is not None:
            raise InputError("Samples: request every product before reading the first one")
        self._wanted["knn"] = max(self._wanted["knn"], int(knn))
        if exp_t is not None:
            self._wanted["exp"].add(float(exp_t))
        if train_knn:
            if split is None:
                raise InputError("train_knn needs split=(train_mask, test_mask)")
            self._wanted["train"] = max(self._wanted["train"], int(train_knn))
            self._train_split = split

    def neighbours(self, k: int) -> np.ndarray:
        """``(n, k)`` indices of every row's k most similar other rows (ties: lower index)."""
        if self._products is None:
            self.request(knn=k)
        lists = self._read("knn")
        if lists.shape[1] < k:
            raise InputError(f"neighbours({k}) was not requested before the pass")
        return lists[:, :k]

    def exp_sum(self, t: float) -> float:
        """``sum_{i != j} exp(-t ||u_i - u_j||^2)`` over ordered pairs of unit rows."""
        if self._products is None:
            self.request(exp_t=t)
        return self._read("exp")[float(t)]

    def train_neighbours(self, k: int, split: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """For each test row (``split[1]``), the indices of its k most similar train rows."""
        if self._products is None:
            self.request(train_knn=k, split=split)
        return self._read("train")[:, :k]

    def _read(self, name: str):
        if self._products is None:
            self._products = similarity_pass(self.unit(), knn=self._wanted["knn"],
                                             exp_t=sorted(self._wanted["exp"]),
                                             train_knn=self._wanted["train"],
                                             split=self._train_split)
        return self._products[name]


def similarity_pass(unit: np.ndarray, *, knn: int = 0, exp_t=(), train_knn: int = 0,
                    split: tuple[np.ndarray, np.ndarray] | None = None,
                    tile: int | None = None) -> dict:
    """One blocked pass over the upper tiles of ``unit @ unit.T``; see ``Samples``."""
    from .._kernels import topk_masked, topk_tile

    n = unit.shape[0]
    tile = _tile(n, unit.dtype, tile)
    lists = _Lists(n, knn, unit.dtype)
    exp_total = {t: 0.0 for t in exp_t}
    train = None
    if train_knn:
        train_mask, test_mask = split
        role = np.full(n, -2, np.int64)  # test rows own lists, train rows are candidates
        role[train_mask] = -1
        role[test_mask] = np.arange(int(np.count_nonzero(test_mask)))
        train = (_Lists(int(np.count_nonzero(test_mask)), train_knn, unit.dtype), role)
    sims_buffer = np.empty((tile, tile), unit.dtype)
    scratch = np.empty((tile, tile), unit.dtype)
    threshold = np.empty(tile, unit.dtype)
    for a in range(0, n, tile):
        rows = unit[a:a + tile]
        for b in range(a, n, tile):
            cols = unit[b:b + tile]
            sims = sims_buffer[: rows.shape[0], : cols.shape[0]]
            np.matmul(rows, cols.T, out=sims)
            if knn:
                topk_tile(sims, a, b, lists.idx, lists.val, lists.filled, threshold, b > a)
            if train is not None:
                topk_masked(sims, a, b, train[1], train[0].idx, train[0].val, train[0].filled,
                            b > a)
            for t in exp_total:
                exp_total[t] += _exp_tile_sum(sims, scratch, t, diagonal=a == b) * (
                    1.0 if a == b else 2.0)
    return {"knn": lists.idx, "exp": exp_total,
            "train": None if train is None else train[0].idx}


class _Lists:
    """Running top-k lists of ``n`` owners: indices, values, how many are filled."""

    def __init__(self, n: int, k: int, dtype):
        self.idx = np.empty((n, k), np.int64)
        self.val = np.empty((n, k), dtype)
        self.filled = np.zeros(n, np.int64)


def _exp_tile_sum(sims: np.ndarray, scratch: np.ndarray, t: float, *, diagonal: bool) -> float:
    """``sum exp(-t max(2 - 2 s, 0))`` over a tile (its diagonal left out), summed in float64.

    ``||u - v||^2 = 2 - 2 u.v`` for unit rows; numpy's vectorised exp does the work.
    """
    work = scratch[: sims.shape[0], : sims.shape[1]]
    np.multiply(sims, 2.0 * t, out=work)
    np.subtract(work, 2.0 * t, out=work)
    np.minimum(work, 0.0, out=work)
    np.exp(work, out=work)
    if diagonal:
        np.fill_diagonal(work, 0.0)
    return float(work.sum(dtype=np.float64))


def cross_neighbours(query: np.ndarray, reference: np.ndarray, k: int,
                     tile: int | None = None) -> np.ndarray:
    """For each query row, the indices of its k most similar reference rows (unit rows given;
    two different sets: no self exclusion). Ties go to the lower index."""
    from .._kernels import topk_tile

    m = query.shape[0]
    tile = _tile(max(m, reference.shape[0]), query.dtype, tile)
    lists = _Lists(m, k, query.dtype)
    sims_buffer = np.empty((tile, tile), query.dtype)
    threshold = np.empty(tile, query.dtype)
    offset = reference.shape[0] + m  # column ids never equal a row id: nothing is "self"
    for a in range(0, m, tile):
        rows = query[a:a + tile]
        for b in range(0, reference.shape[0], tile):
            cols = reference[b:b + tile]
            sims = sims_buffer[: rows.shape[0], : cols.shape[0]]
            np.matmul(rows, cols.T, out=sims)
            topk_tile(sims, a, offset + b, lists.idx, lists.val, lists.filled, threshold, False)
    return lists.idx - offset


def knn_vote(neighbours: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The majority label among each row's neighbours (ties to the smallest label, as
    scikit-learn's ``KNeighborsClassifier``)."""
    classes, codes = np.unique(labels, return_inverse=True)
    votes = np.zeros((neighbours.shape[0], classes.size), np.int64)
    np.add.at(votes, (np.repeat(np.arange(neighbours.shape[0]), neighbours.shape[1]),
                      codes[neighbours.ravel()]), 1)
    return classes[np.argmax(votes, axis=1)]


def _samples(z) -> Samples:
    return z if isinstance(z, Samples) else Samples(z)


def _check_same_samples(x: Samples, y: Samples) -> None:
    if x.n != y.n:
        raise InputError(f"X and Y must hold the same samples in the same order; got {x.n} "
                         f"and {y.n} rows")


# ------------------------------------------------------------------------------- mutual kNN
@metric("mutual_knn", long_name="mutual k-NN alignment", units="1", takes=TEACHER_STUDENT,
        statistic="samples", anchor="mutual-knn", source="Huh et al., arXiv 2405.07987",
        params={"k": KNN_K}, needs=lambda k: {"knn": k}, tables={"alignment": "mutual kNN"},
        compute=lambda sx, sy, k: mutual_knn(sx, sy, k=min(k, sx.n - 1))[0],
        definition=f"mean |kNN_X(i) & kNN_Y(i)| / k, cosine, self excluded, k = {KNN_K}; "
                   "Huh et al., arXiv 2405.07987")
def mutual_knn(x, y, *, k: int = KNN_K, tile: int | None = None) -> tuple[float, float]:
    """Mutual k-nearest-neighbour alignment and its chance level.

    For each sample i, ``|kNN_X(i) & kNN_Y(i)| / k`` with neighbours by cosine similarity, i
    itself excluded, averaged over i (Huh et al., "The platonic representation hypothesis",
    ICML 2024, arXiv 2405.07987). Each side's neighbour lists come from its own similarity pass
    (``Samples``; shared when one side is compared with several others). Ties go to the lower
    index.

    Parameters
    ----------
    x, y : array_like (n, d1), (n, d2), or ``Samples``

    Returns
    -------
    (score, chance) with chance = ``k / (n - 1)``.
    """
    from .._kernels import knn_overlap

    sx, sy = _samples(x), _samples(y)
    _check_same_samples(sx, sy)
    n, k = sx.n, int(k)
    if not 1 <= k < n:
        raise InputError(f"k must lie in 1..n-1 = {n - 1}; got {k}")
    if tile is not None:
        lists = [similarity_pass(s.unit(), knn=k, tile=tile)["knn"] for s in (sx, sy)]
    else:
        lists = [s.neighbours(k) for s in (sx, sy)]
    return knn_overlap(np.ascontiguousarray(lists[0]), np.ascontiguousarray(lists[1])) / (n * k), \
        k / (n - 1)


# ------------------------------------------------------------------------------- uniformity
def _uniformity_needs(t, batch_size, include_diagonal) -> dict:
    return {} if batch_size else {"exp_t": t}


@metric("uniformity", long_name="uniformity", units="1", takes=REPRESENTATION,
        statistic="samples", anchor="uniformity", source="Wang & Isola, arXiv 2005.10242",
        params={"t": 2.0}, needs=_uniformity_needs,
        convention_params=lambda c: {"batch_size": c.uniformity_batch,
                                     "include_diagonal": c.uniformity_diagonal},
        definition="ln mean exp(-2 ||z_i - z_j||^2) of L2-normalised embeddings, over all pairs "
                   "i != j, or per consecutive batch (mean over batches) as the convention "
                   "says; Wang & Isola, arXiv 2005.10242")
def uniformity(z, *, t: float = 2.0, include_diagonal: bool = False,
               batch_size: int | None = None) -> float:
    r"""Uniformity of L2-normalised embeddings, :math:`\ln \mathrm{mean}\, e^{-t \lVert z_i - z_j \rVert^2}`.

    Over all pairs i != j by default (Wang & Isola, ICML 2020, arXiv 2005.10242), from the
    similarity pass of ``Samples`` (float32 similarities for float16/32 features). With
    ``batch_size``, the mean of the per-batch values over consecutive batches, in float64;
    arXiv 2603.06698 uses batches of 64 with the diagonal included. Lower is more uniform.
    """
    s = _samples(z)
    n = s.n
    if batch_size:
        unit = unit_rows(s.values, np.float64)
        per_batch = []
        for start in range(0, n, batch_size):
            zb = unit[start:start + batch_size]
            m = zb.shape[0]
            e = np.exp(-t * np.maximum(2.0 - 2.0 * zb @ zb.T, 0.0))
            if not include_diagonal:
                np.fill_diagonal(e, 0.0)
            pairs = m * m if include_diagonal else m * (m - 1)
            if pairs:
                per_batch.append(math.log(e.sum() / pairs))
        return float(np.mean(per_batch))
    if n < 2 and not include_diagonal:
        raise InputError("uniformity over pairs i != j needs at least 2 samples")
    total = s.exp_sum(t) + (n if include_diagonal else 0.0)
    pairs = n * n if include_diagonal else n * (n - 1)
    return float(math.log(total / pairs))


# ---------------------------------------------------------------------------------- InfoNCE
def _infonce_part(part: int) -> Callable:
    def compute(teacher, student, tau, batch_size, reduction):
        return infonce(student, teacher, tau=tau, batch_size=batch_size, reduction=reduction)[part]

    return compute


def _infonce_conv(c) -> dict:
    return {"tau": c.infonce_tau, "batch_size": c.infonce_batch, "reduction": c.infonce_reduction}


@metric("infonce_loss", long_name="InfoNCE loss", units="nat", takes=TEACHER_STUDENT,
        statistic="samples", anchor="infonce", source="van den Oord et al., arXiv 1807.03748",
        compute=_infonce_part(0), convention_params=_infonce_conv,
        definition="-mean ln softmax_j(cos(s_i, t_j) / tau)_ii over consecutive batches; "
                   "student and teacher in one space only")
def infonce(student, teacher, *, tau: float = 0.1, batch_size: int = 64,
            reduction: str = "sample") -> tuple[float, float]:
    r"""InfoNCE loss of students against teachers and its mutual-information bound (nats).

    Over consecutive batches of ``batch_size`` rows (the last may be short):
    :math:`\ell_i = -\ln \mathrm{softmax}_j(\cos(s_i, t_j) / \tau)_{ii}`, student rows scored
    against the batch's teacher columns. ``reduction="sample"`` averages :math:`\ell_i` over all
    samples (van den Oord et al., arXiv 1807.03748); ``"batch"`` averages the per-batch means,
    the last short batch counting as one (arXiv 2603.06698). The bound is
    :math:`\ln B - L` averaged the same way (``<= ln B``). Student and teacher must share one
    space (equal widths).

    Returns
    -------
    (loss, mi_bound)
    """
    s, t = _samples(student), _samples(teacher)
    _check_same_samples(s, t)
    if s.values.shape[1] != t.values.shape[1]:
        raise InputError(f"InfoNCE compares student and teacher in one space; got widths "
                         f"{s.values.shape[1]} and {t.values.shape[1]}")
    if reduction not in ("sample", "batch"):
        raise InputError(f"reduction must be 'sample' or 'batch'; got {reduction!r}")
    if tau <= 0 or batch_size < 2:
        raise InputError(f"tau must be > 0 and batch_size >= 2; got {tau}, {batch_size}")
    us, ut = unit_rows(s.values, np.float64), unit_rows(t.values, np.float64)
    losses, bounds, weights = [], [], []
    for start in range(0, s.n, batch_size):
        stop = min(s.n, start + batch_size)
        logits = us[start:stop] @ ut[start:stop].T / tau
        top = logits.max(axis=1, keepdims=True)
        lse = (top[:, 0] + np.log(np.exp(logits - top).sum(axis=1)))
        loss = float(np.mean(lse - np.diag(logits)))
        losses.append(loss)
        bounds.append(math.log(stop - start) - loss)
        weights.append(stop - start if reduction == "sample" else 1)
    return float(np.average(losses, weights=weights)), float(np.average(bounds, weights=weights))


metric("infonce_mi_bound", long_name="InfoNCE mutual-information bound", units="nat",
       takes=TEACHER_STUDENT, statistic="samples", anchor="infonce",
       source="van den Oord et al., arXiv 1807.03748", compute=_infonce_part(1),
       convention_params=_infonce_conv,
       definition="ln B - L (<= ln B); van den Oord et al., arXiv 1807.03748")(infonce)
