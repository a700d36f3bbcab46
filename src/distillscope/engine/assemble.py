"""The results Dataset: variables, coordinates and attributes generated from the registry.

Every chosen metric becomes a variable (the effective-rank estimators share ``effective_rank``
along ``estimator``) with the dimensions of what it takes plus its own, filled where computed and
at the metric's fill value elsewhere, and the attributes of its declaration: ``long_name``,
``units``, ``definition``, ``source``, ``reference`` (the ``docs/metrics.md`` anchor) and its
parameters. A variable whose structure is absent from the selection (no teacher and student, no
map layer, no clean condition, no family of seeds) is left out. The layout is documented in
``docs/results-format.md``.
"""

from __future__ import annotations

import datetime as _dt
import os

import numpy as np
import xarray as xr

from .._version import __version__
from ..metrics.alignment import N_ANGLES
from ..metrics.predictivity import N_FOLDS, RIDGE
from ..metrics.frequency import BANDS, RADIAL_BINS, radial_profile
from ..metrics.neighbours import KNN_K
from ..metrics.registry import (CLEAN_CONDITION, FAMILY, RESULTS, STUDENT_STUDENT, TAKES,
                                TEACHER_STUDENT, TEACHER_STUDENT_MODELS, Metric, by_variable,
                                select)
from ..metrics.robustness import PROBE
from ..results.attributes import describe
from .bootstrap import resampled_metrics
from .groups import asked, bootstrap_groups, nested
from .finalize import Values
from .plan import Plan

__all__ = ["assemble"]


def _present(plan: Plan, metric: Metric) -> bool:
    """Whether the selection has the structure the metric takes."""
    if metric.takes in (TEACHER_STUDENT, TEACHER_STUDENT_MODELS):
        return bool(plan.pairs)
    if metric.takes == CLEAN_CONDITION:
        return plan.reference_condition in plan.conditions
    if metric.takes == FAMILY:
        return bool(plan.families)
    if metric.takes == STUDENT_STUDENT:
        return len(plan.students) > 1
    if metric.statistic == "maps":
        return bool(plan.needs["maps"])
    return True


def _indexers(plan: Plan) -> dict[str, dict]:
    position = {name: {v: i for i, v in enumerate(values)} for name, values in (
        ("model", plan.models), ("condition", plan.conditions), ("layer", plan.layers),
        ("student", plan.students), ("versus", plan.students), ("teacher_layer", plan.teacher_layers),
        ("student_layer", plan.student_layers), ("family", list(plan.families)))}
    return {takes: [position[d] for d in dims] for takes, dims in TAKES.items() if dims}


def _array(shape: tuple[int, ...], fill) -> np.ndarray:
    if isinstance(fill, (bool, np.bool_)):
        return np.full(shape, bool(fill))
    if isinstance(fill, str):
        return np.full(shape, fill, dtype=object)
    if isinstance(fill, (int, np.integer)):
        return np.full(shape, fill, dtype=np.int64)
    return np.full(shape, fill, dtype=np.float64)


def _core_sizes(plan: Plan, values: Values) -> dict[str, int]:
    longest = max((np.size(v) for v in values.entries.get("relative_log_amplitude", {}).values()),
                  default=0)
    return {"component": max(r.width for r in plan.reps.values()), "angle": N_ANGLES,
            "band": len(BANDS), "radius": RADIAL_BINS, "diagonal_step": longest}


def _attributes(metric: Metric, plan: Plan) -> dict:
    attrs = {"long_name": metric.long_name, "units": metric.units,
             "definition": metric.definition, "reference": f"docs/metrics.md#{metric.anchor}"}
    if metric.source:
        attrs["source"] = metric.source
    for name, value in metric.arguments(plan.convention).items():
        if isinstance(value, (bool, int, float, str)) and value is not None:
            attrs[name] = int(value) if isinstance(value, bool) else value
        elif isinstance(value, tuple) and all(isinstance(v, int) for v in value):
            attrs[name] = str(value)  # a fit range, say: "(4, 100)"
    return attrs


def _variable(plan: Plan, values: Values, group: list[Metric], sizes: dict, index: dict):
    first = group[0]
    shared = first.coordinate is not None
    dims = TAKES[first.takes] + ((first.coordinate,) if shared else ()) + first.dims
    base = tuple(len(position) for position in index[first.takes])
    shape = base + ((len(group),) if shared else ()) + tuple(sizes[d] for d in first.dims)
    array = _array(shape, first.fill)
    for j, metric in enumerate(group):
        for entry, value in values.entries.get(metric.name, {}).items():
            at = tuple(position[e] for position, e in zip(index[first.takes], entry))
            at = at + ((j,) if shared else ())
            if first.dims:
                value = np.asarray(value)
                array[at + (slice(0, value.size),)] = value
            else:
                array[at] = value
    if first.fill == "":
        array = array.astype(str)
    if shared:
        attrs = {"long_name": first.long_name, "units": first.units,
                 "definition": f"per {first.coordinate}: see the {first.coordinate}_definition "
                               "coordinate; docs/metrics.md section 1",
                 "reference": f"docs/metrics.md#{first.anchor}"}
    else:
        attrs = _attributes(first, plan)
    if first.name == "spectrum":
        attrs["center"] = int(plan.spectrum_center)
    return dims, array, attrs


#: how samples are grouped (``engine.groups.assign``), without and with nesting in the folds
_RESAMPLED = {
    False: "groups of samples by splitmix64(sample id XOR splitmix64(seed)) mod groups; "
           "replicate weights multinomial over the groups",
    True: "groups of samples nested in the cross-validation folds: fold * groups / folds + "
          "splitmix64(sample id XOR splitmix64(seed)) mod (groups / folds); replicate weights "
          "multinomial over the groups"}


def _intervals(plan: Plan, values: Values, sizes: dict, index: dict, present: set) -> dict:
    """``<variable>_ci`` of every resampled variable: its dimensions and ``bound`` (low,
    high), NaN where no interval was computed (``engine.bootstrap``)."""
    options = plan.options
    method = {"percentile": "group bootstrap, percentile interval",
              "bca": "group bootstrap, bias-corrected and accelerated (BCa) interval",
              "jackknife": "delete-one-group jackknife, bias-corrected Student-t interval"}
    out = {}
    resampled = {m.name for m in resampled_metrics(plan)}
    for variable, group in by_variable(asked(plan)):
        if variable not in present or not any(values.intervals.get(m.name) for m in group):
            continue
        left_out = [m.name for m in group if m.name not in resampled]
        sides = [Values(entries={m.name: {i: ci[side] for i, ci in
                                          values.intervals.get(m.name, {}).items()}
                                 for m in group}) for side in (0, 1)]
        built = [_variable(plan, v, group, sizes, index) for v in sides]
        dims, _, attrs = built[0]
        out[f"{variable}_ci"] = (dims + ("bound",), np.stack([b[1] for b in built], axis=-1), {
            "long_name": f"{options.confidence:.0%} confidence interval of {attrs['long_name']}",
            "units": attrs["units"],
            "method": method[options.interval],
            "replicates": 0 if options.interval == "jackknife" else options.bootstrap,
            "groups": bootstrap_groups(plan),
            "confidence": options.confidence, "seed": options.bootstrap_seed,
            "resampled": _RESAMPLED[nested(plan)],
            "reference": "docs/metrics.md#intervals"})
        if left_out:
            out[f"{variable}_ci"][2]["not_resampled"] = (
                ", ".join(left_out) + ": another spectrum (centred or not) than the primary "
                "estimator's, which would double the bootstrap's cost (NaN; a convention with "
                "it as primary resamples it)")
    return out


def _coordinates(plan: Plan, dims_used: set[str], estimators: list[Metric]) -> dict:
    store = plan.store
    infos = [store.models[m] for m in plan.models]
    conds = [store.conditions[c] for c in plan.conditions]
    coords = {
        "model": plan.models, "condition": plan.conditions, "layer": plan.layers,
        "role": ("model", [i.role for i in infos]),
        "architecture": ("model", [i.architecture for i in infos]),
        "n_params": ("model", np.array([i.n_params for i in infos], dtype=np.int64)),
        "model_family": ("model", [i.family for i in infos]),
        "seed": ("model", np.array([i.seed for i in infos], dtype=np.int64)),
        "condition_kind": ("condition", [str(a.get("kind", "")) for a in conds]),
        "condition_sigma": ("condition", np.array([float(a.get("sigma", np.nan)) for a in conds])),
        "condition_space": ("condition", [str(a.get("space", "")) for a in conds]),
        "condition_band": ("condition", [str(a.get("band", "")) for a in conds]),
    }
    if estimators:
        names = [m.name for m in estimators]
        coords["estimator"] = names
        coords["estimator_center"] = ("estimator", np.array([plan.settings[e][0] for e in names]))
        coords["estimator_eps"] = ("estimator", np.array([plan.settings[e][1] for e in names]))
        coords["estimator_definition"] = ("estimator", [m.definition for m in estimators])
    if "component" in dims_used:
        coords["component"] = np.arange(1, max(r.width for r in plan.reps.values()) + 1)
    if "student" in dims_used:
        coords.update(student=plan.students, teacher_layer=plan.teacher_layers,
                      student_layer=plan.student_layers)
    if "versus" in dims_used:
        coords["versus"] = plan.students
        coords.setdefault("student", plan.students)
    if "angle" in dims_used:
        coords["angle"] = np.arange(1, N_ANGLES + 1)
    if "band" in dims_used:
        coords["band"] = list(BANDS)
        coords["band_lower"] = ("band", np.array([lo for lo, _ in BANDS.values()]))
        coords["band_upper"] = ("band", np.array([hi for _, hi in BANDS.values()]))
    if "radius" in dims_used:
        edges = radial_profile(np.ones((2, 2)), RADIAL_BINS)[0]
        coords["radius"] = ("radius", (edges[:-1] + edges[1:]) / 2, {
            "long_name": "normalised radial frequency (ring centre)", "units": "1",
            "definition": "sqrt(fx^2 + fy^2) / 0.5; 1 = axis Nyquist"})
        coords["radius_lower"] = ("radius", edges[:-1])
    if "bound" in dims_used:
        coords["bound"] = ("bound", ["low", "high"], {
            "long_name": "bound of the confidence interval", "units": "1"})
    if plan.families:
        coords["family"] = list(plan.families)
        coords["family_size"] = ("family", np.array([len(m) for m in plan.families.values()],
                                                    dtype=np.int64))
    return coords


def _standard_errors(plan: Plan, values: Values, sizes: dict, index: dict, present: set) -> dict:
    """``<variable>_se`` of every variable some of whose values were estimated on a seeded
    subsample (``metrics.search``): the standard error, NaN where the value is exact."""
    out = {}
    for variable, group in by_variable(plan.metrics):
        errors = {m.name: values.errors.get(m.name, {}) for m in group}
        if variable not in present or not any(errors.values()):
            continue
        dims, array, attrs = _variable(plan, Values(entries={
            name: {i: e.standard_error for i, e in found.items()}
            for name, found in errors.items()}), group, sizes, index)
        size = max(e.size for found in errors.values() for e in found.values())
        out[f"{variable}_se"] = (dims, array, {
            "long_name": f"standard error of {attrs['long_name']} (subsample)",
            "units": attrs["units"], "subsample_size": size, "subsample_seed": 0,
            "subsample_above": plan.options.uniformity_samples, "n_samples": plan.n_sample_level,
            "method": "U-statistic on a simple random sample without replacement; Hoeffding's "
                      "first-order standard error with the finite-population factor, delta "
                      "method to the logarithm (NaN: the value is exact)",
            "reference": "docs/metrics.md#uniformity"})
    return out


def _run_attributes(plan: Plan, values: Values, variables: set[str]) -> dict:
    store, conv = plan.store, plan.convention
    attrs = {
        "title": "distillscope effective-dimensionality results",
        "distillscope_version": __version__, "convention": conv.name,
        "convention_source": conv.source, "convention_primary": conv.primary,
        "l2_normalize": int(plan.l2), "spectrum_center": int(plan.spectrum_center),
        "pooling_requested": plan.options.pooling, "n_samples": store.n_samples,
        "store": os.fspath(store.path), "store_created": str(store.attrs.get("created", "")),
        "store_producer": f"{store.attrs.get('producer', '')} "
                          f"{store.attrs.get('producer_version', '')}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(), "metrics": ", ".join(m.name for m in plan.metrics),
        "block_rows": plan.rows,
    }
    left_out = plan.options.left_out(conv)
    omitted = [m.name for m in select(plan.options.metrics) if m.name in left_out]
    if omitted:
        attrs["omitted_metrics"] = (", ".join(omitted) + f": left out by convention {conv.name} "
                                    "(docs/metrics.md#named-conventions); named in metrics=, "
                                    "they are computed")
    if plan.needs["maps"]:
        attrs["remove_map_mean"] = int(plan.options.remove_map_mean)
    if plan.subset is not None:
        attrs["analysed_samples"] = (f"the test split: {plan.n_analysed} of {store.n_samples} "
                                     "samples (probes and the kNN vote fit on the train split)")
    elif plan.convention.rows != "all":
        attrs["analysed_samples"] = (f"all {store.n_samples} samples (the convention computes "
                                     "on the test split; the store has none)")
    if plan.sample_subset is not None:
        attrs["sample_level_samples"] = (
            f"{plan.n_sample_level} of the analysed samples (lowest splitmix64(sample id)): "
            "mutual kNN, uniformity and InfoNCE are computed on them")
    if plan.pairs:
        n = plan.n_sample_level
        attrs.update(infonce_tau=conv.infonce_tau, infonce_batch=conv.infonce_batch,
                     infonce_reduction=conv.infonce_reduction, mutual_knn_k=KNN_K,
                     mutual_knn_chance=KNN_K / (n - 1), cv_folds=N_FOLDS, ridge=RIDGE)
    if plan.needs["samples"]:
        attrs["sample_memory"] = ("pooled rows of every representation a sample-level metric "
                                  "reads, held in memory (stored dtype, float64 for mean "
                                  "pooling); docs/performance.md")
    if plan.reference_condition in plan.conditions and any(
            m.takes == CLEAN_CONDITION for m in plan.metrics):
        probed = bool(values.probe_info)
        attrs.update(
            reference_condition=plan.reference_condition,
            probe=(f"LogisticRegression(solver={PROBE['solver']}, C={PROBE['C']}, "
                   f"max_iter={PROBE['max_iter']}) on L2-normalised embeddings" if probed else
                   "not fitted: the store has no labels (or its splits no train and test)"),
            probe_converged=int(all(i["converged"] for i in values.probe_info)) if probed else -1,
            probe_max_iterations=max((i["n_iter"] for i in values.probe_info), default=-1),
            knn_k=KNN_K,
            sample_split=plan.split.how if plan.split is not None else "none")
    return attrs


def assemble(plan: Plan, values: Values) -> xr.Dataset:
    """The results of one analysis as an ``xarray.Dataset`` (see the module docstring)."""
    index = _indexers(plan)
    sizes = _core_sizes(plan, values)
    data_vars, dims_used, derived = {}, set(), []
    estimators = []
    for variable, group in by_variable(plan.metrics):
        if group[0].takes == RESULTS:
            derived += group
            continue
        if not _present(plan, group[0]) or any(sizes[d] == 0 for d in group[0].dims):
            continue
        if group[0].coordinate == "estimator":
            estimators = group
        dims, array, attrs = _variable(plan, values, group, sizes, index)
        data_vars[variable] = (dims, array, attrs)
        dims_used.update(dims)
    if values.intervals:
        data_vars.update(_intervals(plan, values, sizes, index, set(data_vars)))
        dims_used.add("bound")
    data_vars.update(_standard_errors(plan, values, sizes, index, set(data_vars)))
    coords = _coordinates(plan, dims_used, estimators)
    attrs = _run_attributes(plan, values, set(data_vars))
    results = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    if sizes["diagonal_step"] and "relative_log_amplitude" in results:
        results = results.assign_coords(diagonal_step=np.arange(sizes["diagonal_step"]))
    for metric in derived:
        value = metric.compute(results, **metric.arguments(plan.convention))
        if value is not None:
            results[metric.name] = value.assign_attrs(_attributes(metric, plan))
    return describe(results)


def _versions() -> str:
    import h5py
    import scipy

    import numba

    return (f"numpy {np.__version__}, scipy {scipy.__version__}, numba {numba.__version__}, "
            f"h5py {h5py.__version__}, xarray {xr.__version__}")
