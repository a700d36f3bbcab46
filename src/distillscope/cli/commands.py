"""The library's commands: inspect, analyze, report, demo; and the analysis options and run
that other commands (``audit``, from the extract package) reuse."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["add_analysis_options", "analysis_options", "run_analysis", "register"]


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..store import validate_store

    with validate_store(args.store, deep=args.deep, allow_incomplete=args.allow_incomplete,
                        allow_external=args.allow_external) as st:
        for note in st.notes:
            print(f"distillscope: note: {note}", file=sys.stderr)
        a = st.attrs
        print(f"{st.path}  distillscope store v{a.get('format_version')}  "
              f"complete={bool(a.get('complete'))}")
        print(f"  producer {a.get('producer')} {a.get('producer_version')}, created {a.get('created')}")
        for i, shard in enumerate(getattr(st, "shards", ())):  # a folder of shards (store.shards)
            print(f"  shard {i}/{len(st.shards)}: {shard.path.name}, samples "
                  f"{st.bounds[i]}..{st.bounds[i + 1] - 1}")
        extra = []
        if st.labels is not None:
            extra.append(f"{len(set(st.labels.tolist()))} labels")
        if st.splits is not None:
            names, counts = np.unique(st.splits, return_counts=True)
            extra.append(", ".join(f"{c} {s}" for s, c in zip(names, counts)))
        print(f"  samples {st.n_samples}" + (f" ({'; '.join(extra)})" if extra else ""))
        print("  conditions:")
        for name, attrs in st.conditions.items():
            params = ", ".join(f"{k}={v}" for k, v in attrs.items() if k != "kind")
            print(f"    {name:<20} {attrs.get('kind')}" + (f" ({params})" if params else ""))
        print("  models:")
        for name, m in st.models.items():
            extra = ", ".join(f"{k}={v}" for k, v in m.attrs.items())
            print(f"    {name:<20} {m.role:<8} {m.architecture}  {m.n_params:,} params"
                  + (f"  [{extra}]" if extra else ""))
            for condition in st.conditions:
                for layer, info in st.layers(name, condition).items():
                    detail = ""
                    if info.kind == "tokens":
                        detail = f" grid {info.grid[0]}x{info.grid[1]} + {info.num_prefix_tokens} prefix"
                    print(f"      {condition + '/' + layer:<30} {info.kind:<9} "
                          f"{_fmt_shape(info.shape)} {info.dtype}{detail}")
        print("  valid" + (" (every value read: checksums and finiteness verified)" if args.deep
                           else " (structure; --deep also reads every value)"))
    return 0


def analysis_options(args: argparse.Namespace):
    """The ``AnalysisOptions`` of parsed analysis arguments (``add_analysis_options``)."""
    from ..engine.options import AnalysisOptions

    return AnalysisOptions.from_keywords(
        models=args.models, conditions=args.conditions, layers=args.layers,
        convention=args.convention, l2_normalize=args.l2_normalize, center=args.center,
        pooling=args.pooling, rows=args.rows, metrics=args.metrics,
        remove_map_mean=args.remove_map_mean,
        allow_incomplete=getattr(args, "allow_incomplete", False),
        allow_external=getattr(args, "allow_external", False),
        alignment=args.alignment, robustness=args.robustness, progress=not args.quiet,
        bootstrap=args.bootstrap, bootstrap_groups=args.bootstrap_groups,
        confidence=args.confidence, interval=args.interval, bootstrap_seed=args.bootstrap_seed,
        resample=args.resample, neighbours=args.neighbours,
        uniformity_samples=args.uniformity_samples or None)


def run_analysis(args: argparse.Namespace, store, output: Path):
    """Analyse ``store`` with the parsed options, save the results to ``output`` (never over
    the store), print the tables; returns the results."""
    import warnings

    from ..engine.analyze import AnalysisNote, analyze
    from ..outputs import check_output_path
    from ..report.tables import console_tables, summary_table
    from ..results import save_results

    check_output_path(output, overwrite=args.overwrite, what="results file", inputs=[store])
    start = time.perf_counter()
    options = analysis_options(args)
    scheduler = getattr(args, "scheduler", None)
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always", AnalysisNote)
        if scheduler:  # the pass as tasks on dask.distributed (engine.distributed)
            from ..engine.distributed import scheduler_client

            with scheduler_client(scheduler) as client:
                results = analyze(store, options, client=client)
        else:
            results = analyze(store, options)
    for note in notes:
        if issubclass(note.category, AnalysisNote):
            print(f"distillscope: note: {note.message}", file=sys.stderr)
        else:
            warnings.showwarning(note.message, note.category, note.filename, note.lineno)
    save_results(results, output, overwrite=args.overwrite)
    print(console_tables(results) if args.verbose else summary_table(results))
    print(f"wrote {output} ({time.perf_counter() - start:.1f} s, convention {args.convention})")
    return results


def cmd_analyze(args: argparse.Namespace) -> int:
    if args.plan:
        from ..engine.analyze import analyze

        plans = analyze(args.store, analysis_options(args), dry_run=True)
        if isinstance(plans, list):
            print(f"{len(plans)} conventions in one pass: every dataset is read once for all "
                  "of them; conventions that prepare rows alike share their accumulators")
        for plan in plans if isinstance(plans, list) else [plans]:
            print(plan.describe())
        return 0
    run_analysis(args, args.store, Path(args.output))
    return 0


def analyse_and_report(args: argparse.Namespace, store: Path, results: Path, report: Path) -> None:
    """``run_analysis`` then the HTML report of its results."""
    from ..report import write_report

    dataset = run_analysis(args, store, results)
    write_report(dataset, report, overwrite=args.overwrite)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import make_demo_store
    from ..outputs import check_output_path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store, results, report = out / "store.h5", out / "results.nc", out / "report.html"
    for path, what in ((store, "store"), (results, "results file"), (report, "report")):
        check_output_path(path, overwrite=args.overwrite, what=what)
    make_demo_store(store, n_samples=args.samples, overwrite=args.overwrite)
    print(f"wrote {store} (synthetic teacher and students, {args.samples} samples)")
    analyse_and_report(args, store, results, report)
    print(f"wrote {report}: open it in a browser")
    print(f"next: distillscope inspect {store}   |   python -c \"import distillscope; "
          f"print(distillscope.load_results('{results}'))\"")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report

    path = write_report(args.results, args.output, overwrite=args.overwrite, title=args.title)
    print(f"wrote {path}: open it in a browser (one self-contained file)")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from ..metrics.registry import markdown_table, metrics

    if args.markdown:
        print(markdown_table())
        return 0
    print(f"{'metric':<28} {'takes':<16} {'default':<8} long name (units)")
    for name, m in metrics().items():
        print(f"{name:<28} {m.takes:<16} {'yes' if m.default else 'no':<8} {m.long_name} "
              f"({m.units}); docs/metrics.md#{m.anchor}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..report.compare import write_comparison

    out = write_comparison(args.runs, args.output, papers=args.papers or (),
                           overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def cmd_papers(args: argparse.Namespace) -> int:
    from .. import papers
    from .._errors import InputError

    if args.markdown:
        print(papers.summary_markdown())
        return 0
    entries = papers.load()
    for wanted in args.ids:
        if wanted not in entries:
            raise InputError(f"papers: no entry {wanted!r}; the registry has "
                             f"{', '.join(entries)}")
    for entry in entries.values():
        if args.ids and entry.id not in args.ids:
            continue
        p = entry.paper
        print(f"{entry.id}: {p.title} ({p.authors}; {p.venue}, {p.year}"
              f"{', arXiv ' + p.arxiv if p.arxiv else ''})")
        for c in entry.conventions.values():
            print(f"  convention {c.name} [{c.status}]: {c.quantity}")
        shown = [n for n in entry.numbers if args.status in (None, n.status)]
        for n in shown:
            what = n.metric + (f" @ {n.condition}" if n.condition else "")
            print(f"  {n.model:<36.36} {what:<44.44} {n.value:>10g}{n.unit:<2} "
                  f"[{n.status}] {n.where}")
        if not shown:
            print("  (no numbers" + (f" with status {args.status}" if args.status else "") + ")")
    return 0


def _convention_list(text: str) -> str:
    """``--convention``: names known (or "all"), checked when the arguments are parsed."""
    from .._errors import InputError
    from ..conventions import resolve_conventions

    try:
        resolve_conventions(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _count(low: int):
    """An argparse type: an integer of at least ``low`` (a usage error otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer of at least {low}; got {text!r}")
        return value
    return parse


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """The options of an analysis (``analyze``, ``demo``, ``audit``)."""
    from ..conventions import CONVENTIONS
    from ..engine.pooling import POOLINGS
    from ..engine.options import NEIGHBOURS, UNIFORMITY_SAMPLES
    from ..metrics.registry import metrics

    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--convention", default="default", metavar="NAME[,NAME...]",
                   type=_convention_list,
                   help="named preprocessing and estimator choices (default: %(default)s); "
                        "several, or 'all', are computed in the same single pass and the "
                        "results gain a convention dimension; one of: "
                        + ", ".join(CONVENTIONS))
    p.add_argument("--metrics", metavar="NAME[,NAME...]",
                   help='registered metrics to compute: "default" (the default), "all", or '
                        'names, e.g. "default,rbf_cka"; registered: ' + ", ".join(metrics()))
    p.add_argument("--l2-normalize", dest="l2_normalize", action=argparse.BooleanOptionalAction,
                   default=None, help="L2-normalise samples (default: as the convention says)")
    p.add_argument("--center", action=argparse.BooleanOptionalAction, default=None,
                   help="centre for every estimator (default: as the convention says)")
    p.add_argument("--pooling", default="auto", choices=list(POOLINGS),
                   help="how maps and tokens become vectors (default: %(default)s)")
    p.add_argument("--models", nargs="+", metavar="MODEL", help="only these models")
    p.add_argument("--conditions", nargs="+", metavar="COND", help="only these conditions")
    p.add_argument("--layers", nargs="+", metavar="LAYER", help="only these layers")
    p.add_argument("--rows", type=int, default=None, help="samples per streamed block")
    p.add_argument("--remove-map-mean", action="store_true",
                   help="remove each map's spatial mean before its spectrum")
    p.add_argument("--no-alignment", dest="alignment", action="store_false",
                   help="skip the teacher-student alignment metrics")
    p.add_argument("--no-robustness", dest="robustness", action="store_false",
                   help="skip drift, CKA(clean, noisy), probes and kNN against the clean condition")
    p.add_argument("--bootstrap", type=_count(0), default=0, metavar="B",
                   help="confidence intervals in the same pass (default: none): "
                        "<variable>_ci; B bootstrap replicates for --interval bca or percentile "
                        "(200 is typical; the default --interval jackknife needs none)")
    p.add_argument("--bootstrap-groups", type=_count(2), default=None, metavar="G",
                   help="groups of samples the bootstrap resamples (default: as many as fit "
                        "1.25 GiB of per-group sums, 16 to 128; memory grows with G)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="level of the intervals (default: %(default)s)")
    p.add_argument("--interval", choices=("jackknife", "bca", "percentile"),
                   default="jackknife",
                   help="jackknife (bias-corrected, Student t over the groups: the best "
                        "coverage measured), bca or percentile (default: %(default)s)")
    p.add_argument("--bootstrap-seed", type=_count(0), default=0, metavar="SEED",
                   help="seed of the groups and replicates (default: %(default)s)")
    p.add_argument("--resample", choices=("default", "all"), default="default",
                   help="which metrics get intervals: default (spectra, CKA, drift, probes: "
                        "within 2x the time) or all (also the CCA family, Procrustes, angles, "
                        "variance captured, cross-validated predictivity and retention: each "
                        "replicate redoes their decompositions; docs/performance.md)")
    p.add_argument("--neighbours", choices=NEIGHBOURS, default="exact",
                   help="how mutual kNN and kNN accuracy find neighbours: the exact pass "
                        "(n^2), or a faiss index: faiss (exact), faiss-ivf, faiss-hnsw "
                        "(approximate; pip install faiss-cpu; docs/scaling.md)")
    p.add_argument("--uniformity-samples", type=_count(0), default=UNIFORMITY_SAMPLES,
                   metavar="M", help="above M samples, uniformity on a seeded subsample of M "
                   "with its standard error (0: always exact; default: %(default)s)")
    p.add_argument("--scheduler", metavar="local:N|tcp://HOST:PORT",
                   help="run the pass on dask.distributed: a LocalCluster of N worker "
                        "processes, or a running scheduler (docs/scaling.md; needs the "
                        "distributed extra)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print every table (rank, alignment, robustness), not the summary")


def _add_store_access(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-incomplete", action="store_true",
                   help="read a store whose writer did not finish")
    p.add_argument("--allow-external", action="store_true",
                   help="follow external links and read virtual datasets or external storage "
                        "(other files); refused by default, and said when read")


def register(sub) -> None:
    """Add the library's commands to the ``distillscope`` parser's subcommands."""
    p = sub.add_parser("inspect", help="list and validate the contents of a feature store")
    p.add_argument("store", help="feature store (.h5)")
    p.add_argument("--deep", action="store_true",
                   help="also read every value: verify checksums and find NaN/Inf")
    _add_store_access(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("analyze", help="every metric of a store, in one pass",
                       description="Read the store once and compute every chosen metric "
                       "(docs/metrics.md); write the results (netCDF) and print the tables.")
    p.add_argument("store", help="feature store (.h5)")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("-o", "--output", help="results file to write (.nc)")
    group.add_argument("--plan", action="store_true",
                       help="print what would be read and computed (bytes, memory); read nothing")
    _add_store_access(p)
    add_analysis_options(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("metrics", help="list every registered metric (analyze --metrics NAME)")
    p.add_argument("--markdown", action="store_true",
                   help="as the table of docs/metrics.md")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("compare", help="runs side by side and next to published numbers",
                       description="Put results files on one run dimension (.nc) or one page "
                       "(.html): the conversion table of one store under several conventions, "
                       "the runs, collapse ratios, the registry's numbers (docs/papers.md).")
    p.add_argument("runs", nargs="+", help="results files (.nc) written by analyze")
    p.add_argument("--papers", nargs="*", metavar="ID", help="registry entries to show")
    p.add_argument("-o", "--output", required=True, help="OUT.html (the page) or OUT.nc")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("papers", help="list the papers registry: published numbers and the "
                       "conventions they were computed under (docs/papers.md)")
    p.add_argument("ids", nargs="*", help="registry ids to show (default: all)")
    p.add_argument("--status", choices=("verified", "provisional"),
                   help="only numbers of this status")
    p.add_argument("--markdown", action="store_true", help="as the table of docs/papers.md")
    p.set_defaults(func=cmd_papers)

    p = sub.add_parser("report", help="one self-contained HTML page from a results file",
                       description="Figures, headline numbers per model, and every definition "
                       "and parameter of a results file, in one HTML page.")
    p.add_argument("results", help="results file (.nc) written by distillscope analyze")
    p.add_argument("-o", "--output", required=True, help="HTML file to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    p.add_argument("--title", help="page title (default: from the store's name)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="generate a synthetic store and analyse it")
    p.add_argument("--out", default="distillscope-demo", help="output folder (default: %(default)s)")
    p.add_argument("--samples", type=int, default=2000, help="samples (default: %(default)s)")
    add_analysis_options(p)
    p.set_defaults(func=cmd_demo)
