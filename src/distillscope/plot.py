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

__all__ = ["accuracy_vs_noise", "band_fractions", "cka_heatmap", "cka_students",
           "cumulative_variance", "groups",
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


def groups(results: xr.Dataset) -> dict[str, list[str]]:
    """Models by family of seeds (``model_family``), in order; a model without a family (the
    teacher, say) is a group of its own, named after it."""
    out: dict[str, list[str]] = {}
    for m, family in zip(map(str, results.model.values), results["model_family"].values
                         if "model_family" in results.coords else [""] * results.sizes["model"]):
        out.setdefault(str(family) or m, []).append(m)
    return out


def _group_of(results: xr.Dataset) -> dict[str, str]:
    return {m: g for g, members in groups(results).items() for m in members}


def _colors(results: xr.Dataset) -> dict[str, str]:
    """One colour per group: the teacher black, the families tab10 in order."""
    out, i = {}, 0
    for g, members in groups(results).items():
        if str(results["role"].sel(model=members[0]).values) == "teacher":
            out[g] = "black"
        else:
            out[g] = f"C{i % 10}"
            i += 1
    return out


def _style(results: xr.Dataset, model: str, labelled: set | None = None) -> dict:
    """Colour by family; the teacher thick and black; ``labelled`` (the groups already in the
    legend) gives the first member of each group its family's legend entry."""
    group = _group_of(results)[model]
    teacher = str(results["role"].sel(model=model).values) == "teacher"
    style = {"color": _colors(results)[group], "linewidth": 2.2 if teacher else 1.4,
             "zorder": 3 if teacher else 2}
    if labelled is not None:
        style["label"] = group if group not in labelled else "_nolegend_"
        labelled.add(group)
    return style


def _interval(results: xr.Dataset, name: str, **where) -> tuple[float, float] | None:
    """The bootstrap interval of ``name`` at ``where``, when the results have one."""
    ci = results.get(f"{name}_ci")
    if ci is None:
        return None
    low, high = (float(v) for v in ci.sel(**where).values)
    return (low, high) if np.isfinite(low) and np.isfinite(high) else None


def _family_points(values: dict[str, float], intervals: dict[str, tuple | None]):
    """A group's mean and its interval: over seeds (Student t) when it has two or more with
    values, else the one model's bootstrap interval."""
    from .stats import t_interval

    finite = [v for v in values.values() if np.isfinite(v)]
    if len(finite) >= 2:
        t = t_interval(np.array(finite))
        return float(t["mean"]), (float(t["low"]), float(t["high"]))
    if len(finite) == 1:
        only = next(m for m, v in values.items() if np.isfinite(v))
        return finite[0], intervals.get(only)
    return float("nan"), None


def _errorbar(ax, x, y, interval, **style) -> None:
    """A point and its interval as a bar (drawn as a segment: a percentile interval need not
    contain the point)."""
    ax.plot([x], [y], **style)
    if interval is not None:
        ax.vlines([x], [interval[0]], [interval[1]], color=style.get("color"),
                  linewidth=1.4, zorder=style.get("zorder", 2))


def spectrum(results: xr.Dataset, *, condition: str | None = None, layer: str = "embedding",
             models: Sequence[str] | None = None, normalize: bool = True, ax=None):
    """Eigen-spectrum per model, log-log: eigenvalue ``lam_i`` (over ``sum lam``) against i."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    labelled: set = set()
    for m in _models(results, models, condition, layer):
        lam = results["spectrum"].sel(model=m, condition=condition, layer=layer).values
        lam = lam[np.isfinite(lam) & (lam > 0)]
        if normalize:
            lam = lam / lam.sum()
        ax.loglog(np.arange(1, lam.size + 1), lam, **_style(results, m, labelled))
    return _finish(ax, "component i", "eigenvalue / sum" if normalize else "eigenvalue",
                   f"eigen-spectrum ({layer}, {condition})")


def cumulative_variance(results: xr.Dataset, *, condition: str | None = None,
                        layer: str = "embedding", models: Sequence[str] | None = None,
                        threshold: float = 0.9, ax=None):
    """Cumulative explained variance against the number of components, with the 90% line."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    labelled: set = set()
    for m in _models(results, models, condition, layer):
        lam = results["spectrum"].sel(model=m, condition=condition, layer=layer).values
        lam = np.clip(lam[np.isfinite(lam)], 0, None)
        ax.semilogx(np.arange(1, lam.size + 1), np.cumsum(lam) / lam.sum(),
                    **_style(results, m, labelled))
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1,
               label=f"{threshold:.0%} of the variance")
    return _finish(ax, "components k", "cumulative variance",
                   f"cumulative variance ({layer}, {condition})", ylim=(0, 1.02))


def rank_vs_params(results: xr.Dataset, *, estimator: str | None = None,
                   condition: str | None = None, layer: str = "embedding", ax=None):
    """Effective rank against parameter count (log scale): each family's mean with its interval
    over seeds (or a single model's bootstrap interval), its members as faint points; the
    teacher a star. Families are named in the legend, so no label can overprint another."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    estimator = estimator or ("erank_variance" if "erank_variance" in results.estimator.values
                              else str(results.estimator.values[0]))
    present = set(_models(results, None, condition, layer))
    colors = _colors(results)
    for group, members in groups(results).items():
        members = [m for m in members if m in present]
        if not members:
            continue
        where = dict(condition=condition, layer=layer, estimator=estimator)
        ranks = {m: float(results["effective_rank"].sel(model=m, **where)) for m in members}
        spans = {m: _interval(results, "effective_rank", model=m, **where) for m in members}
        p = float(np.mean([int(results["n_params"].sel(model=m)) for m in members]))
        teacher = str(results["role"].sel(model=members[0]).values) == "teacher"
        if len(members) > 1:
            ax.scatter([p] * len(members), list(ranks.values()), color=colors[group],
                       alpha=0.35, s=22, zorder=2)
        mean, span = _family_points(ranks, spans)
        _errorbar(ax, p, mean, span, marker="*" if teacher else "o",
                  markersize=13 if teacher else 7, color=colors[group], linestyle="none",
                  zorder=3, label=group + (f" ({len(members)} seeds)" if len(members) > 1 else ""))
    ax.set_xscale("log")
    return _finish(ax, "parameters", f"effective rank ({estimator})",
                   f"effective rank against size ({layer}, {condition})")


def variance_captured(results: xr.Dataset, *, condition: str | None = None,
                      teacher_layer: str = "embedding", student_layer: str = "embedding",
                      ax=None):
    """The paper's curve: student variance captured by the teacher's top-k directions."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    curves = _need(results, "variance_captured", "analyse with alignment=True")
    labelled: set = set()
    for s in results.student.values:
        a = curves.sel(student=s, condition=condition, teacher_layer=teacher_layer,
                       student_layer=student_layer).values
        a = a[np.isfinite(a)]
        if a.size:
            ax.semilogx(np.arange(1, a.size + 1), a, **_style(results, str(s), labelled))
    return _finish(ax, "teacher principal directions k", "student variance captured A(k)",
                   f"variance captured ({teacher_layer} / {student_layer}, {condition})", ylim=(0, 1.02))


def accuracy_vs_noise(results: xr.Dataset, *, layer: str = "embedding",
                      kind: str = "gaussian_noise", metric: str = "probe_accuracy", ax=None):
    """Accuracy against noise sigma (arXiv 2603.06698 Figure 3); sigma 0 is clean. Each family's
    mean with its interval over seeds (a single model: its bootstrap interval), members faint."""
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
    x = np.array([0.0] + [s for s, _ in noisy])
    conditions = [clean] + [c for _, c in noisy]
    colors = _colors(results)
    for group, members in groups(results).items():
        curves = {m: 100 * np.array([float(values.sel(model=m, condition=c, layer=layer))
                                     for c in conditions]) for m in members}
        curves = {m: y for m, y in curves.items() if np.isfinite(y).any()}
        if not curves:
            continue
        if len(curves) > 1:
            for y in curves.values():
                ax.plot(x, y, color=colors[group], alpha=0.3, linewidth=0.9)
        means = []
        for i, c in enumerate(conditions):
            spans = {m: _interval(results, metric, model=m, condition=c, layer=layer)
                     for m in curves}
            spans = {m: None if v is None else (100 * v[0], 100 * v[1]) for m, v in spans.items()}
            mean, span = _family_points({m: y[i] for m, y in curves.items()}, spans)
            means.append(mean)
            if span is not None:
                ax.vlines([x[i]], [span[0]], [span[1]], color=colors[group], linewidth=1.4)
        teacher = str(results["role"].sel(model=members[0]).values) == "teacher"
        ax.plot(x, means, marker="o", color=colors[group], linewidth=2.2 if teacher else 1.6,
                label=group + (f" ({len(curves)} seeds)" if len(curves) > 1 else ""))
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
    """Low / mid / high fractions of spatial power: one horizontal stacked bar per family (the
    mean over its seeds) and map layer, each label on its own row."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    group_of = _group_of(results)
    rows: dict[tuple[str, str], list[str]] = {}
    for m, layer in _spatial(results, condition):
        rows.setdefault((group_of[m], layer), []).append(m)
    left = np.zeros(len(rows))
    for band in results.band.values:
        f = np.array([np.mean([float(results["band_fraction"].sel(
            model=m, condition=condition, layer=layer, band=band)) for m in members])
            for (_, layer), members in rows.items()])
        ax.barh(np.arange(len(rows)), f, left=left, label=str(band))
        left += f
    ax.set_yticks(np.arange(len(rows)), [f"{g} / {layer}" for g, layer in rows],
                  fontsize="small" if len(rows) < 14 else "x-small")
    ax.invert_yaxis()
    ax.set_xlabel("fraction of non-DC power (mean over seeds)")
    ax.set_xlim(0, 1)
    ax.set_title(f"spatial power by band ({condition})")
    _legend(ax, title="band", loc="lower right")
    return ax


def radial_profiles(results: xr.Dataset, *, condition: str | None = None, ax=None):
    """Fraction of spatial power per radial ring, one curve per model and map layer."""
    ax = _axes(ax)
    condition = reference_condition(results, condition)
    radius = results["radius"].values
    labelled: set = set()
    for m, layer in _spatial(results, condition):
        p = results["radial_profile"].sel(model=m, condition=condition, layer=layer).values
        p = np.where(p > 0, p, np.nan)  # a ring holding only the DC bin has no power to show
        ax.plot(radius, p, marker=".", **_style(results, m, labelled))
    ax.set_yscale("log")
    return _finish(ax, "normalised radius (1 = Nyquist along an axis)", "fraction of non-DC power",
                   f"radial power spectrum ({condition})")


def frequency_response(results: xr.Dataset, *, layer: str = "embedding", ax=None):
    """Drift under band-limited noise per band over its mean: decreasing = low-pass."""
    ax = _axes(ax)
    response = _need(results, "frequency_response",
                     "it needs band_noise conditions in the low, mid and high bands")
    bands = list(map(str, results.band.values))
    labelled: set = set()
    for m in results.model.values:
        r = response.sel(model=m, layer=layer).values
        if np.isfinite(r).all():
            ax.plot(bands, r, marker="o", **_style(results, str(m), labelled))
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


def cka_students(results: xr.Dataset, *, metric: str = "linear_cka",
                 teacher_layer: str | None = None, student_layer: str | None = None, ax=None):
    """Every student's alignment with the teacher in one figure: one row per student (grouped
    and coloured by family), one marker per condition, with the bootstrap interval as error
    bars when the results have one."""
    ax = _axes(ax)
    values = _need(results, metric, "analyse with alignment=True")
    layer = headline_layer(results)
    teacher_layer = teacher_layer or layer
    student_layer = student_layer or layer
    students = [str(s) for s in results.student.values]
    group_of, colors = _group_of(results), _colors(results)
    conditions = [str(c) for c in results.condition.values]
    markers = "osD^vP*Xh"
    offsets = np.linspace(-0.3, 0.3, len(conditions)) if len(conditions) > 1 else [0.0]
    for j, c in enumerate(conditions):
        for i, s in enumerate(students):
            where = dict(student=s, condition=c, teacher_layer=teacher_layer,
                         student_layer=student_layer)
            v = float(values.sel(**where))
            if not np.isfinite(v):
                continue
            span = _interval(results, metric, **where)
            if span is not None:
                ax.hlines([i + offsets[j]], [span[0]], [span[1]], color=colors[group_of[s]],
                          linewidth=1.2)
            ax.plot([v], [i + offsets[j]], marker=markers[j % len(markers)], markersize=5,
                    color=colors[group_of[s]], linestyle="none",
                    label=c if i == 0 else "_nolegend_")
    ax.set_yticks(range(len(students)), students, fontsize="small" if len(students) < 14
                  else "x-small")
    for label, s in zip(ax.get_yticklabels(), students):
        label.set_color(colors[group_of[s]])
    ax.invert_yaxis()
    return _finish(ax, f"{metric.replace('_', ' ')} with the teacher", "student",
                   f"{metric.replace('_', ' ')} ({teacher_layer} / {student_layer})")
