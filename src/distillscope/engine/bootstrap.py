"""The group bootstrap, in the engine's single pass: ``analyze(bootstrap=B)``.

Each analysed sample belongs to one of ``G`` groups by a hash of its id (``stats.sample_groups``).
Next to the exact statistics of the pass, the accumulators here keep one set of sums per group:
for a representation ``n_g``, ``s_g = sum z`` and ``C_g = sum z z^T`` (plus the norm sums of the
debiased CKA), for a pair the cross sums, for a drift pair the per-sample drift sums. Replicate
``b`` of a statistic is the same sums weighted by ``w[b, g]`` (``stats.replicate_weights``:
multinomial counts, ``G`` groups drawn with replacement), and the metric is computed on it
exactly as on the whole data; the delete-one-group jackknife (weights ``1 - e_g``) gives the
BCa acceleration. Groups, weights and therefore intervals depend on the sample ids and the seed
only: a store read in other blocks, in merged shards or again gives the same intervals (to
rounding: 1e-10 relative for the spectra, 1e-6 for CKA from the float32 cross sums).

Memory: ``G`` times the sums of every resampled statistic: a representation's scatter as its
upper triangle in float64 (the spectra need float64: a float32 rounding floor would count as
small eigenvalues), a pair's ``d1 x d2`` cross sums in float32 (they enter CKA only through
Frobenius norms) (``docs/performance.md``). Which metrics are resampled is declared in the
registry (``Metric.interval``): the effective-rank estimators, the spectrum and alpha, linear CKA
(biased and debiased, teacher-student and clean-condition) and the relative drift. Not resampled,
and why (``docs/metrics.md#intervals``): the CCA family, Procrustes, principal angles and the
variance captured (an SVD or eigendecomposition of every pair per replicate), the
cross-validated ridge (its folds are its own resampling), and the sample-level metrics.
"""

from __future__ import annotations

import os
import types
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._errors import InputError
from ..metrics.moments import SecondMoments
from ..metrics.pairs import CrossMoments, PairMoments
from ..metrics.registry import CLEAN_CONDITION, REPRESENTATION, TEACHER_STUDENT, Metric
from ..metrics.robustness import DriftAccumulator
from ..stats import interval, jackknife_weights, replicate_weights, sample_groups

__all__ = ["GroupMoments", "GroupCross", "GroupDrift", "group_accumulators", "resample",
           "resampled_metrics", "REPLICATE_BYTES"]

#: bytes of replicate sums built at once (a chunk of replicates, float64)
REPLICATE_BYTES = 256 * 2**20


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

    def __init__(self, key, width: int, groups: int, seed: int, l2: bool, norms: bool):
        self.key, self.groups, self.seed, self.l2 = key, int(groups), int(seed), bool(l2)
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
        _, order, bounds = block.grouping(self.groups, self.seed)
        if order.size == 0:
            return
        if self.shift is None:
            self.shift = np.array(block.shift(self.key), dtype=np.float64)
        from .._kernels import add_upper, jit_enabled

        z, _, a = block.grouped(self.key, self.groups, self.seed)
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

    def __init__(self, pair, d1: int, d2: int, groups: int, seed: int):
        self.key, self.groups, self.seed = pair, int(groups), int(seed)
        g = self.groups
        self.shifts: tuple[np.ndarray, np.ndarray] | None = None
        self.n, self.a, self.b, self.ab = (np.zeros(g) for _ in range(4))
        self.sx, self.u = np.zeros((g, d1)), np.zeros((g, d1))
        self.sy, self.v = np.zeros((g, d2)), np.zeros((g, d2))
        self.c = np.zeros((g, d1, d2), np.float32)

    def update(self, block) -> None:
        _, order, bounds = block.grouping(self.groups, self.seed)
        if order.size == 0:
            return
        x_key, y_key = self.key
        if self.shifts is None:
            self.shifts = (np.array(block.shift(x_key), float), np.array(block.shift(y_key), float))
        x, x32, a = block.grouped(x_key, self.groups, self.seed)
        y, y32, b = block.grouped(y_key, self.groups, self.seed)
        for g in np.flatnonzero(np.diff(bounds)):
            lo, hi = bounds[g], bounds[g + 1]
            self.n[g] += hi - lo
            self.sx[g] += x[lo:hi].sum(axis=0)
            self.sy[g] += y[lo:hi].sum(axis=0)
            self.c[g] += x32[lo:hi].T @ y32[lo:hi]
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

    def __init__(self, pair, groups: int, seed: int):
        self.key, self.groups, self.seed = pair, int(groups), int(seed)
        self.total, self.squared, self.count, self.zero = (np.zeros(self.groups)
                                                           for _ in range(4))

    def update(self, block) -> None:
        from .._kernels import group_drift_sums, jit_enabled
        from .._scratch import widen_float16

        group, _, _ = block.grouping(self.groups, self.seed)
        if group.size == 0:
            return
        clean, other = (widen_float16(np.asarray(block.analysed_pooled(k))) for k in self.key)
        sums = np.zeros((self.groups, 4))
        if jit_enabled():
            group_drift_sums(np.ascontiguousarray(clean), np.ascontiguousarray(other), group,
                             sums)
        else:
            c, o = clean.astype(np.float64), other.astype(np.float64)
            norm = np.sqrt(np.einsum("ij,ij->i", c, c))
            change = np.sqrt(np.einsum("ij,ij->i", o - c, o - c))
            ok = norm > 0
            ratio = np.where(ok, change / np.where(ok, norm, 1.0), 0.0)
            for column, weights in enumerate((ratio, ratio**2, ok, ~ok)):
                sums[:, column] = np.bincount(group, weights.astype(float), self.groups)
        for column, name in enumerate(("total", "squared", "count", "zero")):
            getattr(self, name).__iadd__(sums[:, column])

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
    g, seed = options.bootstrap_groups, options.bootstrap_seed
    chosen = [m for m in plan.metrics if m.interval]
    if not options.bootstrap or not chosen:
        return {"group_moments": {}, "group_pair": {}, "group_drift": {}}
    pairs = set()
    if any(m.takes == TEACHER_STUDENT for m in chosen):
        pairs |= set(plan.pairs)
    if any(m.takes == CLEAN_CONDITION and m.statistic == "pair" for m in chosen):
        pairs |= {p for p in plan.references if p in plan.needs["pair"]}
    keys = {k for p in pairs for k in p}
    if any(m.takes == REPRESENTATION for m in chosen):
        keys |= set(plan.reps)
    drift = ({p for p in plan.references if p in plan.needs["drift"]}
             if any(m.statistic == "drift" for m in chosen) else set())
    in_pairs = {k for p in pairs for k in p}
    reps = plan.reps
    return {
        "group_moments": {k: GroupMoments(k, reps[k].width, g, seed, plan.l2, k in in_pairs)
                          for k in reps if k in keys},
        "group_pair": {p: GroupCross(p, reps[p[0]].width, reps[p[1]].width, g, seed)
                       for p in sorted(pairs, key=str)},
        "group_drift": {p: GroupDrift(p, g, seed) for p in sorted(drift, key=str)},
    }


def group_memory(plan) -> int:
    """Bytes the per-group sums of ``group_accumulators(plan)`` hold."""
    if not plan.options.bootstrap:
        return 0
    g = plan.options.bootstrap_groups
    width = {k: r.width for k, r in plan.reps.items()}
    chosen = [m for m in plan.metrics if m.interval]
    total = 0
    if any(m.takes == REPRESENTATION for m in chosen):
        total += sum(g * (4 * d * (d + 1) + 16 * d + 32) for d in width.values())
    pairs = list(plan.pairs) if any(m.takes == TEACHER_STUDENT for m in chosen) else []
    if any(m.takes == CLEAN_CONDITION and m.statistic == "pair" for m in chosen):
        pairs += plan.references
    total += sum(g * (4 * width[x] * width[y] + 16 * (width[x] + width[y]) + 32)
                 for x, y in pairs)
    return total


# ------------------------------------------------------------------------ replicates, intervals
def resample(plan, stats: dict[str, dict], values) -> None:
    """Every resampled metric on ``B`` bootstrap and ``G`` jackknife replicates, and its
    interval: ``values.intervals[metric][index] = (low, high)``."""
    options = plan.options
    b, g = options.bootstrap, options.bootstrap_groups
    if not b:
        return
    weights = replicate_weights(b, g, options.bootstrap_seed)
    if options.interval == "bca":  # the acceleration: the delete-one-group jackknife
        weights = np.vstack([weights, jackknife_weights(g)])
    chosen = resampled_metrics(plan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        replicated = _replicated(plan, stats, chosen, weights)
        replicated.update(_probe_replicates(plan, values, chosen, weights))
        _paired(plan, chosen, replicated)
        for name, entries in replicated.items():
            estimates = values.entries.get(name, {})
            for index, reps in entries.items():
                if index in estimates:
                    values.intervals.setdefault(name, {})[index] = interval(
                        estimates[index], reps[:b], reps[b:] if len(reps) > b else None,
                        level=options.confidence,
                        method=options.interval)


def resampled_metrics(plan) -> list[Metric]:
    """The metrics of ``plan`` that get intervals: those declared with ``interval``, but of
    the representation metrics only those of the primary estimator's spectrum (centred or
    not): a second spectrum per replicate would double the bootstrap's main cost. Under
    ``default`` that leaves out RankMe (uncentred); ``--convention rankme`` resamples it."""
    primary = plan.convention.primary
    center = plan.settings[primary][0] if primary in plan.settings else plan.spectrum_center

    def spectrum_center(m: Metric) -> bool:
        return plan.settings[m.name][0] if m.coordinate == "estimator" else plan.spectrum_center

    return [m for m in plan.metrics if m.interval
            and (m.takes != REPRESENTATION or spectrum_center(m) == center)]


def _replicated(plan, stats: dict[str, dict], chosen: list[Metric],
                weights: np.ndarray) -> dict[str, dict[tuple, np.ndarray]]:
    """``{metric: {index: values of every replicate (R, ...)}}``, replicates in chunks."""
    group_m = stats["group_moments"]
    per_replicate = sum(8 * acc.s.shape[1] ** 2 for acc in group_m.values())
    chunk = int(np.clip(REPLICATE_BYTES // max(per_replicate, 1), 1, len(weights)))
    out: dict[str, dict[tuple, list]] = {}
    shared = types.SimpleNamespace()  # the cross sums' buffers, one pair at a time
    for start in range(0, len(weights), chunk):
        w = weights[start:start + chunk]
        moments = {k: acc.replicates(w) for k, acc in group_m.items()}
        for name, index, value in _chunk_values(plan, stats, chosen, w, moments, shared):
            out.setdefault(name, {}).setdefault(index, []).append(value)
    return {name: {index: np.array(v, dtype=np.float64) for index, v in entries.items()}
            for name, entries in out.items()}


def _chunk_values(plan, stats, chosen, w, moments, shared):
    """(metric, index, value) of one chunk of replicates, in replicate order per entry."""
    rep = [m for m in chosen if m.takes == REPRESENTATION]
    estimators = [m for m in rep if m.coordinate == "estimator"]
    centers = {plan.settings[m.name][0] for m in estimators}
    if len(estimators) < len(rep):
        centers.add(plan.spectrum_center)
    tasks = [(key, r) for key in (plan.reps if rep else ()) for r in range(len(w))
             if key in moments]
    with _one_thread_each() as pool:
        spectra = list(pool.map(lambda t: _spectra(moments[t[0]][t[1]], centers), tasks))
    for (key, _), lam in zip(tasks, spectra):
        n_values = min(moments[key][0].count, moments[key][0].n_features)
        for m in rep:
            if m.coordinate == "estimator":
                center, eps = plan.settings[m.name]
                yield m.name, key, _value(lambda: m.compute(lam[center], eps=eps,
                                                            n_values=n_values))
            else:
                args = m.arguments(plan.convention)
                yield m.name, key, _value(lambda: m.compute(lam[plan.spectrum_center], **args))
    for takes, pairs in ((TEACHER_STUDENT, plan.pairs), (CLEAN_CONDITION, plan.references)):
        metrics = [m for m in chosen if m.takes == takes and m.statistic == "pair"]
        for pair in pairs:
            if not metrics or pair not in stats["group_pair"]:
                continue
            index = _index(takes, pair)
            crosses = stats["group_pair"][pair].replicates(w, shared)
            for r, cross in enumerate(crosses):
                joint = PairMoments.from_parts(moments[pair[0]][r], moments[pair[1]][r], cross)
                for m in metrics:
                    args = m.arguments(plan.convention)
                    yield m.name, index, _value(lambda: m.compute(joint, **args))
    drift = [m for m in chosen if m.statistic == "drift"]
    for pair, acc in stats["group_drift"].items():
        for d in acc.replicates(w):
            for m in drift:
                yield m.name, pair[1], _value(lambda: m.compute(d))


def _probe_replicates(plan, values, chosen: list[Metric], weights: np.ndarray) -> dict:
    """Probe and kNN accuracies resample the test samples (the probe stays the one fitted on
    all training samples): replicate ``b`` is ``sum_g w[b, g] correct_g / sum_g w[b, g] n_g``
    over the groups of the test samples."""
    metrics = [m for m in chosen if m.statistic == "probes"]
    if not metrics or not values.probes:
        return {}
    options = plan.options
    g = options.bootstrap_groups
    group = sample_groups(plan.store.sample_ids[plan.split.test], g, options.bootstrap_seed)
    sizes = weights @ np.bincount(group, minlength=g)
    out: dict[str, dict] = {}
    for (model, layer), probes in values.probes.items():
        for m in metrics:
            try:
                m.compute(probes, **m.arguments(plan.convention))
            except InputError:
                continue
            for condition, hits in probes.last_correct.items():
                correct = weights @ np.bincount(group, hits.astype(np.float64), g)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out.setdefault(m.name, {})[(model, condition, layer)] = correct / sizes
    return out


def _index(takes: str, pair) -> tuple:
    t_key, s_key = pair
    return (s_key[0], s_key[1], t_key[2], s_key[2]) if takes == TEACHER_STUDENT else s_key


def _spectra(moments: SecondMoments, centers: set[bool]) -> dict[bool, np.ndarray]:
    try:
        return {c: moments.eigenvalues(center=c) for c in centers}
    except InputError:  # fewer than two rows in the replicate
        return {c: np.full(moments.n_features, np.nan) for c in centers}


def _value(compute):
    try:
        value = compute()
    except (InputError, ValueError, FloatingPointError):
        return np.nan
    return np.nan if value is None else value


def _paired(plan, chosen: list[Metric], replicated: dict) -> None:
    """Replicates of the teacher-student metrics of the primary ranks (``statistic
    "spectrum"``): the same replicates of both ranks, so the interval is of a paired
    difference."""
    ranks = replicated.get(plan.convention.primary, {})
    for m in chosen:
        if m.takes != TEACHER_STUDENT or m.statistic != "spectrum":
            continue
        for pair in plan.pairs:
            if pair[0] in ranks and pair[1] in ranks:
                with np.errstate(divide="ignore", invalid="ignore"):
                    value = m.compute(ranks[pair[0]], ranks[pair[1]])
                replicated.setdefault(m.name, {})[_index(TEACHER_STUDENT, pair)] = value


class _one_thread_each:
    """A pool of one worker per core, each with single-threaded BLAS: independent
    eigendecompositions run side by side (1.5x the throughput of one multithreaded LAPACK
    call after another on 2 cores)."""

    def __enter__(self):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - scikit-learn brings it
            threadpool_limits = None
        self._limits = threadpool_limits(1) if threadpool_limits else None
        self._pool = ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0))))
        return self._pool

    def __exit__(self, *exc):
        self._pool.shutdown()
        if self._limits is not None:
            self._limits.restore_original_limits()
        return False
