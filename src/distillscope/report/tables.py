"""Tables of a results dataset, with their columns taken from the metric registry.

A metric shows in a table when its declaration names it (``Metric.tables``: table -> column
label). The console tables (``distillscope analyze``) and the report's headline table read the
same declarations, so adding a metric to a table is one entry in its declaration.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..metrics.registry import metrics

__all__ = ["columns", "conversion_table", "rank_table", "alignment_table", "robustness_table",
           "console_tables", "summary_table", "headline", "format_cell"]


def columns(table: str, results: xr.Dataset | None = None) -> list[tuple[str, str]]:
    """``(metric, label)`` of the registered metrics shown in ``table``, in registry order
    (only those the results hold, when given)."""
    out = []
    for name, m in metrics().items():
        if table in m.tables:
            if results is None or m.result_variable in results:
                out.append((name, m.tables[table]))
    return out


def _value(results: xr.Dataset, metric: str, **where) -> float:
    m = metrics()[metric]
    if m.coordinate is not None:
        where[m.coordinate] = metric
    return float(results[m.result_variable].sel(**where))


def _entries(results: xr.Dataset):
    for m in results.model.values:
        for c in results.condition.values:
            for layer in results.layer.values:
                if bool(results["available"].sel(model=m, condition=c, layer=layer)):
                    yield str(m), str(c), str(layer)


def rank_table(results: xr.Dataset) -> str:
    """The convention's primary effective rank and the rank table's columns, per entry."""
    primary = results.attrs.get("convention_primary", "erank_variance")
    cols = [(primary, primary)] + [c for c in columns("rank", results) if c[0] != primary]
    cols = [(name, label) for name, label in cols
            if name in results.coords.get("estimator", xr.DataArray([])).values or name in results]
    lines = [f"{'model':<20} {'condition':<16} {'layer':<12} "
             + " ".join(f"{label:>16}" for _, label in cols)]
    for m, c, layer in _entries(results):
        values = [_value(results, name, model=m, condition=c, layer=layer) for name, _ in cols]
        lines.append(f"{m:<20} {c:<16} {layer:<12} " + " ".join(
            f"{v:16.2f}" if not float(v).is_integer() or name == primary else f"{int(v):16d}"
            for (name, _), v in zip(cols, values)))
    return "\n".join(lines)


def alignment_table(results: xr.Dataset) -> str:
    """Every existing teacher-layer/student-layer pair of every student and condition."""
    cols = columns("alignment", results)
    lines = [f"{'student':<20} {'condition':<16} {'teacher/student layer':<26} "
             + " ".join(f"{label:>13}" for _, label in cols)]
    for s in results.student.values:
        for c in results.condition.values:
            for t in results.teacher_layer.values:
                for layer in results.student_layer.values:
                    where = dict(student=s, condition=c, teacher_layer=t, student_layer=layer)
                    values = [_value(results, name, **where) for name, _ in cols]
                    if all(np.isnan(values)):  # the pair does not exist
                        continue
                    lines.append(f"{s:<20} {c:<16} {t + '/' + layer:<26} "
                                 + " ".join(f"{v:13.3f}" for v in values))
    return "\n".join(lines)


def robustness_table(results: xr.Dataset) -> str:
    """Drift, CKA against clean, rank change and accuracies, per entry."""
    cols = columns("robustness", results)
    lines = [f"{'model':<20} {'condition':<16} {'layer':<12} "
             + " ".join(f"{label:>11}" for _, label in cols)]
    for m, c, layer in _entries(results):
        values = [_value(results, name, model=m, condition=c, layer=layer) for name, _ in cols]
        lines.append(f"{m:<20} {c:<16} {layer:<12} " + " ".join(f"{v:11.3f}" for v in values))
    return "\n".join(lines)


def conversion_table(results: xr.Dataset) -> str:
    """Results of several conventions (``results.stack_conventions``): each model's primary
    effective rank under each convention, clean condition, embedding layer (the first layer
    without one) -- the same features, every convention."""
    from ..plot import headline_layer, reference_condition
    from ..results.conventions import convention_names, one_convention

    parts = {name: one_convention(results, name) for name in convention_names(results)}
    clean, layer = reference_condition(results), headline_layer(results)
    lines = [f"the same features under {len(parts)} conventions ({clean}, {layer}), each "
             "column its headline estimator:"]
    lines += [f"  [{i}] {name} ({part.attrs.get('convention_primary', 'erank_variance')})"
              for i, (name, part) in enumerate(parts.items(), 1)]
    lines.append(f"{'model':<20}" + "".join(f"{f'[{i}]':>9}" for i in range(1, len(parts) + 1)))
    for m in results.model.values:
        values = []
        for part in parts.values():
            primary = part.attrs.get("convention_primary", "erank_variance")
            values.append(_value(part, primary, model=m, condition=clean, layer=layer))
        lines.append(f"{m:<20}" + "".join(f"{v:>9.2f}" for v in values))
    return "\n".join(lines)


def console_tables(results: xr.Dataset) -> str:
    """The tables ``distillscope analyze`` prints: rank, then alignment and robustness when
    the results hold them; for several conventions, the conversion table and then the
    first convention's tables."""
    if "convention" in results.dims:
        from ..results.conventions import one_convention

        first = one_convention(results)
        return (conversion_table(results) + "\n\n" + f"convention {first.attrs['convention']}:\n"
                + console_tables(first))
    parts = [rank_table(results)]
    if "student" in results.dims and columns("alignment", results):
        parts.append(alignment_table(results))
    if results.sizes.get("condition", 0) > 1 and columns("robustness", results):
        parts.append(robustness_table(results))
    return "\n".join(parts)


def summary_table(results: xr.Dataset) -> str:
    """The one table ``analyze`` and ``audit`` print (``--verbose`` prints ``console_tables``):
    per model, the report's headline row (``headline``) at the headline layer under the clean
    condition, the primary rank with its interval when the results have one; for several
    conventions, the conversion table. One line per model."""
    if "convention" in results.dims:
        return conversion_table(results)
    from ..plot import headline_layer, reference_condition

    clean, layer = reference_condition(results), headline_layer(results)
    labels, rows, _ = headline(results, clean, layer)
    cells = [[row[0]] + [format_cell(*cell) for cell in row[1:]] for row in rows]
    widths = [max(len(x) for x in column) for column in zip(["model"] + labels, *cells)]
    lines = [f"{layer} layer, {clean} condition (all of it: --verbose, the report, the results "
             "file):", "  ".join(f"{x:>{w}}" for x, w in zip(["model"] + labels, widths))]
    lines += ["  ".join(f"{x:>{w}}" for x, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def headline(results: xr.Dataset, clean: str, layer: str) -> tuple[list[str], list[list],
                                                                   list[str]]:
    """The report's headline table: per model, the convention's primary effective rank, then
    every metric whose declaration names the "headline" table, at ``layer`` under ``clean``.

    A label with ``{condition}`` expands over the clean and the Gaussian-noise conditions,
    ``{band}`` over the bands, ``{clean}`` names the clean condition. Returns the column
    labels, per model shown ``(value, format, interval or None)`` cells (accuracies in %; the
    interval where the results have ``<variable>_ci``), and each column's metric family.
    """
    primary = results.attrs.get("convention_primary", "erank_variance")
    noisy = [str(c) for c, k in zip(results.condition.values, results["condition_kind"].values)
             if k == "gaussian_noise"]
    getters = _headline_getters(results, metrics()[primary], primary, clean, layer, noisy,
                                "{:.2f}")
    for name, label in columns("headline", results):
        getters += _headline_getters(results, metrics()[name], label, clean, layer, noisy)
    rows = []
    for m in map(str, results.model.values):
        if bool(results["available"].sel(model=m, condition=clean, layer=layer)):
            rows.append([m] + [get(m) for _, _, get in getters])
    return [label for label, _, _ in getters], rows, [family for _, family, _ in getters]


def format_cell(value: float, fmt: str, span: tuple[float, float] | None = None) -> str:
    """A headline cell as text: the value, and its interval in brackets when it has one."""
    if not np.isfinite(value):
        return "-"
    return fmt.format(value) + ("" if span is None else
                                f" [{fmt.format(span[0])}, {fmt.format(span[1])}]")


def _headline_getters(results, m, label: str, clean: str, layer: str, noisy: list[str],
                      fmt: str | None = None):
    variable = results[m.result_variable]
    if m.coordinate and m.name not in variable[m.coordinate].values:
        return []  # an estimator this analysis did not compute
    ci = results.get(f"{m.result_variable}_ci")
    if fmt is None:
        fmt = "{:.0f}" if m.name.startswith("n_components") else "{:.3f}"
    scale = 100.0 if m.name.endswith("accuracy") else 1.0
    fmt = "{:.2f}" if scale != 1.0 or m.name == "powerlaw_alpha" else fmt
    extra = {m.coordinate: m.name} if m.coordinate else {}

    def cell(**where):
        value = scale * float(variable.sel(**where, **extra))
        span = None
        if ci is not None:
            low, high = (scale * float(v) for v in ci.sel(**where, **extra).values)
            span = (low, high) if np.isfinite(low) and np.isfinite(high) else None
        return value, fmt, span

    none = (float("nan"), fmt, None)
    if "student" in variable.dims:
        if layer not in results.teacher_layer.values or layer not in results.student_layer.values:
            return []
        return [(label, m.family, lambda model: cell(
            student=model, condition=clean, teacher_layer=layer, student_layer=layer)
            if model in results.student.values else none)]
    if "{band}" in label:
        return [(label.format(band=b), m.family, lambda model, b=b: cell(
            model=model, band=b, layer=layer)) for b in results.band.values]
    if "{condition}" in label:
        if not np.isfinite(variable.values).any():
            return []
        return [(label.format(condition=c), m.family, lambda model, c=c: cell(
            model=model, condition=c, layer=layer)) for c in [clean] + noisy]
    if "{clean}" in label and not np.isfinite(variable.values).any():
        return []
    return [(label.format(clean=clean), m.family, lambda model: cell(
        model=model, condition=clean, layer=layer))]
