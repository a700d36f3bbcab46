"""The scratch pool: reuse only what nobody holds, never hand out a live array twice."""

import numpy as np

from distillscope._scratch import MAX_BYTES, scratch


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
