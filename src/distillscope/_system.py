"""What the machine offers: memory available now, and its cores to independent
decompositions."""

from __future__ import annotations

import os
import types
from concurrent.futures import ThreadPoolExecutor

__all__ = ["available_memory", "one_thread_each", "in_turn"]


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable`` of ``/proc/meminfo``;
    the physical memory where that file does not exist)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class one_thread_each:
    """A pool of one worker per core, each with single-threaded BLAS: independent
    decompositions run side by side. LAPACK's SVDs and eigendecompositions use little more than
    one core however many BLAS threads they get (on 2 cores, two of them side by side: 1.9-2x
    the throughput of one multithreaded call after another for a 768 x 512 SVD, 1.4x for a
    768-d eigendecomposition; ``docs/performance.md``)."""

    _controller = None  # one for the process: making one reads about 190 kB of files

    def __enter__(self) -> ThreadPoolExecutor:
        cls = type(self)
        if cls._controller is None:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:  # pragma: no cover - scikit-learn brings it
                ThreadpoolController = None
            cls._controller = ThreadpoolController() if ThreadpoolController else False
        self._limits = cls._controller.limit(limits=1) if cls._controller else None
        self._pool = ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0))))
        return self._pool

    def __exit__(self, *exc) -> bool:
        self._pool.shutdown()
        if self._limits is not None:
            self._limits.restore_original_limits()
        return False


class in_turn:
    """``one_thread_each``'s interface without threads (the builtin ``map``), BLAS as it is."""

    def __enter__(self):
        return types.SimpleNamespace(map=map)

    def __exit__(self, *exc) -> bool:
        return False
