"""Intervals in the engine's single pass: ``analyze(bootstrap=B)``.

The pass keeps one set of sums per group of samples (``engine.groups``; groups by a hash of the
sample id, ``stats.sample_groups``). Here the replicates are built from them and every metric
declared with ``interval`` is computed on each by its own registry function: the ``G``
delete-one-group jackknife replicates (weights ``1 - e_g``; the default interval, and BCa's
acceleration), or ``B`` bootstrap replicates weighted by ``w[b, g]`` (``stats.replicate_weights``:
multinomial counts, ``G`` groups drawn with replacement). Groups, weights and therefore
intervals depend on the sample ids and the seed only: a store read in other blocks, in merged
shards or again gives the same intervals (to rounding: 1e-10 relative for the spectra, 1e-6 for
CKA from the float32 cross sums). Which metrics, and why not the others:
``docs/metrics.md#intervals``.
"""

from __future__ import annotations

import os
import types
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .._errors import InputError
from ..metrics.moments import SecondMoments
from ..metrics.pairs import PairMoments
from ..metrics.registry import CLEAN_CONDITION, REPRESENTATION, TEACHER_STUDENT, Metric
from ..stats import interval, jackknife_weights, replicate_weights, sample_groups
from .groups import bootstrap_groups

__all__ = ["resample", "resampled_metrics", "REPLICATE_BYTES"]

#: bytes of replicate sums built at once (a chunk of replicates, float64)
REPLICATE_BYTES = 256 * 2**20


# ------------------------------------------------------------------------ replicates, intervals
def resample(plan, stats: dict[str, dict], values) -> None:
    """Every resampled metric on ``B`` bootstrap and ``G`` jackknife replicates, and its
    interval: ``values.intervals[metric][index] = (low, high)``."""
    options = plan.options
    b, g = options.bootstrap, bootstrap_groups(plan)
    if not b:
        return
    if options.interval == "jackknife":  # the G delete-one-group replicates alone
        b, weights = 0, jackknife_weights(g)
    else:
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
    """The metrics of ``plan`` that get intervals: those declared with ``interval``; with
    bootstrap replicates (``bca``, ``percentile``), of the representation metrics only those
    of the primary estimator's spectrum (centred or not): a second spectrum per replicate would
    double their main cost. Under ``default`` that leaves out RankMe (uncentred) there;
    ``--convention rankme`` resamples it, and the jackknife (``G`` replicates) resamples all."""
    if plan.options.interval == "jackknife":
        return [m for m in plan.metrics if m.interval]
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
    g = bootstrap_groups(plan)
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
