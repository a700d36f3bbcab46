"""One self-contained HTML page from a results dataset: figures, headline numbers, definitions.

``distillscope report RESULTS.nc -o report.html``. The page has no external resource (figures
are inline PNG), so it can be mailed or archived as one file. Figures that the results cannot
support (no labels: no accuracy plot; no maps: no band plot) are listed with the reason.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np
import xarray as xr

from .._errors import InputError
from .._version import __version__

__all__ = ["render_report", "write_report", "CSP", "CSS", "page_head", "png"]

#: the page runs no script and loads nothing from elsewhere: its figures are data: URIs, its
#: style is inline; every string from the store or the results is escaped as well
CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
       "form-action 'none'")

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1180px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; } td.l, th.l { text-align: left; }
.figs { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figure img { width: 540px; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; max-width: 540px; }
.muted { color: #777; font-size: 0.9em; } code { font-size: 0.9em; }
.ci { color: #666; font-size: 0.85em; white-space: nowrap; }
"""


def page_head(title: str) -> str:
    """The start of a self-contained page: its policy (no script, nothing remote), its style
    and its title, escaped."""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{html.escape(title)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>"""


def png(draw) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.2), dpi=100, layout="constrained")
    draw(fig.add_subplot())
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def _figures(results: xr.Dataset) -> tuple[list[tuple[str, str, str]], list[str]]:
    from .. import plot

    wanted = [
        ("Eigen-spectrum", "covariance eigenvalues of the clean embeddings, over their sum",
         lambda ax: plot.spectrum(results, ax=ax)),
        ("Cumulative variance", "dashed: 90% of the variance (the paper's 'dims for 90%')",
         lambda ax: plot.cumulative_variance(results, ax=ax)),
        ("Effective rank against size", "erank_variance of the clean embedding; star: teacher",
         lambda ax: plot.rank_vs_params(results, ax=ax)),
        ("Variance captured", "student variance in the teacher's top-k principal directions "
         "(same-space pairs; arXiv 2603.06698 Fig. 1)",
         lambda ax: plot.variance_captured(results, ax=ax)),
        ("Accuracy under Gaussian noise", "linear probe fitted on clean train features "
         "(arXiv 2603.06698 Fig. 3)", lambda ax: plot.accuracy_vs_noise(results, ax=ax)),
        ("Spatial power by band", "low / mid / high fractions of non-DC power of every map layer",
         lambda ax: plot.band_fractions(results, ax=ax)),
        ("Radial power spectrum", "fraction of non-DC power per ring",
         lambda ax: plot.radial_profiles(results, ax=ax)),
        ("Frequency response", "feature drift under band-limited input noise over its mean "
         "across bands; decreasing = low-pass", lambda ax: plot.frequency_response(results, ax=ax)),
    ]
    if "linear_cka" in results:
        wanted.append(("CKA with the teacher", "linear CKA of every student with the teacher at "
                       "the headline layer, one marker per condition; coloured by family; bars: "
                       "the bootstrap interval where the results have one",
                       lambda ax: plot.cka_students(results, ax=ax)))
    drawn, skipped = [], []
    for title, caption, draw in wanted:
        try:
            image = png(draw)
        except (InputError, KeyError, ValueError) as err:
            skipped.append(f"{title}: {str(err).splitlines()[0]}")
            continue
        drawn.append((title, caption, image))
    return drawn, skipped


def _cell(value, fmt: str = "{:.3f}", span=None) -> str:
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return "<td>-</td>"
    if isinstance(value, str):
        return f'<td class="l">{html.escape(value)}</td>'
    if span is None:
        return f"<td>{fmt.format(value)}</td>"
    return (f"<td>{fmt.format(value)}<br><span class='ci'>{fmt.format(span[0])}-"
            f"{fmt.format(span[1])}</span></td>")


def _headline(results: xr.Dataset) -> str:
    """The headline numbers as two tables that fit the page: the models and their geometry
    (rank, dimensions, alignment), then robustness (accuracies, responses); an interval under
    each number that has one."""
    from ..plot import headline_layer, reference_condition
    from .tables import headline

    clean = reference_condition(results, None)
    layer = headline_layer(results)
    labels, rows, families = headline(results, clean, layer)
    robust = [i for i, f in enumerate(families) if f == "robustness"]
    geometry = [i for i in range(len(labels)) if i not in robust]
    tables = []
    for part, first in ((geometry, True), (robust, False)):
        if not part:
            continue
        cols = (["model", "role", "architecture", "parameters"] if first else ["model"])
        cols += [labels[i] for i in part]
        body = []
        for row in rows:
            m = row[0]
            cells = [_cell(m)]
            if first:
                cells += [_cell(str(results["role"].sel(model=m).values)),
                          _cell(str(results["architecture"].sel(model=m).values)),
                          f"<td>{int(results['n_params'].sel(model=m)):,}</td>"]
            cells += [_cell(*row[1 + i]) for i in part]
            body.append("<tr>" + "".join(cells) + "</tr>")
        text = len(cols) - len(part)
        head = "".join(f'<th class="l">{html.escape(c)}</th>' if i < text
                       else f"<th>{html.escape(c)}</th>" for i, c in enumerate(cols))
        tables.append(f"<table><tr>{head}</tr>{''.join(body)}</table>")
    ci = results.get("effective_rank_ci")
    note = ("" if ci is None else
            f" Under a number: its {ci.attrs.get('confidence', 0.95):.0%} interval "
            f"({html.escape(str(ci.attrs.get('method', '')))}, "
            f"{ci.attrs.get('replicates', '')} replicates).")
    return (f"<p>Layer <code>{html.escape(layer)}</code>, condition <code>{html.escape(clean)}</code>"
            f" unless a column says otherwise; accuracies in %.{note}</p>" + "".join(tables))


#: the seed paper's names of the default experiment's families (``distillscope.papers``)
PAPER_MODELS = {"teacher": "CLIP ViT-B/32 (teacher)", "S": "Student-S (width x1)",
                "M": "Student-M (width x2)", "L": "Student-L (width x4)"}
PAPER_SIGMAS = (0.0, 0.05, 0.1, 0.2)


def _published(who: str) -> tuple[float, list[float]]:
    """arXiv 2603.06698's effective rank (Table I) and probe accuracies of ``who``, from the
    papers registry."""
    from .. import papers

    rank = papers.numbers("arxiv_2603_06698", model=PAPER_MODELS[who], metric="effective_rank")
    accuracy = {n.condition: n.value for n in papers.numbers(
        "arxiv_2603_06698", model=PAPER_MODELS[who], metric="probe_accuracy")}
    return rank[0].value, [accuracy.get(f"gaussian_noise sigma={s:g} (normalized space)",
                                        float("nan")) for s in PAPER_SIGMAS]


def _paper(results: xr.Dataset) -> str:
    """Measured numbers next to arXiv 2603.06698's, when analysed under its convention."""
    if results.attrs.get("convention") != "arxiv_2603_06698" or "embedding" not in results.layer.values:
        return ""
    from ..plot import reference_condition as _reference

    kinds = list(results["condition_kind"].values)
    if "clean" not in kinds:
        return ""
    clean = _reference(results, None)
    teacher = next((str(m) for m, r in zip(results.model.values, results["role"].values)
                    if r == "teacher"), None)
    families = list(map(str, results["family"].values)) if "family" in results.coords else []
    by_sigma = {0.0: clean}
    for c, k, s, space in zip(results.condition.values, kinds, results["condition_sigma"].values,
                              results["condition_space"].values):
        if k == "gaussian_noise" and space == "normalized" and np.isfinite(s):
            by_sigma.setdefault(round(float(s), 6), str(c))

    def rank(who: str) -> float:
        if who == "teacher":
            return float(results["effective_rank"].sel(model=teacher, condition=clean,
                                                       layer="embedding", estimator="erank_variance"))
        return float(results["seed_averaged_rank"].sel(family=who, condition=clean, layer="embedding"))

    def accuracy(who: str, sigma: float) -> float:
        c = by_sigma.get(round(sigma, 6))
        if c is None or "probe_accuracy" not in results:
            return float("nan")
        if who == "teacher":
            return 100 * float(results["probe_accuracy"].sel(model=teacher, condition=c, layer="embedding"))
        return 100 * float(results["probe_accuracy_seed_mean"].sel(family=who, condition=c, layer="embedding"))

    rows = []
    fmt = lambda v: "-" if not np.isfinite(v) else f"{v:.2f}"  # noqa: E731
    for who in ["teacher"] + [f for f in ("S", "M", "L") if f in families]:
        if who == "teacher" and teacher is None:
            continue
        published_rank, published_accuracy = _published(who)
        measured = [accuracy(who, s) for s in PAPER_SIGMAS]
        rows.append(f'<tr><td class="l">{who}</td><td>{published_rank:.2f}</td>'
                    f"<td>{rank(who):.2f}</td>"
                    f'<td>{" / ".join(fmt(v) for v in published_accuracy)}</td>'
                    f'<td>{" / ".join(fmt(v) for v in measured)}</td></tr>')
    if len(rows) < 2:
        return ""
    return ("<h2>Next to arXiv 2603.06698</h2><p>Effective rank: erank_variance of the clean "
            "L2-normalised embedding (students: seed-averaged spectrum over the family; paper: "
            "Table I, CIFAR-10 test split). Accuracy (%): linear probe at Gaussian noise sigma "
            "0 / 0.05 / 0.1 / 0.2 in normalized space (students: mean over 3 seeds, here and in "
            "the paper; teacher: one probe). Published values from the papers registry "
            "(<code>distillscope.papers</code>, <code>docs/papers.md</code>).</p>"
            "<table><tr><th class='l'>model</th><th>paper rank</th><th>here</th>"
            "<th>paper accuracy</th><th>here</th></tr>" + "".join(rows) + "</table>")


def _definitions(results: xr.Dataset) -> str:
    """The glossary: every variable with the long name, units, definition and source its
    registry declaration gave it."""
    rows = []
    for name, var in sorted(results.data_vars.items()):
        source = str(var.attrs.get("source", ""))
        rows.append(f'<tr><td class="l"><code>{html.escape(name)}</code></td>'
                    f'<td class="l">{html.escape(", ".join(var.dims))}</td>'
                    f'<td class="l">{html.escape(str(var.attrs.get("long_name", "")))}</td>'
                    f'<td class="l">{html.escape(str(var.attrs.get("units", "")))}</td>'
                    f'<td class="l">{html.escape(str(var.attrs.get("definition", "")))}'
                    + (f" <i>({html.escape(source)})</i>" if source else "") + "</td></tr>")
    params = "".join(f'<tr><td class="l"><code>{html.escape(str(k))}</code></td>'
                     f'<td class="l">{html.escape(str(v))}</td></tr>'
                     for k, v in sorted(results.attrs.items()))
    estimators = "".join(
        f'<tr><td class="l"><code>{html.escape(str(e))}</code></td>'
        f'<td>{bool(c)}</td><td>{float(eps):g}</td><td class="l">{html.escape(str(d))}</td></tr>'
        for e, c, eps, d in zip(results.estimator.values, results["estimator_center"].values,
                                results["estimator_eps"].values,
                                results["estimator_definition"].values))
    return ("<h3>Variables</h3><table><tr><th class='l'>name</th><th class='l'>dims</th>"
            "<th class='l'>long name</th><th class='l'>units</th><th class='l'>definition</th></tr>"
            + "".join(rows) + "</table>"
            "<h3>Effective-rank estimators</h3><table><tr><th class='l'>estimator</th>"
            "<th>centred</th><th>eps</th><th class='l'>definition</th></tr>" + estimators
            + "</table><h3>Parameters of this run</h3><table>" + params + "</table>")


def render_report(results: xr.Dataset, *, title: str | None = None) -> str:
    """The report page as an HTML string (figures inline)."""
    if "effective_rank" not in results:
        raise InputError("not a distillscope results dataset: it has no 'effective_rank'")
    several = ""
    if "convention" in results.dims:  # one pass, several conventions: the first in full
        from ..results.conventions import one_convention
        from .tables import conversion_table

        several = (f"<h2>Conventions</h2><pre>{html.escape(conversion_table(results))}</pre>"
                   "<p class='muted'>The rest of the page shows the first convention; "
                   "<code>distillscope compare</code> sets them all side by side.</p>")
        results = one_convention(results)
    figures, skipped = _figures(results)
    title = title or f"distillscope report: {Path(str(results.attrs.get('store', 'results'))).name}"
    figs = "".join(
        f'<figure><img alt="{html.escape(t)}" src="data:image/png;base64,{img}">'
        f"<figcaption><b>{html.escape(t)}.</b> {html.escape(c)}</figcaption></figure>"
        for t, c, img in figures)
    missing = ("<p class='muted'>Not drawn: " + "; ".join(html.escape(s) for s in skipped)
               + "</p>") if skipped else ""
    conditions = ", ".join(
        f"{c} ({k}" + (f", sigma {s:g}" if np.isfinite(s) else "") + (f", {b} band" if b else "") + ")"
        for c, k, s, b in zip(results.condition.values, results["condition_kind"].values,
                              results["condition_sigma"].values if "condition_sigma" in results.coords
                              else [np.nan] * results.sizes["condition"],
                              results["condition_band"].values if "condition_band" in results.coords
                              else [""] * results.sizes["condition"]))
    return f"""{page_head(title)}
<p class="muted">store {html.escape(str(results.attrs.get('store', '')))} ({html.escape(str(results.attrs.get('store_producer', '')))});
analysed {html.escape(str(results.attrs.get('created', '')))} with distillscope {html.escape(str(results.attrs.get('distillscope_version', '')))},
convention <code>{html.escape(str(results.attrs.get('convention', '')))}</code>; {int(results.attrs.get('n_samples', 0))} samples;
report by distillscope {__version__}.</p>
<p>Conditions: {html.escape(conditions)}.</p>{several}
<h2>Headline numbers</h2>{_headline(results)}
{_paper(results)}
<h2>Figures</h2><div class="figs">{figs}</div>{missing}
<h2>Definitions and parameters</h2>{_definitions(results)}
</body></html>
"""


def write_report(results: xr.Dataset | str | os.PathLike[str], path: str | os.PathLike[str], *,
                 overwrite: bool = False, title: str | None = None) -> Path:
    """Write the report atomically (a temporary file renamed into place).

    Never over the results file it reads nor the store they came from, nor over anything but
    a regular file; an existing report only with ``overwrite``.
    """
    from ..outputs import check_output_path, write_atomically
    from ..results import load_results

    path = Path(path)
    source = None if isinstance(results, xr.Dataset) else results
    check_output_path(path, overwrite=overwrite, what="report", inputs=[source])
    if source is not None:
        results = load_results(source)
    page = render_report(results, title=title).encode("utf-8")
    return write_atomically(path, lambda fh: fh.write(page), overwrite=overwrite, what="report",
                            inputs=[source, results.attrs.get("store")])
