"""Alignment metrics: published check values, slow references, invariances, streaming."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg

from distillscope.metrics import alignment as al
from distillscope.metrics import neighbours as nb
from distillscope.metrics import predictivity as pr
import distillscope as ds

import reference_alignment as ref


@pytest.fixture
def kornblith():
    """The data of Kornblith et al.'s CKA demo notebook."""
    np.random.seed(1337)
    x = np.random.randn(100, 10)
    y = np.random.randn(100, 10) + x
    return x, y


def test_published_check_values(kornblith):
    x, y = kornblith
    assert al.linear_cka(x, y) == pytest.approx(0.55761, abs=5e-6)
    assert al.rbf_cka(x, y, threshold=0.5) == pytest.approx(0.65483, abs=5e-6)
    assert al.linear_cka(x, y, debiased=True) == pytest.approx(0.51346, abs=5e-6)
    assert np.mean(al.cca(x, y, center=False) ** 2) == pytest.approx(0.54312, abs=5e-6)
    a = np.random.RandomState(0).randn(4, 3)
    assert np.degrees(al.subspace_angles(a[:, :2], a[:, [2]]))[0] == pytest.approx(55.832, abs=5e-4)


def _data(n, d1, d2, seed=0, shared=4):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, shared))
    x = z @ rng.standard_normal((shared, d1)) + 0.5 * rng.standard_normal((n, d1)) + 3.0
    y = z @ rng.standard_normal((shared, d2)) + 0.8 * rng.standard_normal((n, d2)) - 1.0
    return x, y


@pytest.mark.parametrize("n, d1, d2", [(200, 12, 7), (30, 40, 25)])
def test_cka_matches_gram_references(n, d1, d2):
    x, y = _data(n, d1, d2)
    assert al.linear_cka(x, y) == pytest.approx(ref.linear_cka(ref.centre(x), ref.centre(y)), rel=1e-10)
    assert al.linear_cka(x, y, debiased=True) == pytest.approx(ref.linear_cka_debiased(x, y), rel=1e-9)


def test_cca_family_matches_references():
    x, y = _data(400, 12, 9, seed=1)
    np.testing.assert_allclose(al.cca(x, y), ref.cca(x, y), rtol=1e-9)
    assert al.svcca(x, y) == pytest.approx(ref.svcca(x, y), rel=1e-9)
    assert al.pwcca(x, y) == pytest.approx(ref.pwcca(x, y), rel=1e-9)
    assert al.pwcca(y, x) == pytest.approx(ref.pwcca(y, x), rel=1e-9)  # narrower on either side


def test_angles_procrustes_and_variance_captured_match_references():
    x, y = _data(300, 10, 8, seed=2)
    np.testing.assert_allclose(al.principal_angles(x, y, k=4), ref.principal_angles_sample(x, y, 4),
                               atol=1e-9)
    for alpha in (1.0, 0.5, 0.0):
        assert al.procrustes_angular(x, y, alpha=alpha) == pytest.approx(
            ref.procrustes_angular(x, y, alpha), abs=1e-9)
    x2, y2 = _data(300, 10, 10, seed=3)
    np.testing.assert_allclose(al.variance_captured(x2, y2), ref.variance_captured(x2, y2), rtol=1e-9)
    assert al.variance_captured(x2, y2)[-1] == pytest.approx(1.0)
    a, b = np.random.default_rng(4).standard_normal((2, 8, 5))
    # two 5-dim subspaces of R^8 share at least 2 dimensions: scipy returns ~1e-8 there, the
    # sine formula ~1e-16
    np.testing.assert_allclose(al.subspace_angles(a, b), np.sort(scipy.linalg.subspace_angles(a, b)),
                               atol=1e-7)
    assert al.subspace_angles(a, b)[:2].max() < 1e-12


@pytest.mark.parametrize("tile", [None, 1, 7, 64, 149])
def test_mutual_knn_matches_full_sort(tile):
    x, y = _data(150, 6, 5, seed=5)
    score, chance = nb.mutual_knn(x, y, k=7, tile=tile)
    assert score == pytest.approx(ref.mutual_knn(x, y, 7), abs=1e-12)
    assert chance == 7 / 149
    same, _ = nb.mutual_knn(x, x * 3.0, k=7)
    assert same == 1.0


def test_infonce_and_uniformity_match_loops():
    x, y = _data(150, 6, 5, seed=6)
    y6 = np.concatenate([y, np.ones((150, 1))], axis=1)
    for reduction in ("sample", "batch"):
        loss, bound = nb.infonce(y6, x, tau=0.1, batch_size=64, reduction=reduction)
        assert loss == pytest.approx(ref.infonce(y6, x, 0.1, 64, reduction), rel=1e-10)
    loss, bound = nb.infonce(y6, x, tau=0.1, batch_size=64, reduction="batch")
    sizes = [64, 64, 22]
    per_batch = [ref.infonce(y6[i * 64:i * 64 + s], x[i * 64:i * 64 + s], 0.1, 64, "batch")
                 for i, s in enumerate(sizes)]
    assert bound == pytest.approx(np.mean([math.log(s) - v for s, v in zip(sizes, per_batch)]), rel=1e-10)
    assert bound <= math.log(64)
    assert nb.uniformity(x) == pytest.approx(ref.uniformity(x), rel=1e-10)
    assert nb.uniformity(x, include_diagonal=True) == pytest.approx(
        ref.uniformity(x, include_diagonal=True), rel=1e-10)
    batch = nb.uniformity(x, batch_size=64, include_diagonal=True)
    expected = np.mean([ref.uniformity(x[s:s + 64], include_diagonal=True) for s in (0, 64, 128)])
    assert batch == pytest.approx(expected, rel=1e-10)


def test_ridge_retention_matches_explicit_cv():
    x, y = _data(240, 8, 6, seed=7)
    folds = [np.arange(i * 60, (i + 1) * 60) for i in range(4)]
    moments = [ds.PairMoments(8, 6).update(x[f], y[f]) for f in folds]
    r2, spectrum = pr.ridge_retention(moments, ridge=1e-2)
    r2_ref, spectrum_ref = ref.ridge_cv(x, y, folds, 1e-2)
    assert r2 == pytest.approx(r2_ref, rel=1e-9)
    np.testing.assert_allclose(spectrum, spectrum_ref, rtol=1e-8, atol=1e-10)
    assert spectrum[0] > spectrum[-1]  # the shared directions survive, the noise does not


# --------------------------------------------------------------------------------- invariances
def _orth(d, rng):
    return np.linalg.qr(rng.standard_normal((d, d)))[0]


METRICS = {
    "linear_cka": lambda x, y: al.linear_cka(x, y),
    "linear_cka_debiased": lambda x, y: al.linear_cka(x, y, debiased=True),
    "cca_mean": lambda x, y: al.cca(x, y).mean(),
    "svcca": al.svcca,
    "pwcca": al.pwcca,
    "principal_angles": lambda x, y: al.principal_angles(x, y, k=3).sum(),
    "procrustes_angular": al.procrustes_angular,
    "mutual_knn": lambda x, y: nb.mutual_knn(x - x.mean(0), y - y.mean(0), k=5)[0],
}


@pytest.mark.parametrize("name", list(METRICS))
def test_invariances(name):
    metric = METRICS[name]
    rng = np.random.default_rng(8)
    x, y = _data(200, 8, 6, seed=9)
    base = metric(x, y)
    perm = rng.permutation(200)
    assert metric(x[perm], y[perm]) == pytest.approx(base, rel=1e-8, abs=1e-10)
    rotated = metric(x @ _orth(8, rng), y @ _orth(6, rng))
    if name == "pwcca":  # its weights sum |<h_i, x_j>| over neurons: a basis-dependent choice
        assert rotated != pytest.approx(base, rel=1e-4)
        signs = np.where(rng.random(8) < 0.5, -1.0, 1.0)
        rotated = metric(x[:, rng.permutation(8)] * signs, y)  # neuron permutation and sign flips
    assert rotated == pytest.approx(base, rel=1e-8, abs=1e-10)
    assert metric(x * 4.0, y * 0.3) == pytest.approx(base, rel=1e-8, abs=1e-10)
    if name != "mutual_knn":  # cosine kNN of raw vectors is not translation invariant
        assert metric(x + 7.0, y - 2.0) == pytest.approx(base, rel=1e-8, abs=1e-10)


def test_cka_not_invariant_to_invertible_maps_but_cca_is():
    rng = np.random.default_rng(10)
    x, y = _data(300, 8, 6, seed=11)
    a = rng.standard_normal((8, 8)) + np.diag(np.linspace(0.1, 5, 8))
    assert al.linear_cka(x @ a, y) != pytest.approx(al.linear_cka(x, y), rel=1e-3)
    assert al.procrustes_angular(x @ a, y) != pytest.approx(al.procrustes_angular(x, y), rel=1e-3)
    np.testing.assert_allclose(al.cca(x @ a, y), al.cca(x, y), rtol=1e-8)
    assert al.procrustes_angular(x @ a, y, alpha=0.0) == pytest.approx(
        al.procrustes_angular(x, y, alpha=0.0), abs=1e-8)


# --------------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("chunk", [1, 3, 17, 64, 1000])
@pytest.mark.parametrize("n, d1, d2", [(300, 10, 6), (12, 10, 6)])
def test_streaming_cka_equals_in_memory(chunk, n, d1, d2):
    x, y = _data(n, d1, d2, seed=12)
    m = ds.PairMoments(d1, d2)
    for start in range(0, n, chunk):
        m.update(x[start:start + chunk], y[start:start + chunk])
    assert al.linear_cka(m) == pytest.approx(ref.linear_cka(ref.centre(x), ref.centre(y)), rel=1e-10)
    assert al.linear_cka(m, debiased=True) == pytest.approx(ref.linear_cka_debiased(x, y), rel=1e-9)


def test_merging_with_a_shared_shift_or_not():
    x, y = _data(200, 5, 4, seed=13)
    shift = (x[:10].mean(0), y[:10].mean(0))
    parts = [ds.PairMoments(5, 4, shift=shift).update(x[i::3], y[i::3]) for i in range(3)]
    total = ds.PairMoments(5, 4, shift=shift)
    for p in parts:
        total.merge(p)
    assert al.linear_cka(total, debiased=True) == pytest.approx(ref.linear_cka_debiased(x, y), rel=1e-9)
    # each part choosing its own shift: merging re-expresses their sums, exactly
    own = [ds.PairMoments(5, 4).update(x[i::3] + 40 * i, y[i::3] - 9 * i) for i in range(3)]
    far = np.concatenate([x[i::3] + 40 * i for i in range(3)])
    near = np.concatenate([y[i::3] - 9 * i for i in range(3)])
    merged = ds.PairMoments(5, 4)
    for p in own[::-1]:
        merged.merge(p)
    assert al.linear_cka(merged, debiased=True) == pytest.approx(
        ref.linear_cka_debiased(far, near), rel=1e-9)
    assert al.linear_cka(merged) == pytest.approx(
        ref.linear_cka(ref.centre(far), ref.centre(near)), rel=1e-10)


# ------------------------------------------------------------------------------------ guards
def test_guards():
    x, y = _data(30, 20, 15)
    with pytest.raises(ds.InputError, match="d1 \\+ d2 = 35 >= n = 30"):
        al.cca(x, y)
    x, y = _data(100, 12, 5)
    with pytest.warns(al.DegenerateWarning, match="inflated"):
        al.cca(x, y)
    with pytest.raises(ds.InputError, match="same samples"):
        al.linear_cka(x, y[:50])
    with pytest.raises(ds.InputError, match="at least 4"):
        al.linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(ds.InputError, match="d1 == d2"):
        al.variance_captured(x, y)
    with pytest.raises(ds.InputError, match="subsample"):
        al.rbf_cka(x, y, max_samples=50)
    with pytest.raises(ds.InputError, match="k must lie"):
        nb.mutual_knn(x, y, k=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        al.linear_cka(x, y, debiased=True)  # the debiased estimator does not warn


def test_biased_cka_warns_at_small_samples():
    x, y = _data(100, 12, 5)
    with pytest.warns(al.DegenerateWarning, match="debiased=True"):
        al.linear_cka(x, y)


def test_feature_space_angles_match_scipy_on_principal_directions():
    x, y = _data(300, 9, 9, seed=14)
    k = 4
    vx = np.linalg.svd(ref.centre(x), full_matrices=False)[2][:k].T
    vy = np.linalg.svd(ref.centre(y), full_matrices=False)[2][:k].T
    np.testing.assert_allclose(al.principal_angles(x, y, k=k, space="feature"),
                               np.sort(scipy.linalg.subspace_angles(vx, vy)), atol=1e-7)
    with pytest.raises(ds.InputError, match="d1 == d2"):
        al.principal_angles(x, y[:, :5], k=3, space="feature")
