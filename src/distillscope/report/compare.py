"""Runs side by side and next to published numbers: ``distillscope compare``.

``combine`` puts several results files on one ``run`` dimension: every estimator of the
effective rank, the seed-aggregated rank and the parameter counts, each run's convention, store
and sample count as coordinates along ``run``, and each estimator's resolved centring and eps
per run (they differ between conventions). Nothing is averaged across runs: a number is only
ever read next to one computed the same way.

``render_comparison`` is the HTML page:

* **the conversion table**: runs of one store (same path and creation time) under different
  conventions, so a reader sees what "16 under A" is under B on the same features;
* **the runs**: each run's headline rank per model (its convention's primary estimator), with
  the convention in the column header; runs of different conventions are labelled, never merged;
* **collapse ratios**: student rank / teacher rank, per run, and per paper where the registry
  holds both under one convention and dataset;
* **the registry's numbers** for ``--papers``: each with its convention, and which runs were
  computed under the same named convention (the only ones it may be set against);
* **rank against parameter count**, every run on one figure.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .._errors import InputError
from ..conventions import library_convention
from .._version import __version__
from ..plot import headline_layer, reference_condition
from ..results.attributes import COORDINATES, describe
from .page import page_head, png

__all__ = ["combine", "render_comparison", "write_comparison"]


def combine(runs: Sequence[xr.Dataset], names: Sequence[str]) -> xr.Dataset:
    """The runs on one ``run`` dimension (module docstring); models, conditions and layers are
    the union, NaN where a run has none."""
    if len(runs) != len(names) or len(set(names)) != len(names):
        raise InputError(f"compare needs one distinct name per run; got {list(names)}")
    parts = []
    for name, r in _by_convention(runs, names):
        if "effective_rank" not in r or "estimator" not in r.dims:
            raise InputError(f"{name}: not a distillscope results file (no effective_rank)")
        part = xr.Dataset({
            "effective_rank": r["effective_rank"].reset_coords(drop=True),
            "n_params": ("model", r["n_params"].values.astype(np.float64)),
            "estimator_center": ("estimator", r["estimator_center"].values.astype(np.int8)),
            "estimator_eps": ("estimator", r["estimator_eps"].values.astype(np.float64)),
        }, coords={"model": r.model.values, "estimator": r.estimator.values})
        if "seed_averaged_rank" in r:
            part["seed_averaged_rank"] = r["seed_averaged_rank"].reset_coords(drop=True)
        part["role"] = ("model", r["role"].values.astype(str))
        parts.append(part.drop_encoding().expand_dims(run=[name]).assign_coords(
            run_convention=("run", [str(r.attrs.get("convention", ""))]),
            run_primary=("run", [str(r.attrs.get("convention_primary", "erank_variance"))]),
            run_store=("run", [str(r.attrs.get("store", ""))]),
            run_store_created=("run", [str(r.attrs.get("store_created", ""))]),
            run_n_samples=("run", [int(r.attrs.get("n_samples", -1))]),
            run_clean_condition=("run", [reference_condition(r)]),
            run_layer=("run", [headline_layer(r)])))
    out = xr.concat(parts, dim="run", join="outer", combine_attrs="drop", fill_value={
        "role": "", "estimator_center": -1})
    out.attrs = {"title": "distillscope comparison", "distillscope_version": __version__,
                 "runs": ", ".join(names),
                 "note": "each run keeps its convention (run_convention): compare numbers "
                         "only within one convention, or through the conversion table"}
    for name in out.data_vars:  # the runs' own attributes, or the coordinate's it was
        source = next((r[name].attrs for r in runs if name in r.variables), {})
        out[name].attrs = {k: v for k, v in (COORDINATES.get(name) or source).items()
                           if k in ("long_name", "units", "definition", "flag_values",
                                    "flag_meanings")}
    return describe(out)


def _by_convention(runs: Sequence[xr.Dataset], names: Sequence[str]):
    """(name, results) per run, a run of several conventions as one run per convention,
    named ``NAME[convention]``."""
    from ..results.conventions import convention_names, one_convention

    for name, r in zip(names, runs):
        if "convention" not in r.dims:
            yield name, r
            continue
        for convention in convention_names(r):
            yield f"{name}[{convention}]", one_convention(r, convention)


def _rank(combined: xr.Dataset, run: str, model: str, estimator: str | None = None) -> float:
    r = combined.sel(run=run)
    estimator = estimator or str(r["run_primary"].values)
    try:
        value = r["effective_rank"].sel(model=model, condition=str(r["run_clean_condition"].values),
                                        layer=str(r["run_layer"].values), estimator=estimator)
    except KeyError:
        return float("nan")
    return float(value)


def _table(head: list[str], rows: list[list[str]]) -> str:
    # long run and convention names may break after an underscore, so every column fits
    cells = "".join(f"<th{' class=l' if i == 0 else ''}>"
                    f"{html.escape(h).replace('_', '_<wbr>')}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(
        f"<td{' class=l' if i == 0 else ''}>{html.escape(c)}</td>" for i, c in enumerate(row))
        + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _fmt(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{value:.2f}"


def _conversion(combined: xr.Dataset) -> str:
    """Runs of one store under different conventions: the same features, every convention."""
    groups: dict[tuple[str, str], list[str]] = {}
    for run, store, created in zip(combined.run.values, combined["run_store"].values,
                                   combined["run_store_created"].values):
        groups.setdefault((str(store), str(created)), []).append(str(run))
    out = []
    for (store, _), runs in groups.items():
        conventions = [str(combined["run_convention"].sel(run=r).values) for r in runs]
        if len(set(conventions)) < 2:
            continue
        models = [m for m in combined.model.values
                  if any(np.isfinite(_rank(combined, r, str(m))) for r in runs)]
        head = ["model"] + [f"{c} ({combined['run_primary'].sel(run=r).values})"
                            for r, c in zip(runs, conventions)]
        rows = [[str(m)] + [_fmt(_rank(combined, r, str(m))) for r in runs] for m in models]
        out.append(f"<p>Store <code>{html.escape(store)}</code>: the same features under "
                   f"{len(set(conventions))} conventions (clean condition, embedding).</p>"
                   + _table(head, rows))
    if not out:
        return ("<p class='muted'>No conversion table: give runs of one store under different "
                "conventions (analyze STORE --convention NAME for each).</p>")
    return "".join(out)


def _runs(combined: xr.Dataset) -> str:
    runs = [str(r) for r in combined.run.values]
    head = ["model"] + [f"{r} ({combined['run_convention'].sel(run=r).values}: "
                        f"{combined['run_primary'].sel(run=r).values})" for r in runs]
    rows = []
    for m in combined.model.values:
        values = [_rank(combined, r, str(m)) for r in runs]
        if any(np.isfinite(values)):
            rows.append([str(m)] + [_fmt(v) for v in values])
    return _table(head, rows)


def _collapse(combined: xr.Dataset, papers: Sequence[str]) -> str:
    """Student / teacher rank: a student per row and a run per column, then the papers'."""
    from .. import papers as registry

    ratios: dict[str, dict[str, float]] = {}
    for run in (str(r) for r in combined.run.values):
        roles = combined["role"].sel(run=run)
        teacher = [str(m) for m, role in zip(combined.model.values, roles.values)
                   if role == "teacher"]
        if not teacher:
            continue
        t = _rank(combined, run, teacher[0])
        for m, role in zip(combined.model.values, roles.values):
            if role == "student":
                ratios.setdefault(run, {})[str(m)] = (_rank(combined, run, str(m)) / t
                                                      if t else float("nan"))
    students = list(dict.fromkeys(m for per in ratios.values() for m in per))
    out = _table(["student"] + list(ratios),
                 [[m] + [_fmt(ratios[r].get(m, float("nan"))) for r in ratios]
                  for m in students]) if ratios else ""
    rows = []
    for paper in papers:
        numbers = registry.numbers(paper, metric="effective_rank")
        for t in (n for n in numbers if n.role == "teacher"):
            for s in numbers:
                if s.role == "student" and (s.convention, s.dataset) == (t.convention,
                                                                         t.dataset):
                    rows.append([f"paper {paper}", s.model, s.convention,
                                 _fmt(s.value / t.value)])
    if rows:
        out += _table(["source", "student", "convention", "student / teacher rank"], rows)
    return out


def _registry(combined: xr.Dataset, papers: Sequence[str]) -> str:
    from .. import papers as registry

    out = []
    conventions = {str(r): str(c) for r, c in zip(combined.run.values,
                                                  combined["run_convention"].values)}
    for paper in papers:
        rows = []
        for n in registry.numbers(paper):
            library = library_convention(n.convention)
            same = [r for r, c in conventions.items() if n.convention and c == library]
            rows.append([n.model, n.metric + (f" @ {n.condition}" if n.condition else ""),
                         f"{n.value:g}{n.unit}", n.convention or "-", n.status, n.where,
                         ", ".join(same) or "none"])
        out.append(f"<h3>{html.escape(paper)}</h3>" + _table(
            ["model", "metric", "value", "convention", "status", "where",
             "runs under the same convention"], rows))
    return "".join(out) or "<p class='muted'>No paper asked for (--papers ID ...).</p>"


def _figure(combined: xr.Dataset) -> str:
    def draw(ax):
        for run in (str(r) for r in combined.run.values):
            params = combined["n_params"].sel(run=run).values
            ranks = np.array([_rank(combined, run, str(m)) for m in combined.model.values])
            ok = np.isfinite(params) & (params > 0) & np.isfinite(ranks)
            ax.scatter(params[ok], ranks[ok], label=f"{run} "
                       f"({combined['run_convention'].sel(run=run).values})")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("effective rank (each run's primary estimator)")
        ax.legend(fontsize=8)

    return (f'<figure><img alt="effective rank against parameter count" '
            f'src="data:image/png;base64,{png(draw)}"><figcaption>Effective rank against '
            "parameter count, every run (clean condition, embedding).</figcaption></figure>")


def render_comparison(combined: xr.Dataset, papers: Sequence[str] = (), *,
                      title: str = "distillscope comparison") -> str:
    """The comparison page (module docstring) as an HTML string."""
    return f"""{page_head(title)}
<p class="muted">{len(combined.run)} runs; distillscope {__version__}. Numbers are set side by
side only within one convention; the conversion table shows one store's features under each.</p>
<h2>Conversion table</h2>{_conversion(combined)}
<h2>Runs</h2>{_runs(combined)}
<h2>Collapse ratio</h2>{_collapse(combined, papers)}
<h2>Published numbers</h2>{_registry(combined, papers)}
<h2>Rank against size</h2>{_figure(combined)}
</body></html>
"""


def write_comparison(runs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], *,
                     papers: Sequence[str] = (), overwrite: bool = False) -> Path:
    """Compare results files into ``output``: ``.nc`` (the combined dataset) or ``.html``."""
    from .. import papers as registry
    from ..outputs import write_atomically
    from ..results import load_results, save_results

    output = Path(output)
    if output.suffix not in (".nc", ".html"):
        raise InputError(f"{output}: compare writes .nc (the runs on one run dimension) or "
                         ".html (the page)")
    for paper in papers:
        registry.numbers(paper)  # an unknown id fails here, naming the registry
    names = [Path(r).stem for r in runs]
    if len(set(names)) != len(names):
        names = [str(r) for r in runs]
    combined = combine([load_results(r) for r in runs], names)
    if output.suffix == ".nc":
        return save_results(combined, output, overwrite=overwrite, inputs=list(runs))
    page = render_comparison(combined, papers).encode("utf-8")
    return write_atomically(output, lambda fh: fh.write(page), overwrite=overwrite,
                            what="comparison", inputs=list(runs))
