"""Every numba kernel, called directly on small inputs against a plain numpy reference.

CI runs this file a second time with ``NUMBA_DISABLE_JIT=1``, where every kernel runs as plain
Python: the kernel bodies stay valid Python and are measured by coverage (the library's callers
switch to numpy equivalents without the JIT, so only these tests run the bodies that way).
"""

from __future__ import annotations


import numpy as np
import pytest

from distillscope import _kernels as k

RNG = np.random.default_rng(0)


def test_every_kernel_is_tested_here():
    tested = {name[len("test_"):] for name in globals() if name.startswith("test_")}
    kernels = set(k.__all__) - {"jit_enabled"}
    assert kernels <= tested, sorted(kernels - tested)


@pytest.mark.parametrize("l2", [False, True])
def test_prepare_rows(l2):
    src = RNG.standard_normal((9, 5)).astype(np.float32) * 3 + 1
    src[4] = 0.0
    shift = RNG.standard_normal(5)
    out, colsum, colcheck = np.empty((9, 5)), np.empty(5), np.empty(5)
    bad, zero = k.prepare_rows(src, shift, l2, out, colsum, colcheck)
    x = src.astype(np.float64)
    if l2:
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    np.testing.assert_allclose(out, x - shift, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(colsum, (x - shift).sum(axis=0), rtol=1e-13)
    assert bad == 0 and zero == (1 if l2 else 0)
    src[2, 3] = np.nan
    assert k.prepare_rows(src, shift, l2, out, colsum, colcheck)[0] == 1


def _lists(n, kk, dtype=np.float32):
    return (np.empty((n, kk), np.int64), np.empty((n, kk), dtype), np.zeros(n, np.int64),
            np.full(n, -np.inf, dtype))


def _reference_lists(sims, kk):
    """Top-k of each row of a full similarity matrix, self excluded, ties to the lower index."""
    s = sims.astype(np.float64).copy()
    np.fill_diagonal(s, -np.inf)
    return np.array([sorted(range(len(row)), key=lambda j: (-row[j], j))[:kk] for row in s])


def test_offer_tile():
    u = RNG.standard_normal((12, 3)).astype(np.float32)
    sims = u @ u.T
    sims[0, 5] = sims[0, 6]  # a tie: the lower index wins
    roles = np.stack([np.arange(12), np.arange(12)])
    lists = _lists(12, 4)
    k.offer_tile(sims, 0, 0, roles, lists)
    np.testing.assert_array_equal(lists[0], _reference_lists(sims, 4))
    assert (lists[2] == 4).all() and np.allclose(lists[3], lists[1][:, -1])


def test_offer_marked():
    u = RNG.standard_normal((10, 3)).astype(np.float32)
    sims = u @ u.T
    roles = np.stack([np.arange(10), np.arange(10)])
    lists = _lists(10, 3)
    # the upper-right block (rows 0..4, columns 5..9) offered to both sides, in reverse order
    block = np.ascontiguousarray(sims[:5, 5:])
    k.offer_marked(block, np.arange(25)[::-1].copy(), 0, 5, 3, roles, lists)
    for i in range(10):
        others = range(5, 10) if i < 5 else range(5)
        expected = sorted(others, key=lambda j: (-sims[i, j], j))[:3]
        assert list(lists[0][i]) == expected


def test_scan_tile():
    sims = RNG.uniform(-1, 1, (6, 7)).astype(np.float32)
    row_kth = np.array([0.5, np.inf, -np.inf, 0.9, 0.0, 2.0], np.float32)
    col_kth = np.full(7, np.inf, np.float32)
    col_kth[2] = -0.5
    hits = np.empty((6, 7), np.bool_)
    total = k.scan_tile(sims, row_kth, col_kth, 4.0, False, hits)
    np.testing.assert_array_equal(hits, (sims >= row_kth[:, None]) | (sims >= col_kth[None, :]))
    exact = np.exp(4.0 * (np.minimum(sims.astype(np.float64), 1) - 1)).sum()
    assert total == pytest.approx(exact, rel=1e-12)
    assert k.scan_tile(sims, row_kth, col_kth, 0.0, False, hits) == 0.0


def test_exp_sum_tile():
    s = np.clip(RNG.uniform(-1, 1.0000001, (8, 8)), -1, 1.0000001).astype(np.float32)
    exact = np.exp(4.0 * (np.minimum(s.astype(np.float64), 1) - 1))
    assert k.exp_sum_tile(s, 4.0, False) == pytest.approx(exact.sum(), rel=1e-12)
    off = exact.sum() - np.trace(exact)
    assert k.exp_sum_tile(s, 4.0, True) == pytest.approx(off, rel=1e-12)
    assert k.exp_sum_tile(s, 16.0, False) == pytest.approx(
        np.exp(16.0 * (np.minimum(s.astype(np.float64), 1) - 1)).sum(), rel=1e-9)


def test_knn_overlap():
    a = np.array([[1, 2, 3], [4, 5, 6]])
    b = np.array([[3, 9, 1], [7, 8, 6]])
    assert k.knn_overlap(a, b) == 3


def test_fold_log_amplitude():
    maps = RNG.standard_normal((3, 4, 6))
    half = np.fft.rfft2(maps, norm="ortho")
    log_sum = np.zeros((4, 6))
    assert k.fold_log_amplitude(half, 6, log_sum) == 0
    full = np.log(np.abs(np.fft.fft2(maps, norm="ortho")) + 1e-6).sum(axis=0)
    np.testing.assert_allclose(log_sum, full, rtol=1e-10, atol=1e-10)
    half[0, 1, 1] = np.nan
    assert k.fold_log_amplitude(half, 6, np.zeros((4, 6))) == 1


def test_sum_squares():
    p = RNG.standard_normal((3, 5, 4)).astype(np.float32)
    out = np.zeros((3, 4))
    k.sum_squares(p, out)
    np.testing.assert_allclose(out, (p.astype(np.float64) ** 2).sum(axis=1), rtol=1e-14)


@pytest.mark.parametrize("size", [0, 1, 2, 7, 720, 1001])
def test_fletcher32(size):
    data = RNG.integers(0, 256, size, dtype=np.uint8)
    # HDF5's algorithm over big-endian 16-bit words, reference loop; the odd byte pads high
    words = [(int(data[i]) << 8) | (int(data[i + 1]) if i + 1 < size else 0)
             for i in range(0, size, 2)]
    sum1 = sum2 = 0
    for start in range(0, len(words), 360):
        for w in words[start:start + 360]:
            sum1 += w
            sum2 += sum1
        sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
        sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    sum1 = (sum1 & 0xFFFF) + (sum1 >> 16)
    sum2 = (sum2 & 0xFFFF) + (sum2 >> 16)
    assert k.fletcher32(data) == (sum2 << 16) | sum1


def test_widen_half():
    values = np.array([0.0, -0.0, 6e-8, -3e-5, 1.5, -65504.0, np.inf, -np.inf, np.nan],
                      dtype=np.float16)
    out = np.empty(values.size, dtype=np.float32)
    k.widen_half(values.view(np.uint16), out)
    np.testing.assert_array_equal(out.view(np.uint32), values.astype(np.float32).view(np.uint32))


def test_narrow_half():
    values = np.array([0.0, -0.0, 6e-8, -3e-5, 1.5, -65504.0, np.inf, -np.inf, np.nan],
                      dtype=np.float16)
    bits = np.empty(values.size, np.uint16)
    k.narrow_half(values.astype(np.float32), bits)
    np.testing.assert_array_equal(bits, values.view(np.uint16))


def test_drift_sums():
    clean = RNG.standard_normal((7, 4)).astype(np.float32)
    clean[2] = 0
    noisy = clean + 0.3 * RNG.standard_normal((7, 4)).astype(np.float32)
    total, squared, count, zero = k.drift_sums(clean, noisy)
    c, d = clean.astype(np.float64), noisy.astype(np.float64) - clean
    ok = np.linalg.norm(c, axis=1) > 0
    ratio = np.linalg.norm(d, axis=1)[ok] / np.linalg.norm(c, axis=1)[ok]
    assert (count, zero) == (6, 1)
    assert total == pytest.approx(ratio.sum(), rel=1e-14)
    assert squared == pytest.approx((ratio ** 2).sum(), rel=1e-14)


def test_unit_rows_into():
    src = RNG.standard_normal((5, 3)).astype(np.float32)
    src[1] = 0
    out = np.empty((5, 3), np.float64)
    k.unit_rows_into(src, out)
    x = src.astype(np.float64)
    np.testing.assert_allclose(out, x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True),
                                                   1e-12), rtol=1e-15)


def test_add_upper():
    full = RNG.standard_normal((6, 6))
    packed = np.ones(21)
    k.add_upper(full, packed)
    np.testing.assert_array_equal(packed, 1 + full[np.triu_indices(6)])


def test_unpack_upper():
    a = RNG.standard_normal((2, 5, 5))
    a = a + a.transpose(0, 2, 1)
    out = np.empty_like(a)
    k.unpack_upper(np.stack([m[np.triu_indices(5)] for m in a]), out)
    np.testing.assert_array_equal(out, a)
