"""Every numba kernel of distillscope, and nothing else.

Kept in one module because numba's on-disk cache does not notice edits to jitted functions that
live in other files, and so that one switch (``NUMBA_DISABLE_JIT=1``) turns every kernel back
into plain Python for coverage and debugging.

Rules: kernels take contiguous float32/float64 arrays and ints, write into arrays the caller
allocated, return plain numbers, and never validate (the callers do). numba cannot take float16:
callers convert such chunks in numpy first. The kernels compile on their first call, never at
import. ``fastmath`` is off: the finiteness checks below rely on IEEE NaN semantics.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["prepare_rows"]

_TINY_NORM = 1e-12  # torch.nn.functional.normalize's eps: a zero row stays zero


@njit(cache=True, nogil=True, parallel=True)
def prepare_rows(src, shift, l2_normalize, out, colsum_blocks):  # pragma: no cover - jitted
    """Convert rows to float64, optionally L2-normalise them, subtract ``shift``; one pass.

    For every row ``x`` of ``src`` (n, d): ``y = x / max(||x||, 1e-12) - shift`` when
    ``l2_normalize`` else ``y = x - shift``, written to ``out`` (n, d) float64. Column sums of
    ``y`` are accumulated per block of rows into ``colsum_blocks`` (n_blocks, d), which the
    caller adds up; rows are split evenly into ``n_blocks`` parallel blocks.

    Returns ``(n_bad_rows, n_zero_rows)``: the number of rows holding a NaN or an infinity
    (detected as a NaN in the running sum of ``x - x``), and with ``l2_normalize`` the number of
    rows whose norm is zero (they stay zero, as in ``torch.nn.functional.normalize``).
    """
    n, d = src.shape
    n_blocks = colsum_blocks.shape[0]
    bad = np.zeros(n_blocks, np.int64)
    zero = np.zeros(n_blocks, np.int64)
    for b in prange(n_blocks):
        lo = b * n // n_blocks
        hi = (b + 1) * n // n_blocks
        colsum = colsum_blocks[b]
        for j in range(d):
            colsum[j] = 0.0
        for i in range(lo, hi):
            check = 0.0
            scale = 1.0
            if l2_normalize:
                sumsq = 0.0
                for j in range(d):
                    v = np.float64(src[i, j])
                    sumsq += v * v
                    check += v - v
                norm = np.sqrt(sumsq)
                if norm == 0.0:
                    zero[b] += 1
                scale = 1.0 / max(norm, _TINY_NORM)
            for j in range(d):
                v = np.float64(src[i, j])
                if not l2_normalize:
                    check += v - v
                y = v * scale - shift[j]
                out[i, j] = y
                colsum[j] += y
            if check != 0.0:  # NaN compares unequal to everything
                bad[b] += 1
    return bad.sum(), zero.sum()
