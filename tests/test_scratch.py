"""The scratch pool: reuse only what nobody holds, never hand out a live array twice."""

import numpy as np

from distillscope._scratch import MAX_BYTES, release, scratch


def _address(array):
    return array.__array_interface__["data"][0]


def test_a_released_array_is_reused_and_a_held_one_never_is():
    a = scratch("test-pool", (100, 8), np.float64)
    b = scratch("test-pool", (50, 8), np.float64)  # `a` is alive: a different array
    assert not np.shares_memory(a, b)
    a[:] = 1.0
    b[:] = 2.0
    assert (a == 1.0).all()
    kept = _address(b)  # the pool now keeps b's array
    del a, b
    c = scratch("test-pool", (10, 8), np.float64)
    assert _address(c) == kept  # free again: reused
    assert c.shape == (10, 8) and c.flags.c_contiguous and c.dtype == np.float64
    view = c[3:5]
    del c
    d = scratch("test-pool", (10, 8), np.float64)  # a view of `c` is still held
    assert _address(d) != kept and not np.shares_memory(view, d)
    del view, d
    e = scratch("test-pool", (100, 8), np.float64)  # larger than the kept array: a new one
    assert e.size == 800 and e.flags.c_contiguous
    del e
    release()  # forgotten: the next request allocates
    f = scratch("test-pool", (100, 8), np.float64)
    assert f.flags.c_contiguous and f.base is not None


def test_purposes_and_dtypes_do_not_share_and_large_arrays_are_not_kept():
    a = scratch("test-one", (4,), np.float32)
    del a
    b = scratch("test-two", (4,), np.float32)
    c = scratch("test-one", (4,), np.float64)
    assert b.dtype == np.float32 and c.dtype == np.float64
    big = scratch("test-big", (MAX_BYTES // 8 + 1,), np.float64)
    assert big.base is None  # allocated plainly, never pooled


def test_streams_of_two_layers_do_not_clobber_each_other(tmp_path):
    """Two SecondMoments alive together keep their own last blocks."""
    import distillscope as ds

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, 3)), rng.standard_normal((40, 3))
    a, b = ds.SecondMoments(3).update(x), ds.SecondMoments(3).update(y)
    np.testing.assert_allclose(a.last_block + a._shift, x)
    np.testing.assert_allclose(b.last_block + b._shift, y)


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
