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
        self.held = check_matrix(values, "Z")  # as given: float16 rows stay float16
        self.dtype = np.float64 if self.held.dtype == np.float64 else np.float32
        self._values: np.ndarray | None = None
        self._wanted: dict = {"knn": 0, "exp": set(), "train": 0}
        self._train_split: tuple[np.ndarray, np.ndarray] | None = None
        self._products: dict | None = None
        self._derived: dict = {}

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
        """``sum_{i != j} exp(-t ||u_i - u_j||^2)`` over ordered pairs of unit rows."""
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

    def _read(self, name: str):
        if self._products is None:
            with self.unit() as unit:
                self._products = similarity_pass(unit, knn=self._wanted["knn"],
                                                 exp_t=sorted(self._wanted["exp"]),
                                                 train_knn=self._wanted["train"],
                                                 split=self._train_split)
        return self._products[name]


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
    tile = _tile(n, unit.dtype, tile)
    everyone = np.arange(n)
    lists = _Lists(everyone, everyone, knn, unit.dtype) if knn else None
    exp_t = sorted(float(t) for t in exp_t)
    exp_total = {t: 0.0 for t in exp_t}
    train = None
    if train_knn:  # test samples own lists, train samples are their candidates
        train_mask, test_mask = split
        slot = np.full(n, -1, np.int64)
        slot[test_mask] = np.arange(int(np.count_nonzero(test_mask)))
        train = _Lists(slot, np.where(train_mask, everyone, -1), train_knn, unit.dtype)
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


class _Lists:
    """Running top-k lists, and how a tile of similarities is offered to them.

    ``owner_of[i]`` is the list sample ``i`` owns (negative: none); ``candidate_of[i]`` the index
    stored when sample ``i`` enters a list (negative: it is no one's candidate). A list never
    gets its own sample; ties go to the lower index, whatever the order of the tiles.
    """

    def __init__(self, owner_of: np.ndarray, candidate_of: np.ndarray, k: int, dtype):
        size = int(owner_of.max(initial=-1)) + 1
        self.roles = np.stack([owner_of, candidate_of]).astype(np.int64)
        self.k = k
        self.idx = np.empty((size, k), np.int64)
        self.val = np.empty((size, k), dtype)
        self.filled = np.zeros(size, np.int64)
        self.kth = np.full(size, -np.inf, dtype)  # each list's k-th best; -inf while filling
        self.lists = (self.idx, self.val, self.filled, self.kth)

    def threshold(self, lo: int, hi: int) -> np.ndarray:
        """The k-th best of the lists samples ``lo:hi`` own (+inf for samples owning none)."""
        owner = self.roles[0, lo:hi]
        return np.where(owner >= 0, self.kth[np.maximum(owner, 0)], np.inf).astype(self.kth.dtype)

    def fill_or_threshold(self, sims: np.ndarray, row0: int, col0: int) -> tuple[np.ndarray, bool]:
        """The rows' thresholds, and whether the rows were done: if some list is still filling,
        the tile's rows are offered every entry now (``_kernels.offer_tile``) and +inf is
        returned (nothing left to mark for them)."""
        from .._kernels import offer_tile

        kth = self.threshold(row0, row0 + sims.shape[0])
        if not np.isneginf(kth).any():
            return kth, False
        offer_tile(sims, row0, col0, self.roles, self.lists)
        return np.full_like(kth, np.inf), True

    def offer_marked(self, sims: np.ndarray, hits: np.ndarray, row0: int, col0: int, *,
                     rows: bool, columns: bool) -> None:
        """Offer the marked entries of a tile to their rows' lists (with ``rows``) and their
        columns' lists (with ``columns``), each checked against the list as it is now."""
        from .._kernels import offer_marked

        marked = np.flatnonzero(hits)  # numpy's 1-D flatnonzero is 7x its 2-D nonzero
        if marked.size:
            offer_marked(sims, marked, row0, col0, int(rows) | (2 * int(columns)), self.roles,
                         self.lists)

    def offer(self, sims: np.ndarray, row0: int, col0: int, *, columns: bool) -> None:
        """Offer a tile (rows ``row0..``, columns ``col0..``) to the rows' lists and, with
        ``columns`` (a tile above the diagonal), to the columns' lists."""
        row_kth, filled_rows = self.fill_or_threshold(sims, row0, col0)
        col_kth = (self.threshold(col0, col0 + sims.shape[1]) if columns
                   else np.full(sims.shape[1], np.inf, self.val.dtype))
        hits = (sims >= row_kth[:, None]) | (sims >= col_kth[None, :])
        self.offer_marked(sims, hits, row0, col0, rows=not filled_rows, columns=columns)


def cross_neighbours(query: np.ndarray, reference: np.ndarray, k: int,
                     tile: int | None = None) -> np.ndarray:
    """For each query row, the indices of its k most similar reference rows (unit rows given;
    two different sets: no self exclusion). Ties go to the lower index."""
    m, n_ref = query.shape[0], reference.shape[0]
    tile = _tile(max(m, n_ref), query.dtype, tile)
    # samples 0..m-1 are the queries (owners), m.. the reference rows (candidates)
    owner_of = np.r_[np.arange(m), np.full(n_ref, -1)]
    candidate_of = np.r_[np.full(m, -1), np.arange(n_ref)]
    lists = _Lists(owner_of, candidate_of, k, query.dtype)
    sims_buffer = np.empty((tile, tile), query.dtype)
    for a in range(0, m, tile):
        rows = query[a:a + tile]
        for b in range(0, n_ref, tile):
            cols = reference[b:b + tile]
            sims = sims_buffer[: rows.shape[0], : cols.shape[0]]
            np.matmul(rows, cols.T, out=sims)
            lists.offer(sims, a, m + b, columns=False)
    return lists.idx


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
