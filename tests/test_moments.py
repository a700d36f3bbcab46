"""Streaming second moments equal the in-memory computation for any split of the data."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import distillscope as ds

import reference as ref


def _stream(z, sizes, l2=False):
    m = ds.SecondMoments(z.shape[1], l2_normalize=l2)
    start = 0
    for size in sizes:
        m.update(z[start:start + size])
        start += size
    if start < z.shape[0]:
        m.update(z[start:])
    return m


def _data(n, d, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d)) * rng.uniform(0.2, 4, d) + rng.uniform(-3, 8, d)
    return z.astype(dtype)


def _close_spectra(got, expected, scale=1.0):
    """Equal to 1e-10 relative to the largest eigenvalue (or the data's scale if all are 0)."""
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * max(expected[0], scale))


@pytest.mark.parametrize("n, d", [(500, 12), (9, 30), (30, 30), (31, 30)])
@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 10_000])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_stream_equals_in_memory(n, d, chunk, dtype):
    z = _data(n, d, dtype=dtype)
    m = _stream(z, [chunk] * (n // chunk + 1))
    exact = z.astype(np.float64)
    for center in (True, False):
        _close_spectra(m.eigenvalues(center=center), ref.spectrum(exact, center=center))
    assert ds.erank_variance(m.eigenvalues()) == pytest.approx(
        ref.entropy_rank(ref.spectrum(exact)), rel=1e-10)
    np.testing.assert_allclose(m.mean, exact.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.covariance(), np.cov(exact, rowvar=False), rtol=1e-9,
                               atol=1e-12 * np.abs(np.cov(exact, rowvar=False)).max())


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 80), d=st.integers(1, 25), data=st.data(), l2=st.booleans())
def test_any_chunking_any_merge_order(n, d, data, l2):
    z = _data(n, d, seed=n * 31 + d)
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *cuts, n]
    parts = []
    for lo, hi in zip(bounds, bounds[1:]):
        part = ds.SecondMoments(d, l2_normalize=l2)
        part.update(z[lo:hi])
        parts.append(part)
    order = data.draw(st.permutations(range(len(parts))))
    total = ds.SecondMoments(d, l2_normalize=l2)
    for i in order:
        total.merge(parts[i])
    assert total.count == n
    expected = ref.spectrum(z, l2_normalize=l2)
    _close_spectra(total.eigenvalues(), expected)


def test_large_offset_does_not_cancel():
    """A mean 1e6 times the spread: shifted sums keep the small eigenvalues exact."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal((5000, 8)) * np.arange(1, 9) + 1e6
    m = _stream(z, [333] * 20)
    np.testing.assert_allclose(m.eigenvalues(), ref.spectrum(z), rtol=1e-8)


def test_memory_does_not_hold_rows_beyond_d():
    m = ds.SecondMoments(16)
    for _ in range(50):
        m.update(np.random.default_rng(0).standard_normal((100, 16)))
    assert m.nbytes == 16 * 16 * 8 + 16 * 8  # the sums alone, whatever the rows seen
    small = ds.SecondMoments(16).update(np.ones((5, 16)))
    assert small.nbytes == 5 * 16 * 8  # fewer rows than features: the rows themselves


def test_nonfinite_chunk_leaves_accumulator_usable():
    z = _data(50, 4)
    m = ds.SecondMoments(4)
    m.update(z[:20])
    bad = z[20:30].copy()
    bad[3, 1] = np.inf
    with pytest.raises(ds.InputError, match="first at row 3, feature 1"):
        m.update(bad)
    m.update(z[20:])
    _close_spectra(m.eigenvalues(), ref.spectrum(z))


def test_zero_rows_counted_under_l2():
    z = _data(20, 3)
    z[[2, 5]] = 0.0
    m = ds.SecondMoments(3, l2_normalize=True)
    m.update(z)
    assert m.zero_norm_rows == 2
    _close_spectra(m.eigenvalues(), ref.spectrum(z, l2_normalize=True))


def test_merge_refuses_mismatched_preprocessing():
    with pytest.raises(ds.InputError, match="cannot merge"):
        ds.SecondMoments(3).merge(ds.SecondMoments(3, l2_normalize=True))
    with pytest.raises(ds.InputError, match="shape"):
        ds.SecondMoments(3).update(np.ones((2, 4)))
