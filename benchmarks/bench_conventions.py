"""Every named convention in one pass against one convention, on the store of the engine issue.

``analyze --convention all`` computes each convention of ``distillscope.CONVENTIONS`` in the
engine's single pass (``engine.executor.run_plans``): every dataset is read and pooled once,
conventions that prepare rows alike share their accumulators, the held rows of the sample-level
metrics are shared, and a value two conventions compute alike is computed once. Timed in this
process, best of ``--repeats``, and ``all`` over ``default`` timed back to back in each round
(their median, in wall-clock and in this process's CPU seconds: this machine's speed drifts by
10-20% within minutes, and its hypervisor takes the cores for a third of a run), on the store of
``bench_analyze`` (a 768-d teacher and 4 students, 20,000 samples, 3 conditions):

* ``default``: one convention, every default metric (the baseline);
* each other convention alone, and their sum (what running them one by one costs);
* ``all``: every convention in one pass. The target is at most 1.3x the baseline.

Twice: on the store with labels and a CIFAR-like train/test split (5:1), where every convention
runs as designed (the probes are fitted, ``arxiv_2603_06698`` computes on the test split), and
on the same store without them (the engine issue's store, where ``arxiv_2603_06698`` falls back
to all samples: a second set of L2-normalised moments over every sample, and the metrics it
computes of them; not the CCA family, Procrustes and the ridge it leaves out, ``Convention.omits``).
``--quick`` runs 1,000-sample stores and times only the baseline and ``all`` (a smoke test:
the metrics' decompositions cost as much at 1,000 samples as at 20,000); ``--singles default``
times only the baseline and ``all``.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

import distillscope as ds
from _common import arguments, paired_rounds, status_mib
from bench_analyze import make_store


def timed(path: Path, convention: str) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process's, every thread's) of one analysis."""
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start, cpu = time.perf_counter(), time.process_time()
        ds.analyze(path, convention=convention)
        return time.perf_counter() - start, time.process_time() - cpu


def measure(path: Path, names: list[str], repeats: int) -> tuple[dict[str, float], list, list]:
    """The best wall-clock time of each convention, and each round's ``all`` over its
    ``default`` (the two timed back to back: this machine's speed drifts by 10-20% within
    minutes) in wall-clock and in CPU seconds (which leave out the time the hypervisor runs
    another guest on these cores: 36% of a run's time in one measurement)."""
    best = {name: np.inf for name in names + ["all"]}
    paired, paired_cpu = [], []
    for _ in range(repeats):
        now = {name: timed(path, name) for name in names + ["all"]}
        paired.append(now["all"][0] / now["default"][0])
        paired_cpu.append(now["all"][1] / now["default"][1])
        for name, (seconds, _) in now.items():
            best[name] = min(best[name], seconds)
    return best, paired, paired_cpu


def main(argv=None) -> int:
    p = arguments(__doc__.splitlines()[0], repeats=2)
    p.add_argument("--singles", metavar="NAME[,NAME...]", default="",
                   help="time only these conventions alone (default: every one; 'default' is "
                        "always timed, as the baseline)")
    args = p.parse_args(argv)
    n = 1000 if args.quick else 20_000
    singles = args.singles or ("default" if args.quick else "")
    names = list(dict.fromkeys(["default"] + [c for c in singles.split(",") if c])) \
        if singles else list(ds.CONVENTIONS)
    with tempfile.TemporaryDirectory() as folder:
        timed(make_store(Path(folder) / "warm.h5", 300, split=True), "all")  # compile first
        for split in (True, False):
            path = make_store(Path(folder) / "bench.h5", n, split=split)
            best, paired, paired_cpu = measure(path, names, args.repeats)
            base = best["default"]
            kind = "10 labels, train/test split 5:1" if split else "no labels, no split"
            print(f"## {len(ds.CONVENTIONS)} conventions, {n} samples: teacher 768-d + 4 "
                  f"students 512-d x 3 conditions, float16, {kind}")
            for name in names:
                print(f"{'one convention: ' + name:<58} {best[name]:8.2f}s "
                      f"{best[name] / base:5.2f}x")
            if len(names) == len(ds.CONVENTIONS):
                alone = sum(best[name] for name in names)
                print(f"{'every convention, one analysis each (sum)':<58} {alone:8.2f}s "
                      f"{alone / base:5.2f}x")
            print(f"{'--convention all (one pass)':<58} {best['all']:8.2f}s "
                  f"{best['all'] / base:5.2f}x  best against best; {paired_rounds(paired)} wall "
                  f"clock, {paired_rounds(paired_cpu)} CPU seconds (target <= 1.30x)")
        print(f"peak RSS {status_mib('VmHWM'):.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
