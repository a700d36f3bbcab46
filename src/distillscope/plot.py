"""Figures from a results dataset (``distillscope.analyze`` / ``load_results``), with matplotlib.

Every function takes the dataset and an optional ``ax``, draws on it (a new figure when ``ax``
is None) and returns the axes, so figures compose::

    import matplotlib.pyplot as plt
    from distillscope import plot
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    plot.spectrum(results, ax=a)
    plot.accuracy_vs_noise(results, ax=b)

matplotlib is imported by these functions only, never by ``import distillscope``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import xarray as xr

from ._errors import InputError

__all__ = ["accuracy_vs_noise", "band_fractions", "cka_heatmap", "cumulative_variance",
           "frequency_response", "radial_profiles", "rank_vs_params", "spectrum",
           "variance_captured"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5.5, 4))
    return ax


def _legend(ax, **kwargs) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", **kwargs)


def _finish(ax, xlabel: str, ylabel: str, title: str, *, ylim=None, legend: bool = True):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    if legend:
        _legend(ax)
    return ax


def _need(results: xr.Dataset, name: str, why: str):
    if name not in results:
        raise InputError(f"the results have no {name!r}; {why}")
    return results[name]


def reference_condition(results: xr.Dataset, condition: str | None = None) -> str:
    if condition is not None:
        if condition not in results.condition.values:
            raise InputError(f"condition {condition!r} is not in the results; available: "
                             + ", ".join(map(str, results.condition.values)))
        return condition
    kinds = list(results["condition_kind"].values) if "condition_kind" in results.coords else []
    return str(results.condition.values[kinds.index("clean")] if "clean" in kinds
               else results.condition.values[0])


def headline_layer(results: xr.Dataset) -> str:
    """The layer headline numbers are read at: ``embedding``, else the first layer."""
    layers = [str(v) for v in results.layer.values]
    return "embedding" if "embedding" in layers else layers[0]


def _models(results: xr.Dataset, models: Sequence[str] | None, condition: str, layer: str) -> list[str]:
    names = list(map(str, results.model.values)) if models is None else list(models)
    return [m for m in names
            if bool(results["available"].sel(model=m, condition=condition, layer=layer))]


def _style(results: xr.Dataset, model: str) -> dict:
    teacher = str(results["role"].sel(model=model).values) == "teacher"
    return {"color": "black", "linewidth": 2.2, "zorder": 3} if teacher else {"linewidth": 1.4}


def spectrum(results: xr.Dataset, *, condition: str | None = None, layer: str = "embedding",
             models: Sequence[str] | None = None, normalize: bool = True, ax=None):
    """Eigen-spectrum per model, log-log: eigenvalue ``lam_i`` (over ``sum lam``) against i."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    for m in _models(results, models, condition, layer):
        lam = results["spectrum"].sel(model=m, condition=condition, layer=layer).values
        lam = lam[np.isfinite(lam) & (lam > 0)]
        if normalize:
            lam = lam / lam.sum()
        ax.loglog(np.arange(1, lam.size + 1), lam, label=m, **_style(results, m))
    return _finish(ax, "component i", "eigenvalue / sum" if normalize else "eigenvalue",
                   f"eigen-spectrum ({layer}, {condition})")


def cumulative_variance(results: xr.Dataset, *, condition: str | None = None,
                        layer: str = "embedding", models: Sequence[str] | None = None,
                        threshold: float = 0.9, ax=None):
    """Cumulative explained variance against the number of components, with the 90% line."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    for m in _models(results, models, condition, layer):
        lam = results["spectrum"].sel(model=m, condition=condition, layer=layer).values
        lam = np.clip(lam[np.isfinite(lam)], 0, None)
        ax.semilogx(np.arange(1, lam.size + 1), np.cumsum(lam) / lam.sum(), label=m,
                    **_style(results, m))
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1,
               label=f"{threshold:.0%} of the variance")
    return _finish(ax, "components k", "cumulative variance",
                   f"cumulative variance ({layer}, {condition})", ylim=(0, 1.02))


def rank_vs_params(results: xr.Dataset, *, estimator: str | None = None,
                   condition: str | None = None, layer: str = "embedding", ax=None):
    """Effective rank against parameter count (log scale), one point per model."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    estimator = estimator or ("erank_variance" if "erank_variance" in results.estimator.values
                              else str(results.estimator.values[0]))
    for m in _models(results, None, condition, layer):
        r = float(results["effective_rank"].sel(model=m, condition=condition, layer=layer,
                                                estimator=estimator))
        p = int(results["n_params"].sel(model=m))
        teacher = str(results["role"].sel(model=m).values) == "teacher"
        ax.scatter([p], [r], marker="*" if teacher else "o", s=140 if teacher else 50,
                   color="black" if teacher else None, zorder=3)
        ax.annotate(m, (p, r), textcoords="offset points", xytext=(5, 4), fontsize="small")
    ax.set_xscale("log")
    return _finish(ax, "parameters", f"effective rank ({estimator})",
                   f"effective rank against size ({layer}, {condition})", legend=False)


def variance_captured(results: xr.Dataset, *, condition: str | None = None,
                      teacher_layer: str = "embedding", student_layer: str = "embedding",
                      ax=None):
    """The paper's curve: student variance captured by the teacher's top-k directions."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    curves = _need(results, "variance_captured", "analyse with alignment=True")
    for s in results.student.values:
        a = curves.sel(student=s, condition=condition, teacher_layer=teacher_layer,
                       student_layer=student_layer).values
        a = a[np.isfinite(a)]
        if a.size:
            ax.semilogx(np.arange(1, a.size + 1), a, label=str(s))
    return _finish(ax, "teacher principal directions k", "student variance captured A(k)",
                   f"variance captured ({teacher_layer} / {student_layer}, {condition})", ylim=(0, 1.02))


def accuracy_vs_noise(results: xr.Dataset, *, layer: str = "embedding",
                      kind: str = "gaussian_noise", metric: str = "probe_accuracy", ax=None):
    """Accuracy against noise sigma per model (arXiv 2603.06698 Figure 3); sigma 0 is clean."""
    ax = _axes(ax)
    values = _need(results, metric, "it needs a store with labels and train/test splits")
    kinds = results["condition_kind"].values
    sigmas = results["condition_sigma"].values
    clean = reference_condition(results, None)
    noisy = [(float(s), str(c)) for c, k, s in zip(results.condition.values, kinds, sigmas)
             if k == kind and np.isfinite(s)]
    if not noisy:
        raise InputError(f"the results have no condition of kind {kind!r} with a sigma")
    noisy.sort()
    x = [0.0] + [s for s, _ in noisy]
    for m in results.model.values:
        y = [float(values.sel(model=m, condition=c, layer=layer)) for c in [clean] + [c for _, c in noisy]]
        if np.isfinite(y).any():
            ax.plot(x, 100 * np.asarray(y), marker="o", label=str(m), **_style(results, str(m)))
    return _finish(ax, f"noise sigma ({kind})", f"{metric.replace('_', ' ')} (%)",
                   f"{metric.replace('_', ' ')} under noise ({layer})")


def _spatial(results: xr.Dataset, condition: str) -> list[tuple[str, str]]:
    grid = _need(results, "band_fraction", "analyse a store with map or token layers, frequency=True")
    pairs = []
    for m in results.model.values:
        for layer in results.layer.values:
            if np.isfinite(grid.sel(model=m, condition=condition, layer=layer).values).all():
                pairs.append((str(m), str(layer)))
    return pairs


def band_fractions(results: xr.Dataset, *, condition: str | None = None, ax=None):
    """Low / mid / high fractions of spatial power, one stacked bar per model and map layer."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    pairs = _spatial(results, condition)
    bottom = np.zeros(len(pairs))
    for band in results.band.values:
        f = np.array([float(results["band_fraction"].sel(model=m, condition=condition, layer=layer,
                                                        band=band)) for m, layer in pairs])
        ax.bar(np.arange(len(pairs)), f, bottom=bottom, label=str(band))
        bottom += f
    ax.set_xticks(np.arange(len(pairs)), [f"{m}\n{layer}" for m, layer in pairs],
                  fontsize="small", rotation=30, ha="right")
    ax.set_ylabel("fraction of non-DC power")
    ax.set_ylim(0, 1)
    ax.set_title(f"spatial power by band ({condition})")
    _legend(ax, title="band")
    return ax


def radial_profiles(results: xr.Dataset, *, condition: str | None = None, ax=None):
    """Fraction of spatial power per radial ring, one curve per model and map layer."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    radius = results["radius"].values
    for m, layer in _spatial(results, condition):
        p = results["radial_profile"].sel(model=m, condition=condition, layer=layer).values
        p = np.where(p > 0, p, np.nan)  # a ring holding only the DC bin has no power to show
        ax.plot(radius, p, marker=".", label=f"{m} {layer}", **_style(results, m))
    ax.set_yscale("log")
    return _finish(ax, "normalised radius (1 = Nyquist along an axis)", "fraction of non-DC power",
                   f"radial power spectrum ({condition})")


def frequency_response(results: xr.Dataset, *, layer: str = "embedding", ax=None):
    """Drift under band-limited noise per band over its mean: decreasing = low-pass."""
    ax = _axes(ax)
    response = _need(results, "frequency_response",
                     "it needs band_noise conditions in the low, mid and high bands")
    bands = list(map(str, results.band.values))
    for m in results.model.values:
        r = response.sel(model=m, layer=layer).values
        if np.isfinite(r).all():
            ax.plot(bands, r, marker="o", label=str(m), **_style(results, str(m)))
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    return _finish(ax, "band of the input noise", "relative drift / mean over bands",
                   f"frequency response ({layer})")


def cka_heatmap(results: xr.Dataset, *, student: str, condition: str | None = None,
                metric: str = "linear_cka", ax=None):
    """A teacher-layer x student-layer heatmap of an alignment metric for one student."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    values = _need(results, metric, "analyse with alignment=True")
    grid = values.sel(student=student, condition=condition)
    t_layers = [t for t in grid.teacher_layer.values if np.isfinite(grid.sel(teacher_layer=t)).any()]
    s_layers = [s for s in grid.student_layer.values if np.isfinite(grid.sel(student_layer=s)).any()]
    data = grid.sel(teacher_layer=t_layers, student_layer=s_layers).values
    image = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (r, c), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize="small",
                    color="white" if v < 0.6 else "black")
    ax.set_xticks(range(len(s_layers)), s_layers, rotation=30, ha="right", fontsize="small")
    ax.set_yticks(range(len(t_layers)), t_layers, fontsize="small")
    ax.set_xlabel(f"{student} layer")
    ax.set_ylabel("teacher layer")
    ax.set_title(f"{metric.replace('_', ' ')} ({condition})")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
    return ax
