"""The ``extract`` and ``audit`` commands, added to ``distillscope`` through the entry-point group
``distillscope.commands`` (``pyproject.toml``): the library never imports this package.

Importing this module imports neither torch nor timm; running a command does, and says which
extra to install when they are missing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from distillscope import DistillscopeError, InputError
from distillscope.cli import add_analysis_options, analyse_and_report

__all__ = ["register"]


def _extract(config: str, **options) -> None:
    """``distillscope_extract.extract`` with a clear error when the extract extras are absent."""
    try:
        from .run import extract
    except ImportError as err:  # torch or timm is missing
        raise DistillscopeError(
            f"distillscope extract needs the extract extras ({err.name or err} is missing); "
            "install them with: pip install -e '.[extract]'") from None
    extract(config, **options)


def cmd_extract(args: argparse.Namespace) -> int:
    _extract(args.config, output=args.output, overwrite=args.overwrite, device=args.device,
             batch_size=args.batch_size, amp=args.amp, workers=args.workers,
             channels_last=args.channels_last, fuse_batchnorm=args.fuse_batchnorm,
             dry_run=args.dry_run, progress=not args.quiet, allow_code=args.allow_code,
             shard=args.shard)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from distillscope.outputs import check_output_path

    out = Path(args.out or f"distillscope-{Path(args.config).stem}")
    if not Path(args.config).is_file():
        raise InputError(f"{args.config}: no such configuration file; see "
                                "extract/configs/ for examples")
    out.mkdir(parents=True, exist_ok=True)
    store, results, report = out / "store.h5", out / "results.nc", out / "report.html"
    resuming = (out / "store.h5.work").is_dir()
    for path, what in ((store, "store"), (results, "results file"), (report, "report")):
        if not (resuming and path == store):
            check_output_path(path, overwrite=args.overwrite, what=what, inputs=[args.config])
    start = time.perf_counter()
    _extract(args.config, output=store, overwrite=args.overwrite, device=args.device,
             progress=not args.quiet, allow_code=args.allow_code)
    analyse_and_report(args, store, results, report)
    print(f"audit done in {time.perf_counter() - start:.0f} s; the report: {report.resolve()}")
    return 0


def _config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="extraction configuration (.toml), e.g. extract/configs/default.toml")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: [run] device")
    p.add_argument("--allow-code", action="store_true",
                   help="run model factories the configuration names outside distillscope "
                        "(file.py:function, other packages); read them first")


def register(sub) -> None:
    """Add ``extract`` and ``audit`` to the ``distillscope`` parser's subcommands."""
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
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="models and inputs in NHWC layout: faster convolutions on most CPUs "
                        "and GPUs, features equal within float rounding (default: [run] "
                        "channels_last)")
    p.add_argument("--fuse-batchnorm", action=argparse.BooleanOptionalAction, default=None,
                   help="fold eval-mode batch norms into the convolutions before them: one "
                        "pass less, features equal within float rounding (default: [run] "
                        "fuse_batchnorm)")
    p.add_argument("--workers", type=int,
                   help="threads building inputs ahead (default: [run] workers, else 0 on CPU)")
    p.add_argument("--shard", metavar="I/N",
                   help="extract slice I (0-based) of N of the samples into -o FOLDER "
                        "(FOLDER/shard-I-of-N.h5 and its manifest.json; default folder "
                        "CONFIG.shards); inspect and analyze read the folder as one store")
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
    add_analysis_options(p)
    p.set_defaults(func=cmd_audit)
