"""The scratch pool: arrays lent and given back explicitly; a lent array is never lent twice."""

import numpy as np
import pytest

from distillscope._scratch import ScratchPool


def _address(array):
    return array.__array_interface__["data"][0]


def test_a_given_back_array_is_reused_and_a_lent_one_never_is():
    pool = ScratchPool()
    a = pool.take((100, 8), np.float64)
    b = pool.take((50, 8), np.float64)  # `a` is lent: a different array
    assert not np.shares_memory(a, b)
    a[:] = 1.0
    b[:] = 2.0
    assert (a == 1.0).all()
    kept = _address(b)
    pool.give(b)
    c = pool.take((10, 8), np.float64)
    assert _address(c) == kept  # given back: reused
    assert c.shape == (10, 8) and c.flags.c_contiguous and c.dtype == np.float64
    d = pool.take((10, 8), np.float64)  # `c` is still lent
    assert not np.shares_memory(c, d) and not np.shares_memory(a, d)
    pool.give(c)
    e = pool.take((100, 8), np.float64)  # larger than the kept array: a new one
    assert e.size == 800 and e.flags.c_contiguous and _address(e) != kept
    for array in (a, d, e):
        pool.give(array)
    pool.release()  # forgotten: the next request allocates
    assert pool.kept_bytes == 0


def test_dtypes_do_not_share_large_arrays_are_not_kept_and_strangers_are_refused():
    pool = ScratchPool(max_bytes=1024, keep_bytes=4096)
    a = pool.take((4,), np.float32)
    pool.give(a)
    b = pool.take((4,), np.float64)
    assert b.dtype == np.float64 and not np.shares_memory(a, b)
    big = pool.take((1024,), np.float64)  # 8 KiB > max_bytes: never kept
    pool.give(big)
    assert pool.kept_bytes == a.nbytes
    with pytest.raises(ValueError, match="not lent"):
        pool.give(np.empty(3))
    with pytest.raises(ValueError, match="not lent"):
        pool.give(a)  # already given back


def test_the_pool_keeps_at_most_keep_bytes():
    pool = ScratchPool(keep_bytes=1000)
    arrays = [pool.take((100,), np.float64) for _ in range(3)]  # 800 bytes each
    for array in arrays:
        pool.give(array)
    assert pool.kept_bytes == 800


def test_two_moments_alive_together_keep_their_own_state():
    import distillscope as ds

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    a, b = ds.SecondMoments(3).update(x), ds.SecondMoments(3).update(y)
    np.testing.assert_allclose(a.covariance(), np.cov(x, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(b.covariance(), np.cov(y, rowvar=False), rtol=1e-12)


def test_widening_float16_is_exact_for_every_bit_pattern():
    from distillscope._scratch import widen_float16

    every = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(256, 256)
    wide = widen_float16(every)
    assert wide.dtype == np.float32 and wide.shape == (256, 256)
    # bit for bit: signed zeros, subnormals, infinities and NaN payloads included
    np.testing.assert_array_equal(wide.view(np.uint32), every.astype(np.float32).view(np.uint32))
    strided = every[:, ::3]
    np.testing.assert_array_equal(widen_float16(strided).view(np.uint32),
                                  strided.astype(np.float32).view(np.uint32))
    same = np.ones((2, 3), dtype=np.float32)
    assert widen_float16(same) is same


def test_widen_kernel_runs_as_plain_python_too():
    """Called directly (also under NUMBA_DISABLE_JIT=1, where it is plain Python)."""
    from distillscope._kernels import widen_half

    values = np.array([0.0, -0.0, 6e-8, -3e-5, 1.5, -65504.0, np.inf, -np.inf, np.nan],
                      dtype=np.float16)
    out = np.empty(values.size, dtype=np.float32)
    widen_half(values.view(np.uint16), out)
    np.testing.assert_array_equal(out.view(np.uint32), values.astype(np.float32).view(np.uint32))


def test_narrowing_back_to_float16_is_exact_for_every_bit_pattern():
    """The held rows of float16 stores are narrowed back from their widened float32 copy."""
    from distillscope._kernels import narrow_half

    every = np.arange(65536, dtype=np.uint16)
    wide = every.view(np.float16).astype(np.float32)
    bits = np.empty(65536, dtype=np.uint16)
    narrow_half(wide, bits)
    np.testing.assert_array_equal(bits, every)  # NaN payloads and signed zeros included
