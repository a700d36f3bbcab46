"""Helpers shared by the benchmarks: best-of timing and peak memory of one method in a fresh
process (``VmHWM`` growth, which unlike ``ru_maxrss`` does not inherit the parent's size)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status in MiB (VmRSS now, VmHWM its peak since exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def best_time(fn, arg, repeats: int) -> float:
    """Best wall time of ``fn(arg)`` over ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - start)
    return best


def peak_memory(module: str, table: str, method: str, path: Path, warm: str) -> float:
    """Peak RSS growth (MiB) of ``module.table[method]`` run once in a fresh process.

    ``warm`` is a statement run first (imports, kernel compilation) and not counted; a method
    of kind "memory" gets ``module.load(path)`` (its input arrays count), one of kind "store"
    gets the path.
    """
    code = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        f"import {module} as b, _common\n"
        "from pathlib import Path\n"
        f"kind, fn = getattr(b, {table!r})[{method!r}]\n"
        f"path = Path({str(path)!r})\n"
        f"{warm}\n"
        "before = _common.status_mib('VmRSS')\n"
        "fn(b.load(path) if kind == 'memory' else path)\n"
        "print(json.dumps(_common.status_mib('VmHWM') - before))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def paired_rounds(ratios: list[float]) -> str:
    """``1.05x the median of 3 rounds (1.02, 1.05, 1.09)``: paired ratios, their median first."""
    import statistics

    return (f"{statistics.median(ratios):.2f}x the median of {len(ratios)} rounds "
            f"({', '.join(f'{r:.2f}' for r in ratios)})")


def arguments(description: str, repeats: int):
    """The options every benchmark takes: --quick, --no-memory, --repeats."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the peak-memory subprocesses")
    parser.add_argument("--repeats", type=int, default=repeats)
    return parser
