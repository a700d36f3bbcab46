"""Tables of a results dataset, with their columns taken from the metric registry.

A metric shows in a table when its declaration names it (``Metric.tables``: table -> column
label). The console tables (``distillscope analyze``) and the report's headline table read the
same declarations, so adding a metric to a table is one entry in its declaration.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from ..metrics.registry import metrics

__all__ = ["columns", "rank_table", "alignment_table", "robustness_table", "console_tables"]


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


def console_tables(results: xr.Dataset) -> str:
    """The tables ``distillscope analyze`` prints: rank, then alignment and robustness when
    the results hold them."""
    parts = [rank_table(results)]
    if "student" in results.dims and columns("alignment", results):
        parts.append(alignment_table(results))
    if results.sizes.get("condition", 0) > 1 and columns("robustness", results):
        parts.append(robustness_table(results))
    return "\n".join(parts)
