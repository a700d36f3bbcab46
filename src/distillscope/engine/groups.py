"""The per-group sums of the engine's intervals (``engine.bootstrap``): accumulators of the pass.

Each analysed sample belongs to one of ``G`` groups (``assign``: by ``stats.sample_groups``, and
nested in the cross-validation folds when the fold metrics are resampled); next to the exact
statistics, these keep one set of sums per group: a representation's ``n``, ``sum z`` and the
upper triangle of ``sum z z^T`` in float64 (the spectra need float64: a float32 rounding floor
would count as small eigenvalues), with the debiased CKA's norm sums; a pair's ``d1 x d2`` cross
sums in float32, from float32 rows (they enter CKA only through Frobenius norms); a drift pair's
per-sample drift sums. ``replicates(weights)`` gives the state of each weighted replicate,
``merge`` adds another range's (shards), re-expressed about this one's shift. Memory: ``G``
times the sums (``group_memory``; ``docs/performance.md``).
"""

from __future__ import annotations

import numpy as np

from .._errors import InputError
from ..metrics.moments import SecondMoments
from ..metrics.pairs import CrossMoments
from ..metrics.registry import (CLEAN_CONDITION, REPRESENTATION, REQUESTED, TEACHER_STUDENT,
                                Metric)
from ..metrics.robustness import DriftAccumulator
from ..stats import sample_groups

__all__ = ["GroupMoments", "GroupCross", "GroupDrift", "group_accumulators", "group_memory",
           "bootstrap_groups", "asked", "assign", "fold_masks", "GROUP_BUDGET", "MIN_GROUPS",
           "MAX_GROUPS"]


# --------------------------------------------------------------------------------- the groups
def asked(plan) -> list[Metric]:
    """The metrics of ``plan`` that ``resample`` asks intervals of: those declared with
    ``interval=True``, and with ``resample="all"`` the ``"requested"`` ones too."""
    every = plan.options.resample == "all"
    return [m for m in plan.metrics if m.interval is True or (every and m.interval == REQUESTED)]


def nested(plan) -> bool:
    """Whether the groups nest in the cross-validation folds: when a fold metric
    (``statistic "folds"``) is resampled, each group lies in one fold, so a replicate of a
    fold is a weighted sum of its own groups (``fold_masks``)."""
    return bool(plan.options.bootstrap and plan.folds
                and any(m.statistic == "folds" for m in asked(plan)))


def assign(plan, sample_ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The group of each analysed sample, from its id (and, nested in the folds, from its
    position among the analysed samples, which says its fold): ``stats.sample_groups`` over
    ``G`` groups, or ``fold * G / K + sample_groups(id, G / K)``."""
    g, seed = bootstrap_groups(plan), plan.options.bootstrap_seed
    if not nested(plan):
        return sample_groups(sample_ids, g, seed)
    per = g // (len(plan.folds) - 1)
    fold = np.searchsorted(plan.folds, positions, side="right") - 1
    return fold * per + sample_groups(sample_ids, per, seed)


def fold_masks(plan) -> np.ndarray:
    """``(K, G)``: which groups lie in each fold (nested groups only)."""
    k = len(plan.folds) - 1
    g = bootstrap_groups(plan)
    return (np.arange(g) // (g // k))[None, :] == np.arange(k)[:, None]


def _reused(owner, name: str, shape: tuple, dtype) -> np.ndarray:
    """A buffer kept on ``owner`` for the replicates of one chunk at a time (reused: a fresh
    array would page-fault in on every chunk, which costs more here than the arithmetic)."""
    held = getattr(owner, name, None)
    if held is None or held.shape[0] < shape[0] or held.shape[1:] != shape[1:]:
        held = np.empty(shape, dtype)
        setattr(owner, name, held)
    return held[:shape[0]]


def _weighted(owner, weights: np.ndarray, sums: np.ndarray) -> np.ndarray:
    """``sum_g weights[:, g] * sums[g]`` for each row of weights (float64 out, reused)."""
    flat = sums.reshape(sums.shape[0], -1)
    out = _reused(owner, "_sums64", (weights.shape[0], flat.shape[1]), np.float64)
    if flat.dtype == np.float32:
        narrow = _reused(owner, "_sums32", (weights.shape[0], flat.shape[1]), np.float32)
        np.matmul(weights.astype(np.float32), flat, out=narrow)
        np.copyto(out, narrow)
    else:
        np.matmul(weights, flat, out=out)
    return out.reshape((weights.shape[0],) + sums.shape[1:])


class GroupMoments:
    """Per-group sums of one representation's prepared rows (about its shift)."""

    def __init__(self, key, width: int, groups: int, l2: bool, norms: bool):
        self.key, self.groups, self.l2 = key, int(groups), bool(l2)
        g, d = self.groups, int(width)
        self.shift: np.ndarray | None = None
        self.n = np.zeros(g)
        self.s = np.zeros((g, d))
        self.upper = np.triu_indices(d)  # the scatter's upper triangle, float64 (packed)
        self.c = np.zeros((g, self.upper[0].size))
        self.a = np.zeros(g) if norms else None
        self.aa = np.zeros(g) if norms else None
        self.w = np.zeros((g, d)) if norms else None

    def update(self, block) -> None:
        _, order, bounds = block.grouping()
        if order.size == 0:
            return
        if self.shift is None:
            self.shift = np.array(block.shift(self.key), dtype=np.float64)
        from .._kernels import add_upper, jit_enabled

        z = block.analysed(self.key).z[order]  # float64, this representation's moments only
        a = block.grouped(self.key)[1] if self.a is not None else None
        for g in np.flatnonzero(np.diff(bounds)):
            lo, hi = bounds[g], bounds[g + 1]
            self.n[g] += hi - lo
            self.s[g] += z[lo:hi].sum(axis=0)
            scatter = z[lo:hi].T @ z[lo:hi]
            if jit_enabled():
                add_upper(scatter, self.c[g])
            else:
                self.c[g] += scatter[self.upper]
            if self.a is not None:
                self.a[g] += a[lo:hi].sum()
                self.aa[g] += a[lo:hi] @ a[lo:hi]
                self.w[g] += a[lo:hi] @ z[lo:hi]

    def merge(self, other: "GroupMoments") -> "GroupMoments":
        if other.shift is None:
            return self
        if self.shift is None:
            self.shift = other.shift.copy()
        theirs = [other.replicate(np.eye(self.groups)[g], self.shift) for g in range(self.groups)]
        for g, m in enumerate(theirs):
            if m.count:
                sums = m.sums()
                self.n[g] += sums.n
                self.s[g] += sums.s
                self.c[g] += sums.c[self.upper]
                if self.a is not None:
                    self.a[g] += sums.a
                    self.aa[g] += sums.aa
                    self.w[g] += sums.w
        return self

    def finalize(self) -> "GroupMoments":
        return self

    def replicates(self, weights: np.ndarray) -> list[SecondMoments]:
        """The moments of each weighted replicate (rows of ``weights``, ``(R, G)``)."""
        n, s = weights @ self.n, weights @ self.s
        c = self._unpacked(_weighted(self, weights, self.c))
        extra = ([{}] * len(weights) if self.a is None else
                 [{"a": a, "aa": aa, "w": w} for a, aa, w in
                  zip(weights @ self.a, weights @ self.aa, weights @ self.w)])
        return [SecondMoments.from_sums(self.shift, n[r], s[r], c[r], l2_normalize=self.l2,
                                        **extra[r]) for r in range(len(weights))]

    def _unpacked(self, packed: np.ndarray) -> np.ndarray:
        """Full symmetric ``(R, d, d)`` matrices from their packed upper triangles (a buffer
        reused from chunk to chunk)."""
        from .._kernels import jit_enabled, unpack_upper

        d = self.s.shape[1]
        out = _reused(self, "_full", (packed.shape[0], d, d), np.float64)
        if jit_enabled():
            unpack_upper(packed, out)
            return out
        i, j = self.upper
        flat = out.reshape(packed.shape[0], -1)
        flat[:, i * d + j] = packed
        flat[:, j * d + i] = packed
        return out

    def replicate(self, weights: np.ndarray, shift: np.ndarray) -> SecondMoments:
        """One weighted replicate, merged about ``shift`` (re-expressing the sums exactly)."""
        out = SecondMoments(len(shift), l2_normalize=self.l2, shift=shift,
                            norms=self.a is not None)
        return out.merge(self.replicates(weights[None])[0])

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in (self.n, self.s, self.c, self.a, self.aa, self.w)
                   if v is not None)


class GroupCross:
    """Per-group cross sums of a pair's prepared rows (``CrossMoments`` fields)."""

    def __init__(self, pair, d1: int, d2: int, groups: int):
        self.key, self.groups = pair, int(groups)
        g = self.groups
        self.shifts: tuple[np.ndarray, np.ndarray] | None = None
        self.n, self.a, self.b, self.ab = (np.zeros(g) for _ in range(4))
        self.sx, self.u = np.zeros((g, d1)), np.zeros((g, d1))
        self.sy, self.v = np.zeros((g, d2)), np.zeros((g, d2))
        self.c = np.zeros((g, d1, d2), np.float32)

    def update(self, block) -> None:
        _, order, bounds = block.grouping()
        if order.size == 0:
            return
        x_key, y_key = self.key
        if self.shifts is None:
            self.shifts = (np.array(block.shift(x_key), float), np.array(block.shift(y_key), float))
        x, a = block.grouped(x_key)
        y, b = block.grouped(y_key)
        for g in np.flatnonzero(np.diff(bounds)):  # float32 rows, float64 sums
            lo, hi = bounds[g], bounds[g + 1]
            self.n[g] += hi - lo
            self.sx[g] += x[lo:hi].sum(axis=0, dtype=np.float64)
            self.sy[g] += y[lo:hi].sum(axis=0, dtype=np.float64)
            self.c[g] += x[lo:hi].T @ y[lo:hi]
            self.a[g] += a[lo:hi].sum()
            self.b[g] += b[lo:hi].sum()
            self.ab[g] += a[lo:hi] @ b[lo:hi]
            self.u[g] += b[lo:hi] @ x[lo:hi]
            self.v[g] += a[lo:hi] @ y[lo:hi]

    def merge(self, other: "GroupCross") -> "GroupCross":
        if other.shifts is None:
            return self
        if self.shifts is None:
            self.shifts = (other.shifts[0].copy(), other.shifts[1].copy())
        for g in range(self.groups):
            theirs = other.replicates(np.eye(self.groups)[g][None])[0]
            mine = CrossMoments(theirs.d1, theirs.d2)
            mine.shifts = self.shifts
            mine.merge(theirs)
            self.n[g] += mine.count
            for name in ("a", "b", "ab"):
                getattr(self, name)[g] += getattr(mine, name)
            for name in ("sx", "sy", "u", "v"):
                getattr(self, name)[g] += getattr(mine, name)
            self.c[g] += mine.cxy.astype(np.float32)
        return self

    def finalize(self) -> "GroupCross":
        return self

    def replicates(self, weights: np.ndarray, buffers=None) -> list[CrossMoments]:
        """The cross sums of each weighted replicate (in ``buffers``' arrays when given: one
        set shared by every pair, used one pair at a time)."""
        fields = {name: weights @ getattr(self, name)
                  for name in ("n", "a", "b", "ab", "sx", "sy", "u", "v")}
        c = _weighted(self if buffers is None else buffers, weights, self.c)
        out = []
        for r in range(len(weights)):
            m = CrossMoments(self.sx.shape[1], self.sy.shape[1])
            m.count, m.shifts, m.cxy = int(round(fields["n"][r])), self.shifts, c[r]
            for name in ("a", "b", "ab"):
                setattr(m, name, float(fields[name][r]))
            for name in ("sx", "sy", "u", "v"):
                setattr(m, name, fields[name][r])
            out.append(m)
        return out

    @property
    def nbytes(self) -> int:
        return self.c.nbytes + sum(v.nbytes for v in (self.sx, self.sy, self.u, self.v))


class GroupDrift:
    """Per-group sums of the per-sample relative drift (``DriftAccumulator`` fields)."""

    def __init__(self, pair, groups: int):
        self.key, self.groups = pair, int(groups)
        self.total, self.squared, self.count, self.zero = (np.zeros(self.groups)
                                                           for _ in range(4))

    def update(self, block) -> None:
        _, order, bounds = block.grouping()
        if order.size == 0:
            return
        clean, other = (np.asarray(block.analysed_pooled(k))[order] for k in self.key)
        for g in np.flatnonzero(np.diff(bounds)):  # each group's rows: the drift's own sums
            lo, hi = bounds[g], bounds[g + 1]
            drift = DriftAccumulator().update(clean[lo:hi], other[lo:hi])
            self.total[g] += drift.total
            self.squared[g] += drift.squared
            self.count[g] += drift.count
            self.zero[g] += drift.zero_norm

    def merge(self, other: "GroupDrift") -> "GroupDrift":
        for name in ("total", "squared", "count", "zero"):
            getattr(self, name).__iadd__(getattr(other, name))
        return self

    def finalize(self) -> "GroupDrift":
        return self

    def replicates(self, weights: np.ndarray) -> list[DriftAccumulator]:
        out = []
        for t, q, n in zip(weights @ self.total, weights @ self.squared, weights @ self.count):
            d = DriftAccumulator()
            d.total, d.squared, d.count = float(t), float(q), int(round(n))
            out.append(d)
        return out

    nbytes = property(lambda self: 32 * self.groups)


def group_accumulators(plan) -> dict[str, dict]:
    """The per-group accumulators of a plan with ``bootstrap``: one per representation,
    teacher-student pair, clean-condition pair and drift pair that a resampled metric reads."""
    options = plan.options
    g = bootstrap_groups(plan)
    chosen = asked(plan)
    if not options.bootstrap or not chosen:
        return {"group_moments": {}, "group_pair": {}, "group_drift": {}}
    representations, pairs = _resampled(plan, chosen)
    keys = {k for p in pairs for k in p} | (set(plan.reps) if representations else set())
    drift = ({p for p in plan.references if p in plan.needs["drift"]}
             if any(m.statistic == "drift" for m in chosen) else set())
    in_pairs = {k for p in pairs for k in p}
    reps = plan.reps
    return {
        "group_moments": {k: GroupMoments(k, reps[k].width, g, plan.l2, k in in_pairs)
                          for k in reps if k in keys},
        "group_pair": {p: GroupCross(p, reps[p[0]].width, reps[p[1]].width, g)
                       for p in pairs},
        "group_drift": {p: GroupDrift(p, g) for p in sorted(drift, key=str)},
    }


#: the per-group sums' memory the default number of groups is chosen for, and its bounds
GROUP_BUDGET = 5 * 2**28  # 1.25 GiB: with the replicates' buffers (~0.6 GiB), within 2 GB
MIN_GROUPS, MAX_GROUPS = 16, 128


def _resampled(plan, chosen: list[Metric] | None) -> tuple[bool, list]:
    """Whether ``chosen`` (None: everything) resamples every representation, and the
    teacher-student and clean-condition pairs it resamples."""
    every = chosen is None
    pairs = list(plan.pairs) if every or any(m.takes == TEACHER_STUDENT for m in chosen) else []
    if every:  # the selection's widths alone (every convention of a pass agrees)
        pairs += plan.references
    elif any(m.takes == CLEAN_CONDITION and m.statistic == "pair" for m in chosen):
        pairs += [p for p in plan.references if p in plan.needs["pair"]]
    return every or any(m.takes == REPRESENTATION for m in chosen), sorted(set(pairs), key=str)


def _per_group(plan, chosen: list[Metric] | None) -> int:
    """Bytes of one group's sums: of what ``chosen`` metrics read, or (None) of every
    representation and pair of the selection."""
    width = {k: r.width for k, r in plan.reps.items()}
    representations, pairs = _resampled(plan, chosen)
    total = sum(4 * d * (d + 1) + 16 * d + 32 for d in width.values()) if representations else 0
    return total + sum(4 * width[x] * width[y] + 16 * (width[x] + width[y]) + 32
                       for x, y in pairs)


def bootstrap_groups(plan) -> int:
    """The number of groups: ``bootstrap_groups`` when given, else as many as keep the sums of
    every representation and pair of the selection within ``GROUP_BUDGET`` (1.25 GiB), between 16
    and 128 (more groups: intervals closer to their level, ``docs/metrics.md#intervals``). It
    depends on the selection's widths alone, so every shard and convention of a store agrees.
    Nested in the ``K`` folds (``nested``), a multiple of ``K``: the default rounds down (to 20
    at least); a given number must be one."""
    given = plan.options.bootstrap_groups
    g = int(given or np.clip(GROUP_BUDGET // max(_per_group(plan, None), 1), MIN_GROUPS,
                             MAX_GROUPS))
    if not nested(plan):
        return g
    k = len(plan.folds) - 1
    if not given:
        return max(g - g % k, 4 * k)
    if g % k or g < 2 * k:
        raise InputError(f"bootstrap_groups must be a multiple of the {k} cross-validation "
                         f"folds (at least {2 * k}) when their metrics are resampled; got {g}")
    return g


def group_memory(plan) -> int:
    """Bytes the per-group sums of ``group_accumulators(plan)`` hold."""
    if not plan.options.bootstrap:
        return 0
    return bootstrap_groups(plan) * _per_group(plan, asked(plan))
