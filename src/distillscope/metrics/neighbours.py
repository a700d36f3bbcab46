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
from contextlib import contextmanager

import numpy as np

from .._errors import InputError
from .dimensionality import check_matrix
from .registry import REPRESENTATION, TEACHER_STUDENT, metric
from .topk import TopLists, cross_neighbours, tile_size

__all__ = ["Samples", "unit_rows", "mutual_knn", "uniformity", "infonce", "cosine_alignment",
           "cross_neighbours", "knn_vote", "KNN_K"]

#: neighbours per sample for mutual kNN and the kNN vote
KNN_K = 10
_TINY_NORM = 1e-12  # torch.nn.functional.normalize's eps: a zero row stays zero


def unit_rows(z: np.ndarray, dtype, out: np.ndarray | None = None) -> np.ndarray:
    """Rows divided by their norm (``max(||z||, 1e-12)``, in float64), as ``dtype``, into
    ``out`` when given; one numba pass (``_kernels.unit_rows_into``)."""
    from .._kernels import jit_enabled, unit_rows_into
    from .._scratch import POOL, cast_into

    z = np.asarray(z)
    out = np.empty(z.shape, dtype=dtype) if out is None else out
    if not jit_enabled():  # the same arithmetic in numpy, for speed without the JIT
        wide = z.astype(np.float64)
        scale = 1.0 / np.maximum(np.sqrt(np.einsum("ij,ij->i", wide, wide)), _TINY_NORM)
        np.multiply(wide, scale[:, None], out=out, casting="unsafe")
        return out
    if z.dtype == np.float16:  # widened (exactly) through a buffer of the pool
        wide = POOL.take(z.shape, np.float32)
        try:
            cast_into(z, wide)
            unit_rows_into(wide, out)
        finally:
            POOL.give(wide)
        return out
    unit_rows_into(np.ascontiguousarray(z), out)
    return out


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
        self.held = check_matrix(values, "Z")  # as given: float16 rows stay float16
        self.dtype = np.float64 if self.held.dtype == np.float64 else np.float32
        self._values: np.ndarray | None = None
        self._wanted: dict = {"knn": 0, "exp": set(), "train": 0}
        self._train_split: tuple[np.ndarray, np.ndarray] | None = None
        self._products: dict | None = None
        self._derived: dict = {}
        self.index = "exact"  # or a faiss index (metrics.search.INDEXES)
        self.uniformity_samples: int | None = None  # above it, uniformity on a subsample
        self.seed = 0
        self.estimates: dict[float, object] = {}  # t -> search.SubsampleMean

    def configure(self, *, index: str = "exact", uniformity_samples: int | None = None,
                  seed: int = 0) -> None:
        """How the products are found at large n (``metrics.search``): neighbours by a faiss
        ``index`` instead of the exact pass, and the uniformity's pair sum on a seeded
        subsample of ``uniformity_samples`` rows when there are more."""
        self.index, self.uniformity_samples, self.seed = index, uniformity_samples, int(seed)

    def cached(self, key, compute):
        """``compute()`` once: what is derived from these rows (with others, say) is shared by
        every metric and pair that reads it."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    @property
    def n(self) -> int:
        return self.held.shape[0]

    @property
    def values(self) -> np.ndarray:
        """The rows as float32 (float64 when given float64), exactly (cached)."""
        if self._values is None:
            from .._scratch import widen_float16

            self._values = widen_float16(self.held).astype(self.dtype, copy=False)
        return self._values

    @contextmanager
    def unit(self):
        """The unit-normalised rows in the similarity dtype, in a buffer of the pool (given
        back on leaving the ``with`` block: ``2 n d`` bytes are not held between uses)."""
        from .._scratch import POOL

        out = POOL.take(self.held.shape, self.dtype)
        try:
            yield unit_rows(self.held, self.dtype, out)
        finally:
            POOL.give(out)

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
        """``sum_{i != j} exp(-t ||u_i - u_j||^2)`` over ordered pairs of unit rows (on a
        subsample, ``n (n - 1)`` times its unbiased mean; ``estimates[t]`` says so)."""
        if self._products is None:
            self.request(exp_t=t)
        return self._read("exp")[float(t)]

    def train_neighbours(self, k: int, split: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """For each test row (``split[1]``), the indices of its k most similar train rows."""
        if self._products is None:
            self.request(train_knn=k, split=split)
        return self._read("train")[:, :k]

    def compute(self) -> None:
        """Run the similarity pass now for what was requested (else at the first read)."""
        if self._products is None and (self._wanted["knn"] or self._wanted["exp"]
                                       or self._wanted["train"]):
            self._read("knn")

    @property
    def subsampled(self) -> bool:
        """Whether the uniformity's pair sum is estimated on a subsample."""
        return self.uniformity_samples is not None and self.n > self.uniformity_samples

    def _read(self, name: str):
        if self._products is None:
            exact = self.index == "exact"
            wanted = {"knn": self._wanted["knn"] if exact else 0,
                      "exp_t": () if self.subsampled else sorted(self._wanted["exp"]),
                      "train_knn": self._wanted["train"] if exact else 0}
            with self.unit() as unit:
                products = (similarity_pass(unit, **wanted, split=self._train_split)
                            if any(wanted.values()) else {"knn": None, "exp": {}, "train": None})
                self._search(unit, products)
            self._products = products
        return self._products[name]

    def _search(self, unit: np.ndarray, products: dict) -> None:
        """The products the exact pass was not asked for (``configure``)."""
        from . import search

        if self.index != "exact" and self._wanted["knn"]:
            products["knn"] = search.index_neighbours(unit, self._wanted["knn"], self.index)
        if self.index != "exact" and self._wanted["train"]:
            train, test = self._train_split
            found = search.index_cross_neighbours(unit[test], unit[train],
                                                  self._wanted["train"], self.index)
            products["train"] = np.flatnonzero(train)[found]
        if self.subsampled:
            n = self.n
            for t in sorted(self._wanted["exp"]):
                estimate = search.subsample_exp_mean(unit, t, self.uniformity_samples, self.seed)
                self.estimates[t] = estimate
                products["exp"][t] = estimate.mean * n * (n - 1)


def similarity_pass(unit: np.ndarray, *, knn: int = 0, exp_t=(), train_knn: int = 0,
                    split: tuple[np.ndarray, np.ndarray] | None = None,
                    tile: int | None = None) -> dict:
    """One blocked pass over the upper tiles of ``unit @ unit.T``; see ``Samples``.

    Each tile is formed once (BLAS) and read once by ``_kernels.scan_tile``, which sums the
    uniformity's exponentials and marks the entries that may enter a neighbour list; the marked
    ones go to the lists' insertion kernel. The diagonal tiles come first: every list fills up
    within its own block (``_kernels.offer_tile``), so that later tiles need only the marks.
    """
    from .._kernels import exp_sum_tile, scan_tile

    n = unit.shape[0]
    tile = tile_size(n, unit.dtype, tile)
    everyone = np.arange(n)
    lists = TopLists(everyone, everyone, knn, unit.dtype) if knn else None
    exp_t = sorted(float(t) for t in exp_t)
    exp_total = {t: 0.0 for t in exp_t}
    train = None
    if train_knn:  # test samples own lists, train samples are their candidates
        train_mask, test_mask = split
        slot = np.full(n, -1, np.int64)
        slot[test_mask] = np.arange(int(np.count_nonzero(test_mask)))
        train = TopLists(slot, np.where(train_mask, everyone, -1), train_knn, unit.dtype)
    sims_buffer = np.empty((tile, tile), unit.dtype)
    hits_buffer = np.empty((tile, tile), np.bool_)
    never = np.full(tile, np.inf, unit.dtype)
    order = [(a, a) for a in range(0, n, tile)] + [(a, b) for a in range(0, n, tile)
                                                   for b in range(a + tile, n, tile)]
    for a, b in order:
        rows, cols = unit[a:a + tile], unit[b:b + tile]
        sims = sims_buffer[: rows.shape[0], : cols.shape[0]]
        np.matmul(rows, cols.T, out=sims)
        weight = 1.0 if a == b else 2.0  # an upper tile stands for its mirror too
        row_kth, col_kth, filled_rows = never[: sims.shape[0]], never[: sims.shape[1]], False
        if lists is not None:
            row_kth, filled_rows = lists.fill_or_threshold(sims, a, b)
            col_kth = lists.threshold(b, b + sims.shape[1]) if b > a else col_kth
        if lists is not None or exp_t:
            hits = hits_buffer[: sims.shape[0], : sims.shape[1]]
            two_t = 2.0 * exp_t[0] if exp_t else 0.0
            total = scan_tile(sims, row_kth, col_kth, two_t, a == b, hits)
            if exp_t:
                exp_total[exp_t[0]] += total * weight
            if lists is not None:
                lists.offer_marked(sims, hits, a, b, rows=not filled_rows, columns=b > a)
        for t in exp_t[1:]:  # ||u - v||^2 = 2 - 2 u.v for unit rows
            exp_total[t] += exp_sum_tile(sims, 2.0 * t, a == b) * weight
        if train is not None:
            train.offer(sims, a, b, columns=b > a)
    return {"knn": None if lists is None else lists.idx, "exp": exp_total,
            "train": None if train is None else train.idx}


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
        lists = []
        for side in (sx, sy):
            with side.unit() as unit:
                lists.append(similarity_pass(unit, knn=k, tile=tile)["knn"])
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
        unit = unit_rows(s.held, np.float64)
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
    if not 0 < t <= 8:
        raise InputError(f"uniformity over all pairs takes t in (0, 8]; got {t}")
    total = s.exp_sum(t) + (n if include_diagonal else 0.0)
    pairs = n * n if include_diagonal else n * (n - 1)
    value = float(math.log(total / pairs))
    estimate = s.estimates.get(float(t))
    if estimate is None:
        return value
    from .search import Estimate  # d ln(total) = d(mean) n (n - 1) / total (delta method)

    return Estimate(value, estimate.standard_error * n * (n - 1) / total, estimate.size)


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
    if s.held.shape[1] != t.held.shape[1]:
        raise InputError(f"InfoNCE compares student and teacher in one space; got widths "
                         f"{s.held.shape[1]} and {t.held.shape[1]}")
    if reduction not in ("sample", "batch"):
        raise InputError(f"reduction must be 'sample' or 'batch'; got {reduction!r}")
    if tau <= 0 or batch_size < 2:
        raise InputError(f"tau must be > 0 and batch_size >= 2; got {tau}, {batch_size}")
    us, ut = unit_rows(s.held, np.float64), unit_rows(t.held, np.float64)
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


@metric("cosine_alignment", long_name="mean cosine of paired student and teacher rows",
        units="1", takes=TEACHER_STUDENT, statistic="samples", anchor="cosine-alignment",
        source="arXiv 2603.06698's notebook, cell 3",
        convention_params=lambda c: {"batch_size": c.infonce_batch,
                                     "reduction": c.infonce_reduction},
        definition="mean cos(s_i, t_i) of each sample's student and teacher rows; same-space "
                   "pairs only; per-batch means averaged under reduction 'batch'")
def cosine_alignment(student, teacher, *, batch_size: int = 64, reduction: str = "sample") -> float:
    r"""Mean cosine between each sample's student and teacher rows, :math:`\mathrm{mean}_i
    \cos(s_i, t_i)` (the "alignment" the cosine distillation loss maximises).

    ``reduction="sample"`` averages over all samples; ``"batch"`` averages the means of
    consecutive batches of ``batch_size`` rows, the last short batch counting as one (arXiv
    2603.06698's notebook, cell 3). Student and teacher must share one space (equal widths).
    """
    s, t = _samples(student), _samples(teacher)
    _check_same_samples(s, t)
    if s.held.shape[1] != t.held.shape[1]:
        raise InputError(f"cosine_alignment compares student and teacher in one space; got "
                         f"widths {s.held.shape[1]} and {t.held.shape[1]}")
    if reduction not in ("sample", "batch") or batch_size < 1:
        raise InputError(f"reduction must be 'sample' or 'batch' and batch_size >= 1; got "
                         f"{reduction!r}, {batch_size}")
    cosines = np.einsum("ij,ij->i", unit_rows(s.held, np.float64), unit_rows(t.held, np.float64))
    if reduction == "sample":
        return float(np.mean(cosines))
    return float(np.mean([np.mean(cosines[i:i + batch_size])
                          for i in range(0, cosines.size, batch_size)]))


metric("infonce_mi_bound", long_name="InfoNCE mutual-information bound", units="nat",
       takes=TEACHER_STUDENT, statistic="samples", anchor="infonce",
       source="van den Oord et al., arXiv 1807.03748", compute=_infonce_part(1),
       convention_params=_infonce_conv,
       definition="ln B - L (<= ln B); van den Oord et al., arXiv 1807.03748")(infonce)
