"""Band energy of feature maps: known spectra, Parseval, token reshaping, streaming."""

import numpy as np
import pytest

import distillscope as ds
from distillscope.metrics import frequency as fr


def _plain_power(maps):
    """The obvious reference: full complex fft2 in float64, |F|^2, mean over samples x channels."""
    f = np.fft.fft2(np.asarray(maps, dtype=np.float64), norm="ortho")
    return (np.abs(f) ** 2).mean(axis=(0, 1))


def _sign_averaged(power):
    """``(P(ky, kx) + P(-ky, kx)) / 2``, by explicit loops."""
    h, w = power.shape
    out = np.empty_like(power)
    for ky in range(h):
        for kx in range(w):
            out[ky, kx] = (power[ky, kx] + power[(h - ky) % h, kx]) / 2
    return out


@pytest.mark.parametrize("h, w", [(14, 14), (7, 7), (6, 9), (5, 8), (1, 4), (4, 1), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_power_matches_full_fft_and_parseval(h, w, dtype):
    x = np.random.default_rng(0).standard_normal((5, 3, h, w)).astype(dtype)
    p = fr.power_spectrum(x)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    full = _plain_power(x)
    np.testing.assert_allclose(p, _sign_averaged(full), rtol=tol, atol=tol * p.max())
    np.testing.assert_array_equal(fr.power_spectrum(np.asfortranarray(x)), p)  # strided input
    for ky in range(h):  # the same at all four sign quadrants
        for kx in range(w):
            assert p[ky, kx] == p[(h - ky) % h, kx] == p[ky, (w - kx) % w]
    assert p.sum() * 15 == pytest.approx(float((x.astype(np.float64) ** 2).sum()), rel=tol)
    # bands and rings see only |fy| and |fx|: those of the unaveraged spectrum, exactly
    assert fr.band_fractions(p) == pytest.approx(fr.band_fractions(full), rel=tol)
    np.testing.assert_allclose(fr.radial_profile(p)[1], fr.radial_profile(full)[1], rtol=tol,
                               atol=1e-15)


def test_oriented_waves_keep_their_power_in_their_quadrant_pair():
    """A wave along (1, 1) and one along (1, -1) differ only in orientation: same sign-averaged
    spectrum, each the average of the two orientations."""
    yy, xx = np.mgrid[0:8, 0:8]
    a = np.cos(2 * np.pi * (yy + xx) / 8)[None, None]
    b = np.cos(2 * np.pi * (yy - xx) / 8)[None, None]
    np.testing.assert_allclose(fr.power_spectrum(a), fr.power_spectrum(b), atol=1e-12)
    np.testing.assert_allclose(fr.power_spectrum(a), _sign_averaged(_plain_power(a)), atol=1e-12)


def test_remove_mean_equals_subtracting_it():
    x = np.random.default_rng(4).standard_normal((4, 2, 6, 7)) + 3.0
    centred = x - x.mean(axis=(2, 3), keepdims=True)
    removed = fr.SpectrumAccumulator((6, 7), remove_mean=True).update(x).mean_power()
    np.testing.assert_allclose(removed, _sign_averaged(_plain_power(centred)), atol=1e-12)


@pytest.mark.parametrize("h, w", [(16, 16), (14, 10), (9, 12)])
def test_sinusoids_land_in_their_band_and_ring(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    for ky, kx in [(1, 0), (0, 2), (2, 3), (h // 2, 0)]:
        wave = np.cos(2 * np.pi * (ky * yy / h + kx * xx / w))
        p = fr.power_spectrum(wave[None, None])
        rho = np.sqrt((min(ky, h - ky) / h) ** 2 + (min(kx, w - kx) / w) ** 2) / 0.5
        fractions = fr.band_fractions(p)
        band = next(name for name, (lo, hi) in fr.BANDS.items() if lo <= rho < hi or
                    (name == "high" and rho >= lo))
        assert fractions[band] == pytest.approx(1.0, abs=1e-12), (ky, kx, rho, fractions)
        edges, profile = fr.radial_profile(p, bins=6)
        ring = min(np.searchsorted(edges, rho, side="right") - 1, 5)
        assert profile[ring] == pytest.approx(1.0, abs=1e-12)


def test_checkerboard_is_high_band_and_dc_is_excluded():
    checker = (np.indices((8, 8)).sum(axis=0) % 2) * 2.0 - 1.0
    fractions = fr.band_fractions(fr.power_spectrum(checker[None, None] + 5.0))
    assert fractions == pytest.approx({"low": 0.0, "mid": 0.0, "high": 1.0}, abs=1e-12)
    odd = (np.indices((7, 9)).sum(axis=0) % 2) * 1.0  # no exact Nyquist: near the corner
    assert fr.band_fractions(fr.power_spectrum(odd[None, None]))["high"] > 0.9
    constant = np.full((2, 1, 6, 6), 3.0)
    assert all(np.isnan(v) for v in fr.band_fractions(fr.power_spectrum(constant)).values())
    removed = fr.SpectrumAccumulator((6, 6), remove_mean=True).update(constant + np.arange(6))
    assert removed.mean_power()[0, 0] == pytest.approx(0.0, abs=1e-20)


def test_tokens_reshape_drops_exactly_the_prefix():
    n, h, w, d, prefix = 2, 3, 4, 5, 2
    tokens = np.zeros((n, prefix + h * w, d))
    tokens[:, :prefix] = 1e6  # the CLS / distillation tokens must vanish
    for y in range(h):
        for x in range(w):
            tokens[:, prefix + y * w + x, :] = 10 * y + x
    maps = fr.tokens_to_maps(tokens, (h, w), prefix)
    assert maps.shape == (n, d, h, w)
    np.testing.assert_array_equal(maps[0, 0], 10 * np.arange(h)[:, None] + np.arange(w)[None, :])
    with pytest.raises(ds.InputError, match="tokens != 1 prefix"):
        fr.tokens_to_maps(tokens, (h, w), 1)


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_streaming_and_merging_equal_in_memory(chunk):
    x = np.random.default_rng(1).standard_normal((20, 4, 6, 5))
    whole = fr.SpectrumAccumulator((6, 5), log_amplitude=True).update(x)
    parts = []
    for start in range(0, 20, chunk):
        parts.append(fr.SpectrumAccumulator((6, 5), log_amplitude=True).update(x[start:start + chunk]))
    merged = parts[0]
    for p in parts[1:]:
        merged.merge(p)
    np.testing.assert_allclose(merged.mean_power(), whole.mean_power(), rtol=1e-12)
    np.testing.assert_allclose(merged.mean_log_amplitude(), whole.mean_log_amplitude(), rtol=1e-12)


def test_park_kim_relative_log_amplitude_as_published():
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8))
    acc = fr.SpectrumAccumulator((8, 8), log_amplitude=True).update(x)
    mean_log = np.log(np.abs(np.fft.fft2(x)) / 8 + 1e-6).mean(axis=(0, 1))  # ortho = /sqrt(64)
    expected = np.diag(np.fft.fftshift(mean_log))[4:]
    np.testing.assert_allclose(fr.relative_log_amplitude(acc.mean_log_amplitude()),
                               expected - expected[0], atol=1e-12)
    assert fr.relative_log_amplitude(acc.mean_log_amplitude()).size == 4  # misses the corner
    with pytest.raises(ds.InputError, match="square grids"):
        fr.relative_log_amplitude(np.zeros((6, 8)))


def test_bad_maps_refused():
    x = np.ones((2, 2, 4, 4))
    x[1, 0, 2, 2] = np.nan
    with pytest.raises(ds.InputError, match="NaN or infinite"):
        fr.power_spectrum(x)
    with pytest.raises(ds.InputError, match="shape"):
        fr.SpectrumAccumulator((4, 4)).update(np.ones((2, 2, 4, 5)))


def test_analyze_band_energy_of_maps_and_tokens(tmp_path):
    from conftest import write_store

    rng = np.random.default_rng(3)
    n = 30
    yy, xx = np.mgrid[0:8, 0:8]
    smooth = np.cos(2 * np.pi * yy / 8)  # lowest frequency
    checker = (np.indices((8, 8)).sum(axis=0) % 2) * 2.0 - 1.0
    maps = rng.standard_normal((n, 3, 1, 1)) * smooth + 0.01 * rng.standard_normal((n, 3, 8, 8))
    tokens = np.concatenate([np.full((n, 1, 4), 50.0),  # a CLS token that must not count
                             (rng.standard_normal((n, 1, 1, 4)) * checker[None, :, :, None])
                             .reshape(n, 64, 4)], axis=1)
    path = write_store(tmp_path / "f.h5", {
        ("teacher", "clean", "tokens"): (tokens, {"grid": (8, 8), "num_prefix_tokens": 1}),
        ("student", "clean", "conv"): maps,
    })
    r = ds.analyze(path, alignment=False, rows=7)
    student = r["band_fraction"].sel(model="student", condition="clean", layer="conv")
    teacher = r["band_fraction"].sel(model="teacher", condition="clean", layer="tokens")
    assert float(student.sel(band="low")) > 0.95
    assert float(teacher.sel(band="high")) == pytest.approx(1.0, abs=1e-9)
    expected = fr.power_spectrum(maps)
    np.testing.assert_allclose(
        r["radial_profile"].sel(model="student", condition="clean", layer="conv").values,
        fr.radial_profile(expected)[1], rtol=1e-10)
    assert np.isnan(r["band_fraction"].sel(model="teacher", condition="clean", layer="conv")).all()
    assert int(r["grid_height"].sel(model="teacher", condition="clean", layer="tokens")) == 8
    pk = ds.analyze(path, alignment=False, park_kim=True)
    acc = fr.SpectrumAccumulator((8, 8), log_amplitude=True).update(maps)
    np.testing.assert_allclose(
        pk["relative_log_amplitude"].sel(model="student", condition="clean", layer="conv").values,
        fr.relative_log_amplitude(acc.mean_log_amplitude()), atol=1e-12)
