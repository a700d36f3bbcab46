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

import types
import warnings

import numpy as np

from .._errors import InputError
from .._system import in_turn, one_thread_each
from ..metrics.moments import SecondMoments
from ..metrics.pairs import PairMoments
from ..metrics.predictivity import CrossValidation
from ..metrics.registry import (CLEAN_CONDITION, REPRESENTATION, REQUESTED, STUDENT_STUDENT,
                                TEACHER_STUDENT, Metric)
from ..stats import interval, jackknife_weights, replicate_weights
from .finalize import student_pairs
from .groups import asked, assign, bootstrap_groups, fold_masks, nested

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
    """The metrics of ``plan`` that get intervals: those ``resample`` asks for
    (``engine.groups.asked``); with bootstrap replicates (``bca``, ``percentile``), of the
    representation metrics only those of the primary estimator's spectrum (centred or not): a
    second spectrum per replicate would double their main cost. Under ``default`` that leaves
    out RankMe (uncentred) there; ``--convention rankme`` resamples it, and the jackknife
    (``G`` replicates) resamples all."""
    chosen = asked(plan)
    if plan.options.interval == "jackknife":
        return chosen
    primary = plan.convention.primary
    center = plan.settings[primary][0] if primary in plan.settings else plan.spectrum_center

    def spectrum_center(m: Metric) -> bool:
        return plan.settings[m.name][0] if m.coordinate == "estimator" else plan.spectrum_center

    return [m for m in chosen if m.takes != REPRESENTATION or spectrum_center(m) == center]


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
    return {name: {index: _stacked(v) for index, v in entries.items()}
            for name, entries in out.items()}


def _stacked(values: list) -> np.ndarray:
    """The replicates of one entry as one array, a failed replicate's NaN spread to the
    shape of the others (a spectrum, the angles)."""
    shape = next((np.shape(v) for v in values if np.ndim(v)), ())
    return np.array([np.full(shape, np.nan) if np.ndim(v) < len(shape) else v for v in values],
                    dtype=np.float64)


def _chunk_values(plan, stats, chosen, w, moments, shared):
    """(metric, index, value) of one chunk of replicates, in replicate order per entry."""
    rep = [m for m in chosen if m.takes == REPRESENTATION]
    estimators = [m for m in rep if m.coordinate == "estimator"]
    centers = {plan.settings[m.name][0] for m in estimators}
    if len(estimators) < len(rep):
        centers.add(plan.spectrum_center)
    tasks = [(key, r) for key in (plan.reps if rep else ()) for r in range(len(w))
             if key in moments]
    with one_thread_each() as pool:
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

            def pair_values(r: int, cross) -> list:
                joint = PairMoments.from_parts(moments[pair[0]][r], moments[pair[1]][r], cross)
                return [(m.name, _value(lambda: m.compute(joint, **m.arguments(plan.convention))))
                        for m in metrics]

            # the requested metrics' decompositions side by side, one replicate per core
            costly = any(m.interval == REQUESTED for m in metrics)
            with one_thread_each() if costly else in_turn() as pool:
                for row in pool.map(pair_values, range(len(crosses)), crosses):
                    for name, value in row:
                        yield name, index, value
    drift = [m for m in chosen if m.statistic == "drift"]
    for pair, acc in stats["group_drift"].items():
        for d in acc.replicates(w):
            for m in drift:
                yield m.name, pair[1], _value(lambda: m.compute(d))
    yield from _fold_values(plan, stats, [m for m in chosen if m.statistic == "folds"], w, shared)


def _fold_values(plan, stats, metrics: list[Metric], w: np.ndarray, shared):
    """The cross-validation metrics of each replicate: the groups nest in the folds
    (``engine.groups.nested``), so fold ``f`` of replicate ``r`` is the sum of its own groups
    weighted by ``w[r]``, and the ridge fits are redone on those folds. Last in a chunk: the
    fold sums reuse the buffers of the chunk's replicate moments."""
    if not metrics or not nested(plan):
        return
    group_m, masks = stats["group_moments"], fold_masks(plan).astype(np.float64)
    for r in range(len(w)):
        weights, sides = w[r] * masks, {}
        for pair in plan.pairs:
            if pair not in stats["group_pair"]:
                continue
            for key in pair:  # the teacher's folds once for every student (its fits' cache)
                if key not in sides or key == pair[1]:
                    sides[key] = group_m[key].replicates(weights)
            crosses = stats["group_pair"][pair].replicates(weights, shared)
            folds = CrossValidation(PairMoments.from_parts(x, y, c) for x, y, c in
                                    zip(sides[pair[0]], sides[pair[1]], crosses))
            for m in metrics:
                args = m.arguments(plan.convention)
                yield m.name, _index(TEACHER_STUDENT, pair), _value(lambda: m.compute(folds,
                                                                                      **args))


def _probe_replicates(plan, values, chosen: list[Metric], weights: np.ndarray) -> dict:
    """Probe and kNN accuracies resample the test samples (the probe stays the one fitted on
    all training samples): replicate ``b`` is ``sum_g w[b, g] correct_g / sum_g w[b, g] n_g``
    over the groups of the test samples."""
    metrics = [m for m in chosen if m.statistic == "probes"]
    if not metrics or not values.probes:
        return {}
    g = bootstrap_groups(plan)
    test = np.flatnonzero(plan.split.test)
    positions = test if plan.subset is None else np.searchsorted(plan.subset, test)
    group = assign(plan, plan.store.sample_ids[test], positions)
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
    """Replicates of the teacher-student and student-student metrics of the primary ranks
    (``statistic "spectrum"``): the same replicates of both ranks, so the interval is of a
    paired difference."""
    ranks = replicated.get(plan.convention.primary, {})
    for m in chosen:
        if m.statistic != "spectrum" or m.takes not in (TEACHER_STUDENT, STUDENT_STUDENT):
            continue
        pairs = ([(_index(TEACHER_STUDENT, p), p) for p in plan.pairs if set(p) <= set(ranks)]
                 if m.takes == TEACHER_STUDENT else student_pairs(plan, ranks))
        for index, (a, b) in pairs:
            with np.errstate(divide="ignore", invalid="ignore"):
                replicated.setdefault(m.name, {})[index] = m.compute(ranks[a], ranks[b])
