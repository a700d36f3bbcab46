"""From the finalized statistics of the pass to the value of every chosen metric.

Each registry metric is computed once per entry of what it takes (a representation, a
teacher/student pair, a condition against clean, a family of seeds), from the statistic it
declares; shared work is cached on the statistic objects (a teacher's eigen-decomposition and
similarity pass serve every student). A metric the array layer refuses for an entry
(``InputError``: degenerate, wrong shape, too few samples) keeps its fill value there, as does a
pair whose metric does not apply (InfoNCE across spaces). Degenerate-input warnings are recorded
by ``small_sample`` instead of being raised.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._errors import InputError
from .._system import in_turn, one_thread_each
from ..metrics.alignment import DegenerateWarning
from ..metrics.neighbours import Samples
from ..metrics.predictivity import CrossValidation
from ..metrics.search import Estimate
from ..metrics.pairs import PairMoments
from ..metrics.registry import (CLEAN_CONDITION, FAMILY, REPRESENTATION, STUDENT_STUDENT,
                                TEACHER_STUDENT, TEACHER_STUDENT_MODELS, Metric)
from ..metrics.robustness import Probes
from .plan import Plan

__all__ = ["Values", "compute_values", "student_pairs"]


@dataclass
class Values:
    """Computed values: ``entries[metric name][index] = value``, index by the metric's takes."""

    entries: dict[str, dict[tuple, object]] = field(default_factory=dict)
    probe_info: list[dict] = field(default_factory=list)
    #: seconds spent per metric family (and in the similarity passes)
    timings: dict[str, float] = field(default_factory=dict)
    #: values already computed, shared by the plans of one pass (``compute_plans``): a metric
    #: with the same arguments on the same statistic objects is computed once
    memo: dict[tuple, object] = field(default_factory=dict)
    #: ``intervals[metric name][index]``: (low, high) of the bootstrap (``engine.bootstrap``)
    intervals: dict[str, dict[tuple, np.ndarray]] = field(default_factory=dict)
    #: the fitted probes of each (model, layer), whose test samples the bootstrap resamples
    probes: dict[tuple, Probes] = field(default_factory=dict)
    #: ``errors[metric name][index]``: the values estimated on a subsample (``search.Estimate``)
    errors: dict[str, dict[tuple, Estimate]] = field(default_factory=dict)

    def put(self, metric: Metric, index: tuple, value) -> None:
        self.entries.setdefault(metric.name, {})[index] = value
        if isinstance(value, Estimate):  # on a subsample: its standard error and size
            self.errors.setdefault(metric.name, {})[index] = value

    def timed(self, what: str, start: float) -> None:
        with _TIMINGS:  # pairs are computed two at a time
            self.timings[what] = self.timings.get(what, 0.0) + time.perf_counter() - start


_REFUSED = object()
_TIMINGS = threading.Lock()


def _token(*parts) -> tuple:
    """A memo key part: statistic objects by identity, arguments by value."""
    return tuple(repr(sorted(p.items())) if isinstance(p, dict) else p for p in parts)


def _memoized(values: Values, key: tuple, call: Callable[[], object],
              family: str | None = None) -> object:
    """``call()`` once per ``key`` of the pass (``_REFUSED`` where the array layer refuses
    it: ``InputError``), timed under ``family``."""
    if key not in values.memo:
        start = time.perf_counter()
        try:
            values.memo[key] = call()
        except InputError:
            values.memo[key] = _REFUSED
        finally:
            if family is not None:
                values.timed(family, start)
    return values.memo[key]


def _apply(metric: Metric, values: Values, index: tuple, call: Callable[[], object],
           token: tuple) -> None:
    """Compute one value (or take it from the memo: same metric, entry and ``token``); a
    refused entry keeps its fill value."""
    value = _memoized(values, (metric.name, index) + token, call, metric.family)
    if value is not _REFUSED:
        values.put(metric, index, value)


def compute_values(plan: Plan, stats: dict[str, dict]) -> Values:
    """Every chosen metric for every entry it applies to."""
    return compute_plans([plan], [stats])[0]


def compute_plans(plans: list[Plan], stats: list[dict[str, dict]]) -> list[Values]:
    """Every plan's values from the statistics of one pass (``executor.run_plans``): every
    similarity pass is requested before any runs, and a value two plans compute alike (same
    metric, arguments and statistics) is computed once."""
    views, copies = [], {}
    for plan, statistics in zip(plans, stats):
        view = dict(statistics)
        view["analysed"] = _analysed_samples(plan, statistics["samples"], copies)
        _request_products(plan, view)
        views.append(view)
    memo: dict[tuple, object] = {}
    with warnings.catch_warnings():  # once, not per value: the pairs are computed in threads
        warnings.simplefilter("ignore", DegenerateWarning)
        return [_compute(plan, view, Values(memo=memo)) for plan, view in zip(plans, views)]


def _compute(plan: Plan, stats: dict[str, dict], values: Values) -> Values:
    start = time.perf_counter()
    passes = list(stats["samples"].values())
    if stats["analysed"] is not stats["samples"]:
        passes += stats["analysed"].values()
    for samples in passes:  # one similarity pass per representation (and subset)
        samples.compute()
    values.timed("similarity passes", start)
    _representations(plan, stats, values)
    _teacher_student(plan, stats, values)
    _teacher_student_models(plan, stats, values)
    _student_student(plan, values)
    _clean_condition(plan, stats, values)
    _families(plan, stats, values)
    return values


def _analysed_samples(plan: Plan, held: dict, copies: dict) -> dict:
    """The held rows the sample-level metrics read: all of them, or, under a convention that
    computes on the test split or a subsample (``Plan.sample_level``), a copy of its rows (the
    probes and the kNN vote keep all), one per subset in ``copies`` whichever plans read it."""
    rows = plan.sample_level
    if rows is None:
        return held
    subset = rows.tobytes()
    for key, samples in held.items():
        if (subset, key) not in copies:
            copies[(subset, key)] = Samples(samples.held[rows])
    return {key: copies[(subset, key)] for key in held}


def _request_products(plan: Plan, stats: dict[str, dict]) -> None:
    """Tell every held representation what its one similarity pass must produce."""
    samples = stats["analysed"]
    options = plan.options
    for held in (*stats["samples"].values(), *samples.values()):  # at large n (metrics.search)
        held.configure(index=options.neighbours, uniformity_samples=options.uniformity_samples)
    for m in plan.metrics:
        if m.needs is None or m.statistic not in ("samples", "probes"):
            continue
        wanted = m.needs(**m.arguments(plan.convention))
        if not wanted:
            continue
        if m.statistic == "probes":
            clean = plan.reference_condition
            for model, layer in plan.probe_layers():
                stats["samples"][(model, clean, layer)].request(
                    **wanted, split=(plan.split.train, plan.split.test))
        elif m.takes == TEACHER_STUDENT:
            for pair in plan.pairs:
                for key in pair:
                    samples[key].request(**wanted)
        else:
            for key in plan.reps:
                if key in samples:
                    samples[key].request(**wanted)


def _spectra(plan: Plan, moments, estimators: list[Metric]) -> dict[bool, np.ndarray]:
    lam = {True: moments.eigenvalues(center=True)}
    centers = {plan.settings[m.name][0] for m in estimators} | {plan.spectrum_center}
    if False in centers:
        lam[False] = moments.eigenvalues(center=False)
    return lam


def _representations(plan: Plan, stats: dict[str, dict], values: Values) -> None:
    chosen = plan.chosen(REPRESENTATION)
    estimators = [m for m in chosen if m.coordinate == "estimator"]
    for key, rep in plan.reps.items():
        moments = stats["moments"][key].full
        lam = _spectra(plan, moments, estimators)
        values.entries.setdefault("_centred_spectra", {})[key] = lam[True]
        n_values = min(moments.count, moments.n_features)
        for m in chosen:
            args = m.arguments(plan.convention)
            if m.coordinate == "estimator":
                center, eps = plan.settings[m.name]
                _apply(m, values, key, lambda m=m, c=center, e=eps: m.compute(
                    lam[c], eps=e, n_values=n_values), _token(id(moments), center, eps))
            elif m.statistic == "spectrum":
                _apply(m, values, key, lambda m=m, a=args: m.compute(lam[plan.spectrum_center], **a),
                       _token(id(moments), plan.spectrum_center, args))
            elif m.statistic == "moments":
                _apply(m, values, key, lambda m=m, a=args: m.compute(moments, rep, **a),
                       _token(id(moments), args))
            elif m.statistic in ("maps", "images") and key in stats[m.statistic]:
                statistic = stats[m.statistic][key]
                _apply(m, values, key, lambda m=m, a=args, s=statistic: m.compute(s, **a),
                       _token(id(statistic), args))
            elif m.statistic == "samples" and key in stats["analysed"]:
                held = stats["analysed"][key]
                _apply(m, values, key, lambda m=m, a=args, h=held: m.compute(h, **a),
                       _token(id(held), args))


def pair_statistics(stats: dict[str, dict], pair) -> tuple[PairMoments, CrossValidation | None]:
    """The PairMoments of a pair (and its folds' CrossValidation) from the pass's statistics."""
    x, y = (stats["moments"][k] for k in pair)
    full, folds = stats["pair"][pair]
    joint = PairMoments.from_parts(x.full, y.full, full)
    if folds is None:
        return joint, None
    return joint, CrossValidation(PairMoments.from_parts(a, b, c)
                                  for a, b, c in zip(x.folds, y.folds, folds))


def _teacher_student(plan: Plan, stats: dict[str, dict], values: Values) -> None:
    """Every pair's metrics, two pairs side by side (``one_thread_each``: their SVDs,
    eigendecompositions and ridge solves are most of the finalisation). What a teacher's pairs
    share is cached on its statistics by its first pair, computed before the others start."""
    chosen = plan.chosen(TEACHER_STUDENT)
    firsts: dict = {}
    for pair in plan.pairs:
        firsts.setdefault(pair[0], pair)
    rest = [pair for pair in plan.pairs if firsts[pair[0]] is not pair]
    for batch in (list(firsts.values()), rest):
        with one_thread_each() if len(batch) > 1 else in_turn() as pool:
            for _ in pool.map(lambda pair: _pair_values(plan, stats, values, chosen, pair),
                              batch):
                pass


def _pair_values(plan: Plan, stats: dict[str, dict], values: Values, chosen: list[Metric],
                 pair) -> None:
    t_key, s_key = pair
    index = (s_key[0], s_key[1], t_key[2], s_key[2])
    joint, folds = pair_statistics(stats, pair) if pair in stats["pair"] else (None, None)
    pair_id = id(stats["pair"].get(pair))
    for m in chosen:
        args = m.arguments(plan.convention)
        if m.statistic == "pair":
            _apply(m, values, index, lambda m=m, a=args: m.compute(joint, **a),
                   _token(pair_id, args))
        elif m.statistic == "folds" and folds is not None:
            _apply(m, values, index, lambda m=m, a=args: m.compute(folds, **a),
                   _token(pair_id, args))
        elif m.statistic == "spectrum":  # from the primary effective ranks
            ranks = values.entries.get(plan.convention.primary, {})
            if t_key in ranks and s_key in ranks:
                _apply(m, values, index, lambda m=m, t=ranks[t_key], s=ranks[s_key]:
                       m.compute(t, s), _token(ranks[t_key], ranks[s_key]))
        elif m.statistic == "samples":
            sx, sy = stats["analysed"][t_key], stats["analysed"][s_key]
            _apply(m, values, index, lambda m=m, a=args: m.compute(sx, sy, **a),
                   _token(id(sx), id(sy), args))


def _student_student(plan: Plan, values: Values) -> None:
    """Metrics of each student against each other student, from their primary ranks."""
    ranks = values.entries.get(plan.convention.primary, {})
    for m in plan.chosen(STUDENT_STUDENT):
        for index, (a, b) in student_pairs(plan, ranks):
            _apply(m, values, index, lambda m=m, a=ranks[a], b=ranks[b]: m.compute(a, b),
                   _token(ranks[a], ranks[b]))


def student_pairs(plan: Plan, present) -> list[tuple[tuple, tuple]]:
    """``((student, versus, condition, layer), (student key, versus key))`` of every two
    distinct students whose keys are both in ``present``."""
    return [((a, b, c, layer), ((a, c, layer), (b, c, layer)))
            for c in plan.conditions for layer in plan.layers
            for a in plan.students for b in plan.students
            if a != b and (a, c, layer) in present and (b, c, layer) in present]


def _teacher_student_models(plan: Plan, stats: dict[str, dict], values: Values) -> None:
    """Metrics of the teacher against each student, every analysed layer of both together."""
    chosen = plan.chosen(TEACHER_STUDENT_MODELS)
    if not chosen or not plan.pairs:
        return
    held = stats["analysed"]
    for student in plan.students:
        for condition in plan.conditions:
            tx = [held[(plan.teacher, condition, layer)] for layer in plan.teacher_layers
                  if (plan.teacher, condition, layer) in held]
            sy = [held[(student, condition, layer)] for layer in plan.student_layers
                  if (student, condition, layer) in held]
            if not tx or not sy:
                continue
            for m in chosen:
                args = m.arguments(plan.convention)
                _apply(m, values, (student, condition),
                       lambda m=m, a=args, t=tx, s=sy: m.compute(t, s, **a),
                       _token(tuple(id(x) for x in tx + sy), args))


def _clean_condition(plan: Plan, stats: dict[str, dict], values: Values) -> None:
    clean = plan.reference_condition
    if clean not in plan.conditions:
        return
    chosen = plan.chosen(CLEAN_CONDITION)
    for key in plan.reps:
        if key[1] == clean:
            for m in chosen:
                if m.at_reference is not None:
                    values.put(m, key, m.at_reference)
    for pair in plan.references:
        key = pair[1]
        for m in chosen:
            args = m.arguments(plan.convention)
            if m.statistic == "pair" and pair in stats["pair"]:
                joint = pair_statistics(stats, pair)[0]
                _apply(m, values, key, lambda m=m, a=args: m.compute(joint, **a),
                       _token(id(stats["pair"][pair]), args))
            elif m.statistic == "drift" and pair in stats["drift"]:
                drift = stats["drift"][pair]
                _apply(m, values, key, lambda m=m, a=args, d=drift: m.compute(d, **a),
                       _token(id(drift), args))
    probing = [m for m in chosen if m.statistic == "probes"]
    if not probing or not plan.needs["probes"]:
        return
    for model, layer in plan.probe_layers():
        present = {c: stats["samples"][(model, c, layer)] for c in plan.conditions
                   if (model, c, layer) in stats["samples"]}
        memo_key = ("probes", model, layer) + _token(*(id(s) for s in present.values()))
        if memo_key not in values.memo:  # the probes of these rows, fitted once per pass
            values.memo[memo_key] = Probes(present[clean], present, plan.store.labels,
                                           (plan.split.train, plan.split.test))
        probes = values.memo[memo_key]
        values.probes[(model, layer)] = probes
        for m in probing:
            args = m.arguments(plan.convention)
            per_condition = _memoized(values, (m.name, (model, layer)) + memo_key + _token(args),
                                      lambda m=m, a=args: m.compute(probes, **a))
            if per_condition is _REFUSED:  # a single class, say: no probe for this layer
                continue
            for condition, value in per_condition.items():
                values.put(m, (model, condition, layer), value)
        if probes.info:
            values.probe_info.append(probes.info)


def _families(plan: Plan, stats: dict[str, dict], values: Values) -> None:
    chosen = plan.chosen(FAMILY)
    spectra = values.entries.get("_centred_spectra", {})
    eps = plan.settings["erank_variance"][1]
    for family, members in plan.families.items():
        for condition in plan.conditions:
            for layer in plan.layers:
                found = [spectra.get((m, condition, layer)) for m in members]
                if any(s is None for s in found) or len({s.size for s in found}) != 1:
                    continue
                for m in chosen:
                    args = m.arguments(plan.convention)
                    _apply(m, values, (family, condition, layer),
                           lambda m=m, a=args, f=found: m.compute(f, eps=eps, **a),
                           _token(tuple(id(s) for s in found), eps, args))
