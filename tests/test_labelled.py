"""The labelled layer adds labels only: DataArray results equal their numpy twins."""

import numpy as np
import pytest
import xarray as xr

import distillscope as ds
from distillscope.metrics import dimensionality


@pytest.fixture
def stacked():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 2, 40, 6)) * rng.uniform(0.1, 3, 6)
    return xr.DataArray(data, dims=("model", "layer", "sample", "feature"),
                        coords={"model": ["t", "s1", "s2"], "layer": ["a", "b"]})


@pytest.mark.parametrize("estimator", list(ds.ESTIMATORS))
@pytest.mark.parametrize("l2", [False, True])
def test_effective_rank_dataarray_equals_numpy(stacked, estimator, l2):
    out = ds.effective_rank(stacked, estimator, l2_normalize=l2)
    assert out.dims == ("model", "layer")
    assert out.attrs["estimator"] == estimator and out.attrs["l2_normalize"] == int(l2)
    for m in stacked.model.values:
        for layer in stacked.layer.values:
            z = stacked.sel(model=m, layer=layer).values
            assert float(out.sel(model=m, layer=layer)) == dimensionality.effective_rank(
                z, estimator, l2_normalize=l2)


def test_dims_in_any_order_and_dtypes(stacked):
    transposed = stacked.transpose("feature", "model", "sample", "layer")
    a = ds.effective_rank(stacked)
    b = ds.effective_rank(transposed, sample_dim="sample", feature_dim="feature")
    xr.testing.assert_allclose(a, b.transpose(*a.dims), rtol=1e-12)
    c = ds.effective_rank(stacked.astype(np.float32))
    z = stacked.values.astype(np.float32)[0, 0]
    assert float(c[0, 0]) == dimensionality.effective_rank(z)


def test_eigenspectrum_dataarray(stacked):
    spec = ds.eigenspectrum(stacked)
    assert spec.dims == ("model", "layer", "component")
    assert list(spec.component.values) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(spec.sel(model="s1", layer="b").values,
                                  dimensionality.eigenspectrum(stacked.sel(model="s1", layer="b").values))
    assert spec.attrs["long_name"] and spec.attrs["units"]


def test_numpy_input_returns_numpy():
    z = np.random.default_rng(1).standard_normal((30, 4))
    assert isinstance(ds.effective_rank(z), float)
    assert isinstance(ds.eigenspectrum(z), np.ndarray)


def test_bad_dims():
    da = xr.DataArray(np.ones((4, 3)), dims=("sample", "feature"))
    with pytest.raises(ds.InputError, match="sample_dim 'obs' is not a dimension"):
        ds.effective_rank(da, sample_dim="obs")
    with pytest.raises(ds.InputError, match="must differ"):
        ds.effective_rank(da, sample_dim="sample", feature_dim="sample")


@pytest.mark.parametrize("metric", ["linear_cka", "linear_cka_debiased", "svcca", "mutual_knn",
                                    "procrustes_angular", "infonce_loss"])
def test_alignment_score_dataarray_equals_numpy(metric):
    rng = np.random.default_rng(2)
    t = xr.DataArray(rng.standard_normal((2, 120, 6)), dims=("condition", "sample", "feature"),
                     coords={"condition": ["clean", "noise"]})
    s = xr.DataArray(rng.standard_normal((2, 120, 6)) + t.values, dims=("condition", "sample", "unit"),
                     coords={"condition": ["clean", "noise"]})
    out = ds.alignment_score(t, s, metric)
    assert out.dims == ("condition",) and out.attrs["metric"] == metric
    for c in ("clean", "noise"):
        expected = ds.alignment_score(t.sel(condition=c).values, s.sel(condition=c).values, metric)
        assert float(out.sel(condition=c)) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ds.InputError, match="metric must be one of"):
        ds.alignment_score(t, s, "cosine")


def test_alignment_score_names_first_sample_mismatch():
    rng = np.random.default_rng(3)
    t = xr.DataArray(rng.standard_normal((20, 3)), dims=("sample", "f"), coords={"sample": np.arange(20)})
    ids = np.arange(20)
    ids[[6, 7]] = ids[[7, 6]]
    s = xr.DataArray(rng.standard_normal((20, 3)), dims=("sample", "g"), coords={"sample": ids})
    with pytest.raises(ds.InputError, match="first at position 6 \\(teacher 6, student 7\\)"):
        ds.alignment_score(t, s)
