"""Metrics the engine declares itself: descriptors of each representation, and variables
derived from other variables once the pass is done (seed aggregates, the change of effective
rank under a condition, the frequency response)."""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from ..metrics.frequency import BANDS
from ..metrics.moments import SecondMoments
from ..metrics.registry import REGISTRY, REPRESENTATION, RESULTS, Metric, register
from ..metrics.robustness import frequency_response
from ..stats import t_interval

__all__ = ["constant_features", "AGGREGATED"]


def constant_features(moments: SecondMoments) -> int:
    """Features whose variance is zero up to the rounding of their mean."""
    n = moments.count
    variance = np.diag(moments.scatter(center=True)) / (n - 1)
    tolerance = (n * np.finfo(np.float64).eps * np.abs(moments.mean)) ** 2
    return int(np.count_nonzero(variance <= tolerance))


def _descriptor(name: str, long_name: str, compute, definition: str, fill) -> None:
    register(Metric(name=name, long_name=long_name, units="1", takes=REPRESENTATION,
                    statistic="moments", compute=compute, definition=definition,
                    anchor="degenerate-input", family="descriptor", fill=fill))


_descriptor("n_features", "features after pooling", lambda moments, rep: rep.width,
            "width d of the analysed matrix; 0 where the layer is absent", 0)
_descriptor("available", "layer present in the store", lambda moments, rep: True,
            "False where the model has no such layer under the condition", False)
_descriptor("constant_features", "zero-variance features",
            lambda moments, rep: constant_features(moments),
            "features with variance <= (n eps |mean|)^2; if all are, every rank is 0", 0)
_descriptor("zero_norm_samples", "samples of zero norm",
            lambda moments, rep: moments.zero_norm_rows,
            "rows with ||z|| = 0, left at zero by L2 normalisation", 0)
_descriptor("pooling", "pooling applied", lambda moments, rep: rep.pooling,
            "none (embedding), mean, max, cls or flatten; see distillscope.engine.pooling", "")


# ------------------------------------------------------------------------ derived from results
def _rank_change(results: xr.Dataset) -> xr.DataArray | None:
    clean = results.attrs.get("reference_condition")
    primary = results.attrs.get("convention_primary")
    if clean not in results.condition.values or primary not in results.estimator.values:
        return None
    ranks = results["effective_rank"].sel(estimator=primary, drop=True)
    return ranks - ranks.sel(condition=clean, drop=True)


register(Metric(
    name="effective_rank_change", long_name="change of effective rank against clean",
    units="dimensions", takes=RESULTS, statistic="results", compute=_rank_change,
    anchor="robustness-from-features", family="robustness",
    tables={"robustness": "d erank"},
    definition="primary effective rank (the convention's) under the condition minus its value "
               "under the clean condition"))


def _by_band(results: xr.Dataset) -> dict[str, str] | None:
    """The first band_noise condition of each band, or None unless all three are there."""
    found: dict[str, str] = {}
    for c, kind, band in zip(results.condition.values, results["condition_kind"].values,
                             results["condition_band"].values):
        if kind == "band_noise" and band in BANDS:
            found.setdefault(str(band), str(c))  # several sigmas: the first listed
    return found if set(found) == set(BANDS) else None


def _band_drift(results: xr.Dataset) -> xr.DataArray | None:
    by_band = _by_band(results)
    if by_band is None or "feature_drift" not in results:
        return None
    bands = list(BANDS)
    drift = results["feature_drift"].sel(condition=[by_band[b] for b in bands])
    drift = drift.rename(condition="band").assign_coords(
        band=bands, band_condition=("band", [by_band[b] for b in bands]))
    return drift.transpose("model", "band", "layer")


def _frequency_response(results: xr.Dataset) -> xr.DataArray | None:
    drift = _band_drift(results)
    if drift is None:
        return None
    response = xr.full_like(drift, np.nan)
    for i in range(drift.sizes["model"]):
        for k in range(drift.sizes["layer"]):
            column = drift.values[i, :, k]
            if np.isfinite(column).all():
                response.values[i, :, k] = frequency_response(column)
    return response


register(Metric(
    name="band_drift", long_name="relative feature drift under band-limited noise", units="1",
    takes=RESULTS, statistic="results", compute=_band_drift, dims=("model", "band", "layer"),
    anchor="robustness-from-features", family="robustness",
    definition="feature_drift under the band_noise condition of each band (equal per-pixel "
               "sigma in every band)"))
register(Metric(
    name="frequency_response", long_name="frequency response", units="1", takes=RESULTS,
    statistic="results", compute=_frequency_response, dims=("model", "band", "layer"),
    anchor="robustness-from-features", family="robustness", function=frequency_response,
    tables={"headline": "response {band}"},
    definition="band_drift / mean over bands of band_drift: 1 = flat, low > high = low-pass; "
               "docs/metrics.md section 5"))

#: robustness variables summarised over the seeds of a family
AGGREGATED = ("feature_drift", "cka_clean_noisy", "probe_accuracy", "knn_accuracy")


def _seed_statistic(name: str, how: str):
    def compute(results: xr.Dataset, ddof: int = 1) -> xr.DataArray | None:
        if name not in results or "family" not in results.coords:
            return None
        stack = []
        for family in results.family.values:
            members = results.model.values[results["model_family"].values == family]
            stack.append(results[name].sel(model=members).values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
            reduced = [np.nanmean(s, axis=0) if how == "mean" else np.nanstd(s, axis=0, ddof=ddof)
                       for s in stack]
        return xr.DataArray(np.stack(reduced), dims=("family", "condition", "layer"),
                            coords={"family": results.family.values,
                                    "condition": results.condition.values,
                                    "layer": results.layer.values})

    return compute


for _name in AGGREGATED:
    _source = REGISTRY[_name]
    for _how, _word, _definition in (
            ("mean", "mean over seeds", "mean of {} over the models of one family (seeds)"),
            ("std", "spread over seeds", "standard deviation of {} over seeds, ddof from the "
                                         "convention (1; 0 under arxiv_2603_06698)")):
        register(Metric(
            name=f"{_name}_seed_{_how}", long_name=f"{_source.long_name}, {_word}",
            units=_source.units,
            takes=RESULTS, statistic="results", compute=_seed_statistic(_name, _how),
            dims=("family", "condition", "layer"), anchor="robustness-from-features",
            family="robustness", definition=_definition.format(_name),
            convention_params=(lambda c: {"ddof": c.seed_ddof}) if _how == "std" else None))


def _seed_interval(name: str | None):
    """Student-t interval over the seeds of each family of ``name`` (None: the primary
    effective rank), next to the sample intervals of the bootstrap."""
    def compute(results: xr.Dataset, level: float = 0.95,
                estimator: str = "erank_variance") -> xr.DataArray | None:
        if "family" not in results.coords:
            return None
        if name is None:
            if "effective_rank" not in results or estimator not in results.estimator:
                return None
            values = results["effective_rank"].sel(estimator=estimator, drop=True)
        elif name in results:
            values = results[name]
        else:
            return None
        out = []
        for family in results.family.values:
            members = values.sel(model=results.model.values[results["model_family"].values
                                                           == family]).values
            found = t_interval(members, level)
            out.append(np.stack([found["low"], found["high"]], axis=-1))
        return xr.DataArray(np.stack(out), dims=("family", "condition", "layer", "bound"),
                            coords={"family": results.family.values,
                                    "condition": results.condition.values,
                                    "layer": results.layer.values, "bound": ["low", "high"]})

    return compute


_T_DEFINITION = ("mean over the seeds of a family +- t(k - 1, 0.975) s / sqrt(k) (s with ddof 1, "
                 "k seeds); NaN below 2 seeds")
register(Metric(
    name="seed_rank_ci", long_name="95% t-interval over seeds of the primary effective rank",
    units="dimensions", takes=RESULTS, statistic="results", compute=_seed_interval(None),
    dims=("family", "condition", "layer", "bound"), anchor="intervals", family="dimensionality",
    definition=_T_DEFINITION, params={"level": 0.95},
    convention_params=lambda c: {"estimator": c.primary}))
for _name in AGGREGATED:
    register(Metric(
        name=f"{_name}_seed_ci", long_name=f"95% t-interval over seeds of {REGISTRY[_name].long_name}",
        units=REGISTRY[_name].units, takes=RESULTS, statistic="results",
        compute=_seed_interval(_name), dims=("family", "condition", "layer", "bound"),
        anchor="intervals", family="robustness", definition=_T_DEFINITION,
        params={"level": 0.95}))
