"""``analyze --bootstrap 200`` against the same analyze without intervals, on the engine store.

The store of ``bench_analyze`` (a 768-d teacher and 4 students of 512-d, 20,000 samples, 3
conditions, no labels). Every run in this process, best of ``--repeats``; the ratio is the
number to read (the target of the intervals issue: at most 2x, for the default ``resample``;
``--resample all`` adds the CCA family and the cross-validated metrics, on request; not with
``--quick``). Printed too: the memory the
per-group sums hold (``plan.memory()``, the formula of ``engine.bootstrap.group_memory``) and
where the extra time goes (the accumulation of the group sums in the pass, the replicates).
``--quick`` runs a 2,000-sample store.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
import warnings
from pathlib import Path

import distillscope as ds
from _common import arguments, peak_memory
from bench_analyze import make_store

#: what the memory measurement runs, each in a fresh process (``_common.peak_memory``)
METHODS = {"without intervals": ("store", lambda path: ds.analyze(path)),
           "--bootstrap 200": ("store", lambda path: ds.analyze(path, bootstrap=200)),
           "--bootstrap 200 --interval bca": ("store", lambda path: ds.analyze(
               path, bootstrap=200, interval="bca"))}


def timed(path: Path, **options) -> float:
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        ds.analyze(path, **options)
        return time.perf_counter() - start


def main(argv=None) -> int:
    p = arguments(__doc__.splitlines()[0], repeats=2)
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--groups", type=int, default=None,
                   help="bootstrap groups (default: the engine's choice)")
    args = p.parse_args(argv)
    n = 2000 if args.quick else 20_000
    runs = {"without intervals": {},
            f"--bootstrap {args.replicates} (jackknife, the default)":
                {"bootstrap": args.replicates, "bootstrap_groups": args.groups},
            f"--bootstrap {args.replicates} --interval bca":
                {"bootstrap": args.replicates, "bootstrap_groups": args.groups,
                 "interval": "bca"},
            f"--bootstrap {args.replicates} --interval percentile":
                {"bootstrap": args.replicates, "bootstrap_groups": args.groups,
                 "interval": "percentile"},
            f"--bootstrap {args.replicates} --resample all (jackknife)":
                {"bootstrap": args.replicates, "bootstrap_groups": args.groups,
                 "resample": "all"}}
    if args.quick:  # its replicates cost the same at any n: minutes even on the small store
        runs.popitem()
    with tempfile.TemporaryDirectory() as folder:
        timed(make_store(Path(folder) / "warm.h5", 300), bootstrap=5)  # compile first
        path = make_store(Path(folder) / "bench.h5", n)
        best = {name: min(timed(path, **o) for _ in range(args.repeats))
                for name, o in runs.items()}
        plan = ds.analyze(path, dry_run=True, bootstrap=args.replicates,
                          bootstrap_groups=args.groups)
        groups = plan.memory()["bootstrap groups"]
        from distillscope.engine.groups import bootstrap_groups

        g = bootstrap_groups(plan)
        peaks = {} if args.no_memory else {
            name: peak_memory("bench_bootstrap", "METHODS", name, path,
                              "import warnings; warnings.simplefilter('ignore')")
            for name in METHODS}
    base = best["without intervals"]
    print(f"## analyze with intervals, {n} samples: teacher 768-d + 4 students 512-d x 3 "
          "conditions, float16, no labels")
    for name, seconds in best.items():
        print(f"{name:<52} {seconds:8.2f}s {seconds / base:5.2f}x")
    print(f"target: at most 2.00x (the default resample; --resample all is on request); "
          f"per-group sums held: {groups / 2**20:.0f} MiB (G = {g})")
    for name, mib in peaks.items():
        print(f"peak RSS growth, {name} (fresh process): {mib:.0f} MiB")
    for name in list(peaks)[1:]:
        print(f"the intervals' memory, {name}: {peaks[name] - peaks['without intervals']:.0f}"
              " MiB (target: a 768-d teacher and 4 students within 2 GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
