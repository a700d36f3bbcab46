"""``analyze`` on dask.distributed against one process, on the engine's benchmark store.

The store of ``bench_analyze`` (a 768-d teacher and 4 students of 512-d, 20,000 samples, 3
conditions). Timed in this process, best of ``--repeats``: ``analyze`` in this process (the
baseline), then with a ``LocalCluster`` of 1 and of 2 single-threaded worker processes
(``analyze(client=...)``, what ``--scheduler local:N`` runs), each cluster started before the
clock and warmed by one small analysis. Printed: each time as a ratio to the baseline, the
speed-up from 1 to 2 workers, and the largest relative difference of any result from the
baseline's. On a 2-core machine the baseline already runs its GEMMs and eigendecompositions on
both cores, so two workers cannot do much better than one process; the point of the scheduler is
more machines (``docs/scaling.md``). ``--quick`` runs a 2,000-sample store.
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
from _common import arguments
from bench_analyze import make_store


def timed(path: Path, repeats: int, **options) -> tuple[float, object]:
    best, results = float("inf"), None
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        results = ds.analyze(path, **options)
        best = min(best, time.perf_counter() - start)
    return best, results


def largest_difference(a, b) -> float:
    worst = 0.0
    for name in a.data_vars:
        x, y = a[name].values, b[name].values
        if x.dtype.kind == "f" and np.isfinite(x).any():
            with np.errstate(all="ignore"):
                rel = np.abs(x - y) / np.maximum(np.abs(x), 1e-300)
            worst = max(worst, float(np.nanmax(np.where(np.isfinite(x), rel, 0.0))))
    return worst


def main(argv=None) -> int:
    args = arguments(__doc__.splitlines()[0], repeats=1).parse_args(argv)
    from dask.distributed import Client, LocalCluster

    n = 2000 if args.quick else 20_000
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as folder:
        warm = make_store(Path(folder) / "warm.h5", 300)
        ds.analyze(warm)
        path = make_store(Path(folder) / "bench.h5", n)
        base, reference = timed(path, args.repeats)
        rows = [("one process (baseline)", base, 0.0)]
        for workers in (1, 2):
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                              dashboard_address=None) as cluster, Client(cluster) as client:
                ds.analyze(warm, client=client)  # workers started and their kernels loaded
                seconds, results = timed(path, args.repeats, client=client)
            rows.append((f"dask.distributed, {workers} worker{'s' * (workers > 1)}", seconds,
                         largest_difference(reference, results)))
    print(f"## analyze on dask.distributed, {n} samples: teacher 768-d + 4 students 512-d x 3 "
          "conditions")
    for name, seconds, diff in rows:
        print(f"{name:<34} {seconds:8.2f}s {seconds / base:5.2f}x vs baseline   "
              f"largest relative difference {diff:.1e}")
    print(f"speed-up from 1 to 2 workers: {rows[1][1] / rows[2][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
