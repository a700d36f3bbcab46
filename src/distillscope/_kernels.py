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
from numba import njit

__all__ = ["jit_enabled", "prepare_rows", "topk_tile", "topk_masked", "knn_overlap", "fold_log_amplitude", "sum_squares",
           "fletcher32", "widen_half"]

_TINY_NORM = 1e-12


def jit_enabled() -> bool:
    """False under ``NUMBA_DISABLE_JIT=1``, where these kernels run as plain Python."""
    from numba import config

    return not config.DISABLE_JIT
  # torch.nn.functional.normalize's eps: a zero row stays zero


@njit(cache=True, nogil=True)
def prepare_rows(src, shift, l2_normalize, out, colsum, colcheck):  # pragma: no cover - jitted
    """Convert rows to float64, optionally L2-normalise them, subtract ``shift``; one pass.

    For every row ``x`` of ``src`` (n, d): ``y = x / max(||x||, 1e-12) - shift`` when
    ``l2_normalize`` else ``y = x - shift``, written to ``out`` (n, d) float64; the column sums
    of ``y`` are written to ``colsum`` (d,). ``colcheck`` (d,) receives the column sums of
    ``x - x``: 0 for finite values, NaN as soon as a column met a NaN or an infinity. Every
    accumulation runs along columns, so the inner loop has no serial dependency and the
    compiler vectorises it.

    Returns ``(has_bad, n_zero_rows)``: whether any value is NaN or infinite (the caller locates
    them), and with ``l2_normalize`` the number of rows whose norm is zero (they stay zero, as in
    ``torch.nn.functional.normalize``).

    Serial on purpose: between BLAS calls OpenBLAS's worker threads keep spinning, and a
    two-thread ``prange`` version ran twice as slow inside the streaming loop as this one
    (``benchmarks/bench_spectrum.py``, docs/performance.md).
    """
    n, d = src.shape
    zero = 0
    for j in range(d):
        colsum[j] = 0.0
        colcheck[j] = 0.0
    for i in range(n):
        scale = 1.0
        if l2_normalize:
            sumsq = 0.0
            for j in range(d):
                w = np.float64(src[i, j])  # float() of a float32 stays float32 in numba
                sumsq += w * w
            norm = np.sqrt(sumsq)
            if norm == 0.0:
                zero += 1
            scale = 1.0 / max(norm, _TINY_NORM)
        for j in range(d):
            v = float(src[i, j])  # Python float under NUMBA_DISABLE_JIT: no warnings
            y = v * scale - float(shift[j])
            out[i, j] = y
            # float(): plain Python floats when run without JIT, so inf - inf warns nowhere
            colsum[j] = float(colsum[j]) + y
            colcheck[j] = float(colcheck[j]) + (v - v)
    has_bad = 0
    for j in range(d):
        if colcheck[j] != 0.0:  # NaN compares unequal to everything
            has_bad = 1
    return has_bad, zero


_TOPK_SKIP = 32  # candidates tested at once against a list's current k-th best


@njit(cache=True, nogil=True)
def _insert(lists_idx, lists_val, filled, owner, candidate, v):  # pragma: no cover - jitted
    """Insert ``candidate`` with similarity ``v`` into the descending list of ``owner``."""
    k = lists_idx.shape[1]
    full = filled[owner]
    pos = full if full < k else k - 1
    while pos > 0 and v > lists_val[owner, pos - 1]:
        lists_val[owner, pos] = lists_val[owner, pos - 1]
        lists_idx[owner, pos] = lists_idx[owner, pos - 1]
        pos -= 1
    lists_val[owner, pos] = v
    lists_idx[owner, pos] = candidate
    if full < k:
        filled[owner] = full + 1


@njit(cache=True, nogil=True)
def topk_tile(sims, row0, col0, idx, val, filled, threshold, columns):  # pragma: no cover - jitted
    """Fold one tile of a similarity matrix into running top-k lists, self excluded.

    ``sims`` (m, c) holds similarities of rows ``row0 ..`` against columns ``col0 ..``;
    ``idx`` and ``val`` (n, k) are the running lists (descending value) and ``filled`` (n,) how
    much of each is used. The rows' lists get the columns as candidates; with ``columns`` (a
    tile above the diagonal of a symmetric matrix) the columns' lists also get the rows, read
    from the same tile row by row, so the lower tile is never formed. A candidate enters only
    if strictly better than the k-th best, so ties go to the earlier candidate: the lower index
    when candidates arrive in increasing order (tiles visited row-block by row-block, columns
    ascending). Once lists are full, runs of 32 candidates are first counted against the
    thresholds in a loop the compiler vectorises, and skipped whole when none beats them.
    ``threshold`` (c,) is scratch.
    """
    m, c_total = sims.shape
    k = idx.shape[1]
    for r in range(m):
        row = row0 + r
        c = 0
        while c < c_total:
            end = c + 1
            if filled[row] == k and c + _TOPK_SKIP <= c_total:
                bar = val[row, k - 1]
                hits = 0
                for j in range(c, c + _TOPK_SKIP):
                    hits += sims[r, j] > bar
                if hits == 0:
                    c += _TOPK_SKIP
                    continue
                end = c + _TOPK_SKIP
            for col in range(c, end):
                if col0 + col == row:
                    continue
                v = sims[r, col]
                if filled[row] == k and not v > val[row, k - 1]:
                    continue
                _insert(idx, val, filled, row, col0 + col, v)
            c = end
    if not columns:
        return
    for j in range(c_total):
        col = col0 + j
        threshold[j] = val[col, k - 1] if filled[col] == k else -np.inf
    for r in range(m):
        row = row0 + r
        c = 0
        while c < c_total:
            end = min(c + _TOPK_SKIP, c_total)
            hits = 0
            for j in range(c, end):
                hits += sims[r, j] > threshold[j]
            if hits:
                for j in range(c, end):
                    v = sims[r, j]
                    if v > threshold[j] and col0 + j != row:
                        col = col0 + j
                        _insert(idx, val, filled, col, row, v)
                        if filled[col] == k:
                            threshold[j] = val[col, k - 1]
            c = end


@njit(cache=True, nogil=True)
def topk_masked(sims, row0, col0, role, idx, val, filled, columns):  # pragma: no cover - jitted
    """``topk_tile`` for two disjoint subsets: sample ``i`` owns list ``role[i]`` when
    ``role[i] >= 0``, is a candidate when ``role[i] == -1``, and neither otherwise (so never its
    own neighbour). Rows of the tile are owners against its columns; with ``columns`` the
    columns too, against its rows (a tile above the diagonal of a symmetric matrix)."""
    m, c_total = sims.shape
    k = idx.shape[1]
    for r in range(m):
        owner = role[row0 + r]
        if owner < 0:
            continue
        for c in range(c_total):
            if role[col0 + c] != -1:
                continue
            v = sims[r, c]
            if filled[owner] == k and not v > val[owner, k - 1]:
                continue
            _insert(idx, val, filled, owner, col0 + c, v)
    if not columns:
        return
    for r in range(m):
        if role[row0 + r] != -1:
            continue
        for c in range(c_total):
            owner = role[col0 + c]
            if owner < 0:
                continue
            v = sims[r, c]
            if filled[owner] == k and not v > val[owner, k - 1]:
                continue
            _insert(idx, val, filled, owner, row0 + r, v)


@njit(cache=True, nogil=True)
def knn_overlap(idx_a, idx_b):  # pragma: no cover - jitted
    """Sum over rows of the number of indices two (m, k) neighbour lists share."""
    m, k = idx_a.shape
    total = 0
    for r in range(m):
        for i in range(k):
            a = idx_a[r, i]
            for j in range(k):
                if idx_b[r, j] == a:
                    total += 1
                    break
    return total


@njit(cache=True, nogil=True)
def fold_log_amplitude(half, w, log_sum):  # pragma: no cover - jitted
    """Add ``ln(|F| + 1e-6)`` of real-FFT halves to full ``(h, w)`` sums, in float64.

    ``half`` (m, h, w // 2 + 1) complex holds ``rfft2`` outputs; for real input the missing
    columns are the conjugate mirror, ``F[y, x] = conj(F[(h - y) % h, w - x])``, so each value
    is added at its own place and, unless it is its own mirror column (DC or even-w Nyquist),
    at the mirrored one. Returns the number of non-finite values met (their maps are corrupt).
    """
    m, h, wr = half.shape
    bad = 0
    for i in range(m):
        for y in range(h):
            y_mirror = (h - y) % h
            for kx in range(wr):
                v = half[i, y, kx]
                re, im = np.float64(v.real), np.float64(v.imag)  # float32 parts: widen first
                p = re * re + im * im
                if not p < np.inf:  # NaN or infinity in the input spreads to its whole spectrum
                    bad += 1
                    continue
                a = np.log(np.sqrt(p) + 1e-6)
                log_sum[y, kx] += a
                x_mirror = w - kx
                if kx >= 1 and x_mirror >= wr:
                    log_sum[y_mirror, x_mirror] += a
    return bad


@njit(cache=True, nogil=True)
def fletcher32(data):  # pragma: no cover - jitted
    """HDF5's Fletcher-32 checksum of a byte array (``H5_checksum_fletcher32``), vectorised.

    HDF5 sums big-endian 16-bit words in 32-bit unsigned arithmetic, ``sum1 += w; sum2 += sum1``,
    folding both sums (``(s & 0xffff) + (s >> 16)``) after every 360 words and at the end, with a
    lone last byte as the high byte of a word. Over a run of t words the two sums advance by
    ``sum(w)`` and ``t * sum1 + sum((t - i) w_i)``, which this kernel computes as independent
    integer reductions (the compiler vectorises them), exact modulo 2^32 like the original.
    """
    n = data.size
    words = n // 2
    mask = 0xFFFFFFFF
    sum1 = 0
    sum2 = 0
    start = 0
    while words > 0:
        t = min(words, 360)
        words -= t
        plain = 0
        weighted = 0
        for i in range(t):
            w = (np.int64(data[start + 2 * i]) << 8) | np.int64(data[start + 2 * i + 1])
            plain += w
            weighted += (t - i) * w
        sum2 = (sum2 + t * sum1 + weighted) & mask
        sum1 = (sum1 + plain) & mask
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
        start += 2 * t
    if n % 2:
        sum1 = (sum1 + (np.int64(data[n - 1]) << 8)) & mask
        sum2 = (sum2 + sum1) & mask
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    return (sum2 << 16) | sum1


@njit(cache=True, nogil=True)
def sum_squares(p, out):  # pragma: no cover - jitted
    """Add the squares of ``p`` (r, m, q), summed over its middle axis, to ``out`` (r, q) in float64.

    Each value is widened to float64 before it is squared, so float32 projections lose nothing
    in the sum; the inner loop runs along the contiguous last axis and vectorises. Serial, like
    ``prepare_rows``: it runs between BLAS calls.
    """
    n_r, n_m, n_q = p.shape
    for r in range(n_r):
        for m in range(n_m):
            for q in range(n_q):
                v = np.float64(p[r, m, q])  # float() of a float32 stays float32 in numba
                out[r, q] += v * v


@njit(cache=True, nogil=True)
def widen_half(bits, out):  # pragma: no cover - jitted
    """float16 values, given as their uint16 bit patterns, to float32 ``out``, exactly.

    numba has no float16, and numpy's cast runs at about 1.2 ns a value; this runs at about 0.35.
    A float16 is ``sign | exponent (5 bits) | mantissa (10 bits)``, bias 15; float32 has bias
    127. Normal numbers and infinities/NaNs (payload kept) are rebuilt bit by bit in a uint32
    view of ``out``: exponent + 112, mantissa << 13. Subnormals (exponent 0) are
    ``mantissa * 2^-24``, exact in float32 arithmetic, and signed zeros keep their sign. Both
    arrays are 1-D and of equal length.
    """
    out_bits = out.view(np.uint32)
    for i in range(bits.size):
        h = np.uint32(bits[i])
        sign = (h & np.uint32(0x8000)) << np.uint32(16)
        exponent = (h >> np.uint32(10)) & np.uint32(0x1F)
        mantissa = h & np.uint32(0x3FF)
        if exponent == np.uint32(0):
            v = np.float32(mantissa) * np.float32(5.9604644775390625e-08)  # 2^-24
            out[i] = -v if sign else v
        else:
            b = ((exponent + np.uint32(112)) << np.uint32(23)) | (mantissa << np.uint32(13))
            if exponent == np.uint32(31):
                b = np.uint32(0x7F800000) | (mantissa << np.uint32(13))
            out_bits[i] = sign | b
