"""The ``distillscope`` command: extract, inspect, analyze, report, demo.

Errors print one line (``distillscope: error: ...``) and exit with status 1, or 2 for a wrong
command line; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .._errors import DistillscopeError
from .._version import __version__

EXIT_ERROR = 1


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..store import validate_store

    with validate_store(args.store, deep=args.deep, allow_incomplete=args.allow_incomplete) as st:
        a = st.attrs
        print(f"{st.path}  distillscope store v{a.get('format_version')}  "
              f"complete={bool(a.get('complete'))}")
        print(f"  producer {a.get('producer')} {a.get('producer_version')}, created {a.get('created')}")
        extra = []
        if st.labels is not None:
            extra.append(f"{len(set(st.labels.tolist()))} labels")
        if st.splits is not None:
            names, counts = __import__("numpy").unique(st.splits, return_counts=True)
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


def _table(results, limit_estimator: str) -> str:
    lines = []
    ranks = results["effective_rank"].sel(estimator=limit_estimator)
    header = f"{'model':<20} {'condition':<16} {'layer':<12} {limit_estimator:>16} {'dims@90%':>9}"
    lines.append(header)
    n90 = results["effective_rank"].sel(estimator="n_components_90")
    for m in results.model.values:
        for c in results.condition.values:
            for layer in results.layer.values:
                if not bool(results["available"].sel(model=m, condition=c, layer=layer)):
                    continue
                r = float(ranks.sel(model=m, condition=c, layer=layer))
                k = int(n90.sel(model=m, condition=c, layer=layer))
                lines.append(f"{m:<20} {c:<16} {layer:<12} {r:16.2f} {k:9d}")
    return "\n".join(lines)


def _alignment_table(results) -> str:
    columns = {"linear_cka": "CKA", "linear_cka_debiased": "CKA debiased", "svcca": "SVCCA",
               "mutual_knn": "mutual kNN", "linear_predictivity": "CV R^2"}
    names = list(columns)
    lines = [f"{'student':<20} {'condition':<16} {'teacher/student layer':<26} "
             + " ".join(f"{label:>13}" for label in columns.values())]
    for s in results.student.values:
        for c in results.condition.values:
            for t in results.teacher_layer.values:
                for layer in results.student_layer.values:
                    values = [float(results[n].sel(student=s, condition=c, teacher_layer=t,
                                                   student_layer=layer)) for n in names]
                    if all(v != v for v in values):  # all NaN: the pair does not exist
                        continue
                    lines.append(f"{s:<20} {c:<16} {t + '/' + layer:<26} "
                                 + " ".join(f"{v:13.3f}" for v in values))
    return "\n".join(lines)


def _robustness_table(results) -> str:
    columns = {"feature_drift": "drift", "cka_clean_noisy": "CKA(clean)",
               "effective_rank_change": "d erank", "probe_accuracy": "probe acc",
               "knn_accuracy": "kNN acc"}
    names = [n for n in columns if n in results]
    lines = [f"{'model':<20} {'condition':<16} {'layer':<12} "
             + " ".join(f"{columns[n]:>11}" for n in names)]
    for m in results.model.values:
        for c in results.condition.values:
            for layer in results.layer.values:
                if not bool(results["available"].sel(model=m, condition=c, layer=layer)):
                    continue
                values = [float(results[n].sel(model=m, condition=c, layer=layer)) for n in names]
                lines.append(f"{m:<20} {c:<16} {layer:<12} "
                             + " ".join(f"{v:11.3f}" for v in values))
    return "\n".join(lines)


def _run_analysis(args: argparse.Namespace, store, output: Path):
    from ..analysis import analyze
    from ..conventions import get_convention
    from ..results import save_results
    from ..outputs import check_output_path

    check_output_path(output, overwrite=args.overwrite, what="results file", inputs=[store])
    start = time.perf_counter()
    results = analyze(store, models=args.models, conditions=args.conditions, layers=args.layers,
                      convention=args.convention, l2_normalize=args.l2_normalize,
                      center=args.center, pooling=args.pooling, rows=args.rows,
                      allow_incomplete=getattr(args, "allow_incomplete", False),
                      alignment=args.alignment, robustness=args.robustness,
                      progress=not args.quiet)
    save_results(results, output, overwrite=args.overwrite)
    primary = get_convention(args.convention).primary
    print(_table(results, primary))
    if "linear_cka" in results:
        print(_alignment_table(results))
    if "feature_drift" in results and results.sizes["condition"] > 1:
        print(_robustness_table(results))
    print(f"wrote {output} ({time.perf_counter() - start:.1f} s, convention {args.convention})")
    return results


def cmd_analyze(args: argparse.Namespace) -> int:
    _run_analysis(args, args.store, Path(args.output))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import make_demo_store
    from ..outputs import check_output_path

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store, results = out / "store.h5", out / "results.nc"
    check_output_path(store, overwrite=args.overwrite, what="store")
    check_output_path(results, overwrite=args.overwrite, what="results file")
    make_demo_store(store, n_samples=args.samples, overwrite=args.overwrite)
    print(f"wrote {store} (synthetic teacher and students, {args.samples} samples)")
    report = out / "report.html"
    check_output_path(report, overwrite=args.overwrite, what="report")
    _analyse_and_report(args, store, results, report)
    print(f"wrote {report}: open it in a browser")
    print(f"next: distillscope inspect {store}   |   python -c \"import distillscope; "
          f"print(distillscope.load_results('{results}'))\"")
    return 0


def _extract(config: str, **options) -> None:
    """``distillscope_extract.extract`` with a clear error when the extract extras are absent."""
    try:
        from distillscope_extract import extract
    except ImportError as err:  # torch, timm or the extract package itself is missing
        raise DistillscopeError(
            f"distillscope extract needs the extract extras ({err.name or err} is missing); "
            "install them with: pip install -e '.[extract]'") from None
    extract(config, **options)


def cmd_extract(args: argparse.Namespace) -> int:
    _extract(args.config, output=args.output, overwrite=args.overwrite, device=args.device,
             batch_size=args.batch_size, amp=args.amp, workers=args.workers,
             dry_run=args.dry_run, progress=not args.quiet)
    return 0


def _analyse_and_report(args: argparse.Namespace, store: Path, results: Path, report: Path) -> None:
    from ..report import write_report

    dataset = _run_analysis(args, store, results)
    write_report(dataset, report, overwrite=args.overwrite)


def cmd_audit(args: argparse.Namespace) -> int:
    from ..outputs import check_output_path

    out = Path(args.out or f"distillscope-{Path(args.config).stem}")
    if not Path(args.config).is_file():
        raise DistillscopeError(f"{args.config}: no such configuration file; see "
                                "extract/configs/ for examples")
    out.mkdir(parents=True, exist_ok=True)
    store, results, report = out / "store.h5", out / "results.nc", out / "report.html"
    resuming = (out / "store.h5.work").is_dir()
    for path, what in ((store, "store"), (results, "results file"), (report, "report")):
        if not (resuming and path == store):
            check_output_path(path, overwrite=args.overwrite, what=what, inputs=[args.config])
    start = time.perf_counter()
    _extract(args.config, output=store, overwrite=args.overwrite, device=args.device,
             progress=not args.quiet)
    _analyse_and_report(args, store, results, report)
    print(f"audit done in {time.perf_counter() - start:.0f} s; the report: {report.resolve()}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report

    path = write_report(args.results, args.output, overwrite=args.overwrite, title=args.title)
    print(f"wrote {path}: open it in a browser (one self-contained file)")
    return 0


def _config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="extraction configuration (.toml), e.g. extract/configs/default.toml")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: [run] device")


def _analysis_options(p: argparse.ArgumentParser) -> None:
    from ..conventions import CONVENTIONS
    from ..engine.pooling import POOLINGS

    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--convention", default="default", choices=list(CONVENTIONS),
                   help="named preprocessing and estimator choices (default: %(default)s)")
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
    p.add_argument("--no-alignment", dest="alignment", action="store_false",
                   help="skip the teacher-student alignment metrics")
    p.add_argument("--no-robustness", dest="robustness", action="store_false",
                   help="skip drift, CKA(clean, noisy), probes and kNN against the clean condition")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillscope",
        description="Spectral diagnostics of distilled models from saved features.")
    parser.add_argument("--version", action="version", version=f"distillscope {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="list and validate the contents of a feature store")
    p.add_argument("store", help="feature store (.h5)")
    p.add_argument("--deep", action="store_true",
                   help="also read every value: verify checksums and find NaN/Inf")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="inspect a store whose writer did not finish")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("analyze", help="compute spectra and effective ranks of a store")
    p.add_argument("store", help="feature store (.h5)")
    p.add_argument("-o", "--output", required=True, help="results file to write (.nc)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="analyse a store whose writer did not finish")
    _analysis_options(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("extract", help="run teacher and students over a dataset into a store",
                       description="Run the models of a TOML configuration (extract/README.md) "
                       "over clean and corrupted data and write their activations to a feature "
                       "store. Safe to kill: rerunning the same command resumes.")
    _config_options(p)
    p.add_argument("-o", "--output", help="store to write (default: [run] output, else CONFIG.h5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.add_argument("--batch-size", type=int, help="default: [run] batch_size")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (CUDA only; default: [run] amp)")
    p.add_argument("--workers", type=int,
                   help="threads building inputs ahead (default: [run] workers, else 0 on CPU)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would be extracted and the store size; write nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("audit", help="extract, analyze and report in one go",
                       description="Run an extraction configuration, analyse the store and "
                       "write the HTML report, all in one output folder (store.h5, results.nc, "
                       "report.html). Rerunning resumes an interrupted extraction.")
    _config_options(p)
    p.add_argument("--out", help="output folder (default: distillscope-CONFIG)")
    _analysis_options(p)
    p.set_defaults(func=cmd_audit)

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
    _analysis_options(p)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (DistillscopeError, OSError) as err:
        if args.debug:
            raise
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"distillscope: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("distillscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
