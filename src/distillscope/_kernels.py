"""Every numba kernel of distillscope, and nothing else.

Kept in one module because numba's on-disk cache does not notice edits to jitted functions that
live in other files, and so that one switch (``NUMBA_DISABLE_JIT=1``) turns every kernel back
into plain Python for coverage and debugging.

Rules: kernels take contiguous float32/float64 arrays and ints, write into arrays the caller
allocated, return plain numbers, and never validate (the callers do). numba cannot take float16:
callers convert such chunks in numpy first. The kernels compile on their first call, never at
import. ``fastmath`` is off (the finiteness checks rely on IEEE NaN semantics), but for
``reassoc`` on one sum whose order does not matter (``exp_sum_tile``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["jit_enabled", "prepare_rows", "offer_marked", "offer_tile", "scan_tile", "exp_sum_tile", "knn_overlap", "fold_log_amplitude", "sum_squares",
           "fletcher32", "widen_half", "narrow_half", "drift_sums", "unit_rows_into", "add_upper",
           "unpack_upper"]

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


@njit(cache=True, nogil=True, inline="always")
def _offer(owner, candidate, v, lists):  # pragma: no cover - jitted
    """Insert ``candidate`` (similarity ``v``) into the list of ``owner`` if it is among the k
    best: by value, descending, ties to the lower index, whatever the order of arrival.
    ``lists`` is ``(idx, val, filled, kth)``: indices and values (n, k), how much of each list
    is used, and each list's k-th best (-inf while it fills), kept up to date here."""
    idx, val, filled, kth = lists
    k = idx.shape[1]
    full = filled[owner]
    if full == k and (v < val[owner, k - 1]
                      or (v == val[owner, k - 1] and candidate > idx[owner, k - 1])):
        return
    pos = full if full < k else k - 1
    while pos > 0 and (v > val[owner, pos - 1]
                       or (v == val[owner, pos - 1] and candidate < idx[owner, pos - 1])):
        val[owner, pos] = val[owner, pos - 1]
        idx[owner, pos] = idx[owner, pos - 1]
        pos -= 1
    val[owner, pos] = v
    idx[owner, pos] = candidate
    if full < k:
        filled[owner] = full + 1
    if filled[owner] == k:
        kth[owner] = val[owner, k - 1]


@njit(cache=True, nogil=True)
def offer_marked(sims, marked, row0, col0, sides, roles, lists):  # pragma: no cover - jitted
    """Offer the marked entries of a similarity tile to top-k lists.

    ``marked`` holds flat indices into the tile (row-major); entry ``(r, c)`` compares samples
    ``i = row0 + r`` and ``j = col0 + c``. With ``sides & 1`` it is offered to the list of
    ``i`` as candidate ``j``, with ``sides & 2`` (a tile above the diagonal of a symmetric
    matrix) to the list of ``j`` as candidate ``i``: ``roles[0, s]`` is the list sample ``s``
    owns (negative: none) and ``roles[1, s]`` what is stored when it enters one (negative: it
    is no one's candidate); a sample is never its own candidate. The marks come from a
    vectorised comparison with each list's k-th best at the start of the tile (``scan_tile``):
    a superset of what enters, each checked against the list as it is now.
    """
    c_total = sims.shape[1]
    for f in range(marked.size):
        r = marked[f] // c_total
        c = marked[f] - r * c_total
        i, j = row0 + r, col0 + c
        if i == j:
            continue
        v = sims[r, c]
        if sides & 1 and roles[0, i] >= 0 and roles[1, j] >= 0:
            _offer(roles[0, i], roles[1, j], v, lists)
        if sides & 2 and roles[0, j] >= 0 and roles[1, i] >= 0:
            _offer(roles[0, j], roles[1, i], v, lists)


@njit(cache=True, nogil=True)
def offer_tile(sims, row0, col0, roles, lists):  # pragma: no cover - jitted
    """Offer every entry of a tile to the lists of its rows (``offer_marked`` with every
    entry marked and ``sides = 1``): for the tiles where lists are still filling. The row's
    k-th best is kept in a register, so most entries cost one comparison."""
    kth = lists[3]
    m, c_total = sims.shape
    for r in range(m):
        owner = roles[0, row0 + r]
        if owner < 0:
            continue
        bar = kth[owner]
        for c in range(c_total):
            v = sims[r, c]
            if v < bar:
                continue
            candidate = roles[1, col0 + c]
            if candidate < 0 or col0 + c == row0 + r:
                continue
            _offer(owner, candidate, v, lists)
            bar = kth[owner]


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def exp_sum_tile(sims, two_t, diagonal):  # pragma: no cover - jitted
    """``sum exp(two_t (min(s, 1) - 1))`` over a tile of cosine similarities, in float64.

    ``exp(x) = exp(x / 64)^64`` with ``x / 64`` in ``[-1/2, 0]`` (``two_t <= 16``, the caller
    checks) and ``exp`` there by its degree-10 Taylor polynomial: relative error below 1e-9 at
    the range's end, 1e-13 at ``two_t = 4``; all arithmetic, so the loop vectorises, and
    ``reassoc`` lets the sum vectorise too (no ``nnan``/``ninf``: nothing here tests for NaN).
    With ``diagonal`` the tile's diagonal terms are left out.
    """
    m, c = sims.shape
    total = 0.0
    for r in range(m):
        acc = 0.0
        for j in range(c):
            acc += _exp_term(np.float64(sims[r, j]), two_t)
        total += acc
    if diagonal:
        for r in range(min(m, c)):
            total -= _exp_term(np.float64(sims[r, r]), two_t)
    return total


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def scan_tile(sims, row_kth, col_kth, two_t, diagonal, hits):  # pragma: no cover - jitted
    """One read of a similarity tile for both products of the similarity pass.

    Marks in ``hits`` (bool, the tile's shape) the entries that may enter a top-k list: at
    least the k-th best of their row's list (``row_kth``) or of their column's (``col_kth``;
    +inf where a list takes no candidate from this tile). With ``two_t > 0`` also returns
    ``sum exp(two_t (min(s, 1) - 1))`` over the tile, as ``exp_sum_tile`` (``diagonal``: its
    diagonal left out). One vectorised loop instead of a comparison, a ``nonzero`` and an
    exponential pass each.
    """
    m, c = sims.shape
    total = 0.0
    for r in range(m):
        bar = row_kth[r]
        acc = 0.0
        for j in range(c):
            v = sims[r, j]
            hits[r, j] = (v >= bar) | (v >= col_kth[j])
            if two_t > 0.0:
                acc += _exp_term(np.float64(v), two_t)
        total += acc
    if diagonal and two_t > 0.0:
        for r in range(min(m, c)):
            total -= _exp_term(np.float64(sims[r, r]), two_t)
    return total


@njit(cache=True, nogil=True, inline="always")
def _exp_term(s, two_t):  # pragma: no cover - jitted
    """``exp(two_t (min(s, 1) - 1))`` as ``exp(y)^64``, ``y = two_t (min(s, 1) - 1) / 64`` in
    ``[-1/2, 0]`` for ``two_t <= 16``: degree-10 Taylor polynomial, six squarings, no branch."""
    y = two_t * (min(s, 1.0) - 1.0) * 0.015625
    p = 1.0 + y * (1.0 + y * (0.5 + y * (1.0 / 6 + y * (1.0 / 24 + y * (1.0 / 120 + y * (
        1.0 / 720 + y * (1.0 / 5040 + y * (1.0 / 40320 + y * (1.0 / 362880 + y / 3628800)))))))))
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    p = p * p
    return p * p


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


@njit(cache=True, nogil=True)
def narrow_half(src, bits):  # pragma: no cover - jitted
    """float32 values that are float16 values (widened ones), back to their float16 bit patterns.

    The inverse of ``widen_half``, exact for every float16 value, by the same bit layout:
    exponent - 112 and mantissa >> 13 for normal numbers, the shifted implicit bit for float16
    subnormals (float32 normals below 2^-14), signed zeros, infinities and NaN payloads kept.
    Values that are not float16 values are not rounded: callers narrow only what was widened.
    """
    src_bits = src.view(np.uint32)
    for i in range(src.size):
        b = src_bits[i]
        sign = (b >> np.uint32(16)) & np.uint32(0x8000)
        exponent = (b >> np.uint32(23)) & np.uint32(0xFF)
        mantissa = b & np.uint32(0x7FFFFF)
        if exponent == np.uint32(0):
            out = sign
        elif exponent == np.uint32(255):
            out = sign | np.uint32(0x7C00) | (mantissa >> np.uint32(13))
        elif exponent < np.uint32(113):
            out = sign | ((mantissa | np.uint32(0x800000)) >> (np.uint32(126) - exponent))
        else:
            out = sign | ((exponent - np.uint32(112)) << np.uint32(10)) | (mantissa >> np.uint32(13))
        bits[i] = np.uint16(out)


@njit(cache=True, nogil=True)
def drift_sums(clean, noisy):  # pragma: no cover - jitted
    """Sums of the relative drift ``||noisy_i - clean_i|| / ||clean_i||`` over rows with
    ``clean_i != 0``, in float64: (sum, sum of squares, rows counted, rows of zero norm)."""
    n, d = clean.shape
    total = 0.0
    squared = 0.0
    count = 0
    zero = 0
    for i in range(n):
        norm = 0.0
        change = 0.0
        for j in range(d):
            c = np.float64(clean[i, j])
            delta = np.float64(noisy[i, j]) - c
            norm += c * c
            change += delta * delta
        if norm > 0.0:
            ratio = np.sqrt(change) / np.sqrt(norm)
            total += ratio
            squared += ratio * ratio
            count += 1
        else:
            zero += 1
    return total, squared, count, zero


@njit(cache=True, nogil=True)
def unit_rows_into(src, out):  # pragma: no cover - jitted
    """``out[i] = src[i] / max(||src[i]||, 1e-12)``, the norm in float64, one pass a row."""
    n, d = src.shape
    for i in range(n):
        sumsq = 0.0
        for j in range(d):
            v = np.float64(src[i, j])
            sumsq += v * v
        scale = 1.0 / max(np.sqrt(sumsq), _TINY_NORM)
        for j in range(d):
            out[i, j] = np.float64(src[i, j]) * scale


@njit(cache=True, nogil=True)
def add_upper(full, packed):  # pragma: no cover - jitted
    """``packed += full[triu_indices(d)]`` (the upper triangle, row by row)."""
    d = full.shape[0]
    k = 0
    for i in range(d):
        for j in range(i, d):
            packed[k] += full[i, j]
            k += 1


@njit(cache=True, nogil=True)
def unpack_upper(packed, out):  # pragma: no cover - jitted
    """The symmetric ``(R, d, d)`` matrices whose upper triangles are ``packed`` ``(R, P)``:
    rows of the upper triangle copied in order, the lower one mirrored in 64 x 64 tiles."""
    d = out.shape[1]
    for r in range(packed.shape[0]):
        k = 0
        for i in range(d):
            for j in range(i, d):
                out[r, i, j] = packed[r, k]
                k += 1
        for bi in range(0, d, 64):
            for bj in range(bi, d, 64):
                for i in range(bi, min(bi + 64, d)):
                    for j in range(max(bj, i + 1), min(bj + 64, d)):
                        out[r, j, i] = out[r, i, j]
