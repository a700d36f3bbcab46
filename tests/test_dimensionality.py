"""Effective-rank family: known answers, the reference implementation, identities, invariances."""

import math

import numpy as np
import pytest

import distillscope as ds
from distillscope.metrics import dimensionality as dim

import reference as ref

ESTIMATORS = list(ds.ESTIMATORS)


def _all(z, **kw):
    return {name: ds.effective_rank(z, name, **kw) for name in ESTIMATORS}


# ------------------------------------------------------------------------------ known answers
def test_worked_example_s_321():
    """Centred singular values (3, 2, 1): every estimator in closed form, to 1e-10."""
    rng = np.random.default_rng(0)
    n = 50
    z = ref.with_spectrum([3.0, 2.0, 1.0], n, rng, d=5)
    lam = np.array([9.0, 4.0, 1.0])
    p = lam / 14
    q = np.array([3.0, 2.0, 1.0]) / 6
    expected = {
        "erank_variance": math.exp(-sum(x * math.log(x) for x in p)),
        "erank_singular": math.exp(-sum(x * math.log(x) for x in q)),
        "participation_ratio": 196 / 98,
        "stable_rank": 14 / 9,
        "n_components_90": 2,  # 13/14 = 0.929 >= 0.90
        "n_components_95": 3,
        "n_components_99": 3,
    }
    got = _all(z)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-10, abs=1e-10), name
    assert expected["participation_ratio"] == 2.0
    np.testing.assert_allclose(ds.eigenspectrum(z)[:3], lam / (n - 1), rtol=1e-10)
    np.testing.assert_allclose(ds.eigenspectrum(z)[3:], 0.0, atol=1e-12)


def test_isotropic_gaussian_rank_close_to_d():
    rng = np.random.default_rng(1)
    d = 32
    z = rng.standard_normal((40_000, d))
    assert ds.effective_rank(z, "erank_variance") > 0.99 * d
    assert ds.effective_rank(z, "erank_singular") > 0.995 * d
    assert ds.effective_rank(z, "participation_ratio") > 0.98 * d


def test_isotropic_values_from_metrics_md():
    """METRICS.md: a 1000 x 1024 isotropic Gaussian gives 814 (s-based) vs 613 (s^2-based)."""
    z = np.random.default_rng(0).standard_normal((1000, 1024))
    assert ds.effective_rank(z, "erank_singular") == pytest.approx(814, abs=2)
    assert ds.effective_rank(z, "erank_variance") == pytest.approx(613, abs=2)


@pytest.mark.parametrize("a", [0.5, 1.0, 1.7, 2.5])
def test_powerlaw_alpha_recovers_exponent(a):
    rng = np.random.default_rng(2)
    d = 150
    singular = np.arange(1, d + 1, dtype=np.float64) ** (-a / 2)  # lam_i ~ i^-a
    z = ref.with_spectrum(singular * 10, 400, rng)
    lam = ds.eigenspectrum(z)
    assert ds.powerlaw_alpha(lam) == pytest.approx(a, abs=1e-8)
    assert ds.powerlaw_alpha(lam) == pytest.approx(ref.powerlaw_alpha(lam), abs=1e-10)


def test_powerlaw_alpha_nan_when_spectrum_too_short():
    assert math.isnan(ds.powerlaw_alpha(np.arange(50, 0, -1.0)))
    assert math.isnan(ds.powerlaw_alpha(np.zeros(200)))
    with pytest.raises(ds.InputError, match="fit_range"):
        ds.powerlaw_alpha(np.ones(200), fit_range=(10, 5))


# ------------------------------------------------------------------------- reference agreement
CASES = {
    "tall": (300, 20),
    "wide": (15, 40),
    "square": (30, 30),
    "lowrank": None,
}


def _case(name, rng):
    if name == "lowrank":
        return rng.standard_normal((200, 5)) @ rng.standard_normal((5, 30)) + 2.0
    n, d = CASES[name]
    return rng.standard_normal((n, d)) * rng.uniform(0.1, 3, d) + rng.uniform(-1, 3, d)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("l2", [False, True])
def test_every_estimator_matches_reference(case, l2):
    z = _case(case, np.random.default_rng(3))
    expected = ref.all_estimators(z, l2_normalize=l2)
    got = _all(z, l2_normalize=l2)
    for name in ESTIMATORS:
        assert got[name] == pytest.approx(expected[name], rel=1e-10), name
    np.testing.assert_allclose(ds.eigenspectrum(z, l2_normalize=l2),
                               ref.spectrum(z, l2_normalize=l2), rtol=1e-9,
                               atol=1e-12 * ref.spectrum(z, l2_normalize=l2)[0])


def test_eps_inside_log_as_in_arxiv_code():
    z = _case("tall", np.random.default_rng(4))
    lam = ref.spectrum(z)
    assert ds.effective_rank(z, "erank_variance", eps=1e-10) == pytest.approx(
        ref.entropy_rank(lam, 1e-10), rel=1e-12)
    # rankme's eps terms of zero singular values count: a wide matrix has min(n, d) of them
    w = _case("wide", np.random.default_rng(4))
    assert ds.effective_rank(w, "rankme") == pytest.approx(
        ref.rankme(ref.singular_values(w, center=False)), rel=1e-10)


@pytest.mark.parametrize("seed", range(20))
def test_inequality_chain(seed):
    rng = np.random.default_rng(100 + seed)
    n, d = rng.integers(5, 120), rng.integers(2, 60)
    k = rng.integers(1, d + 1)
    z = rng.standard_normal((n, k)) @ rng.standard_normal((k, d)) * rng.exponential(1, d)
    r = _all(z)
    rank = np.linalg.matrix_rank(z - z.mean(axis=0))
    chain = [r["stable_rank"], r["participation_ratio"], r["erank_variance"],
             r["erank_singular"], rank]
    for lo, hi in zip(chain, chain[1:]):
        assert lo <= hi * (1 + 1e-10), chain


def test_seed_averaged_erank_is_rank_of_mean_singular_values():
    rng = np.random.default_rng(5)
    spectra = [ref.spectrum(rng.standard_normal((100, 10)) * rng.uniform(0.1, 2, 10))
               for _ in range(3)]
    mean_s = np.mean([np.sqrt(s) for s in spectra], axis=0)
    assert ds.seed_averaged_erank(spectra) == pytest.approx(ref.entropy_rank(mean_s**2), rel=1e-12)
    per_seed = np.mean([ref.entropy_rank(s) for s in spectra])
    assert ds.seed_averaged_erank(spectra) != pytest.approx(per_seed, rel=1e-6)
    with pytest.raises(ds.InputError, match="same length"):
        ds.seed_averaged_erank([np.ones(3), np.ones(4)])


# ------------------------------------------------------------------------------- invariances
def _orthogonal(d, rng):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return q


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_invariances(estimator):
    rng = np.random.default_rng(6)
    z = _case("tall", rng)
    base = ds.effective_rank(z, estimator)
    rotated = z @ _orthogonal(z.shape[1], rng)
    permuted = z[rng.permutation(z.shape[0])]
    assert ds.effective_rank(rotated, estimator) == pytest.approx(base, rel=1e-9)
    assert ds.effective_rank(permuted, estimator) == pytest.approx(base, rel=1e-9)
    assert ds.effective_rank(z * 7.5, estimator) == pytest.approx(base, rel=1e-9)
    if ds.ESTIMATORS[estimator].center:
        assert ds.effective_rank(z + 100.0, estimator) == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("estimator", ["erank_variance", "erank_singular", "participation_ratio",
                                       "stable_rank", "rankme"])
def test_not_invariant_to_anisotropic_scaling(estimator):
    rng = np.random.default_rng(7)
    z = _case("tall", rng)
    stretched = z * np.linspace(0.1, 10, z.shape[1])
    assert ds.effective_rank(stretched, estimator) != pytest.approx(
        ds.effective_rank(z, estimator), rel=1e-3)


def test_uncentred_rankme_is_not_translation_invariant():
    z = _case("tall", np.random.default_rng(8))
    assert ds.effective_rank(z + 5.0, "rankme") < 0.75 * ds.effective_rank(z, "rankme")
    # centred, it is
    assert ds.effective_rank(z + 5.0, "rankme", center=True) == pytest.approx(
        ds.effective_rank(z, "rankme", center=True), rel=1e-9)


def test_l2_normalisation_breaks_per_sample_scaling_dependence():
    rng = np.random.default_rng(9)
    z = _case("tall", rng)
    scaled = z * rng.uniform(0.1, 10, (z.shape[0], 1))
    assert ds.effective_rank(scaled, l2_normalize=True) == pytest.approx(
        ds.effective_rank(z, l2_normalize=True), rel=1e-9)
    assert ds.effective_rank(scaled) != pytest.approx(ds.effective_rank(z), rel=1e-3)


# --------------------------------------------------------------------- degenerate and bad input
def test_constant_features_are_ignored_and_all_constant_gives_zero():
    rng = np.random.default_rng(10)
    z = rng.standard_normal((100, 6))
    with_constant = np.concatenate([z, np.full((100, 3), 4.2)], axis=1)
    for name in ESTIMATORS:
        if name != "rankme":
            assert ds.effective_rank(with_constant, name) == pytest.approx(
                ds.effective_rank(z, name), rel=1e-9), name
    constant = np.full((100, 5), 3.0)
    assert all(ds.effective_rank(constant, name) == 0 for name in ESTIMATORS if name != "rankme")
    assert ds.effective_rank(np.zeros((10, 4)), "rankme") == 0


@pytest.mark.parametrize("bad, message", [
    (np.ones((10, 3), dtype=np.int64), "floating-point"),
    (np.ones((10, 3), dtype=np.complex128), "floating-point"),
    (np.ones(10), "2-D"),
    (np.ones((10, 3, 2)), "2-D"),
    (np.ones((0, 3)), "at least one sample"),
])
def test_bad_arrays_are_refused(bad, message):
    with pytest.raises(ds.InputError, match=message):
        ds.effective_rank(bad)


def test_one_sample_cannot_be_centred():
    with pytest.raises(ds.InputError, match="at least 2 samples"):
        ds.effective_rank(np.ones((1, 4)))
    assert ds.effective_rank(np.arange(1.0, 5.0)[None, :], "rankme") == pytest.approx(1.0, rel=1e-5)


def test_nonfinite_values_are_located():
    z = np.ones((20, 4))
    z[7, 2] = np.nan
    z[9, 1] = np.inf
    with pytest.raises(ds.InputError, match=r"2 row\(s\), first at row 7, feature 2"):
        ds.effective_rank(z)


def test_unknown_estimator_lists_valid_ones():
    with pytest.raises(ds.InputError, match="erank_variance, erank_singular"):
        ds.effective_rank(np.ones((4, 2)), "entropy")


def test_n_components_threshold_checked():
    with pytest.raises(ds.InputError, match="threshold"):
        ds.n_components(np.ones(3), 1.5)
    assert dim.n_components(np.ones(10), 1.0) == 10
