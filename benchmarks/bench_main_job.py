"""The README's main job, stage by stage, against its 120-second target on 2 cores.

``python benchmarks/bench_main_job.py [--quick]``

The main job is ``distillscope audit extract/configs/default.toml --convention
arxiv_2603_06698``: extraction of the embedded default (12 models x 7 conditions x 1,797 digits),
the analysis under the paper's convention, the HTML report. It is run twice:

* stage by stage in this process (the same calls ``audit`` makes), printing each stage's time
  and share of the whole, and the extraction's ratio to the models' forward passes alone on the
  same input batches (the floor of any extraction; target <= 1.1x on a CPU);
* as the README's command in a fresh process, the time a user waits (target <= 120 s).

``--quick`` keeps 48 samples per split and skips the second run (a smoke run; the targets then
mean nothing).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import arguments  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "extract" / "configs" / "default.toml"
CONVENTION = "arxiv_2603_06698"
TARGET_SECONDS = 120.0


def forward_only(plan) -> float:
    """Seconds of every model's forward passes over input batches built beforehand
    (``bench_extract``'s floor)."""
    from bench_extract import batch_inputs, run_models

    built = batch_inputs(plan)
    start = time.perf_counter()
    run_models(plan, lambda m, c, s: built[id(plan.preprocessing[m.spec.name]), c.name, s])
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = arguments(__doc__.splitlines()[0], repeats=1)
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: pip install -e '.[extract]'")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-main-job-"))
    try:
        config = CONFIG
        if args.quick:
            config = tmp / "default.toml"
            config.write_text(CONFIG.read_text().replace("[data]", "[data]\nlimit = 48", 1)
                              .replace('"../models/', f'"{ROOT / "extract" / "models"}/'))
        stages: dict[str, float] = {}
        start = time.perf_counter()
        from distillscope.cli import build_parser
        from distillscope.cli.commands import run_analysis
        from distillscope.report import write_report
        from distillscope_extract.run import extract, plan_extraction

        stages["imports"] = time.perf_counter() - start
        store, results, report = tmp / "store.h5", tmp / "results.nc", tmp / "report.html"
        t = time.perf_counter()
        extract(config, output=store, progress=False, log=lambda *a: None)
        stages["extraction"] = time.perf_counter() - t
        options = build_parser().parse_args(["analyze", str(store), "-o", str(results),
                                             "--convention", CONVENTION])
        t = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            dataset = run_analysis(options, store, results)
        stages["analysis"] = time.perf_counter() - t
        t = time.perf_counter()
        write_report(dataset, report)
        stages["report"] = time.perf_counter() - t
        total = sum(stages.values())
        floor = forward_only(plan_extraction(config, output=tmp / "unused.h5"))
        print(f"main job stages in one process ({config.name}, {CONVENTION}):")
        for name, seconds in stages.items():
            print(f"  {name:<12} {seconds:7.1f} s  {100 * seconds / total:5.1f}%")
        print(f"  {'total':<12} {total:7.1f} s")
        print(f"  extraction / forward passes alone on the same batches: "
              f"{stages['extraction'] / floor:.2f}x ({floor:.1f} s; target <= 1.1x on a CPU)")
        if args.quick:
            return 0
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "distillscope", "audit", str(config),
                        "--convention", CONVENTION, "--out", str(tmp / "audit"), "-q"],
                       check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        print(f"the README's main job in a fresh process: {wall:.1f} s "
              f"({wall / TARGET_SECONDS:.2f}x the {TARGET_SECONDS:.0f} s target)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
