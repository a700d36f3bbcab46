"""analyze(): alignment of every student with the teacher, streamed, equals the array layer."""

import numpy as np
import pytest
import xarray as xr

import distillscope as ds
from conftest import write_store

import reference_alignment as ref


@pytest.fixture
def pair_store(tmp_path):
    rng = np.random.default_rng(0)
    n = 240
    z = rng.standard_normal((n, 5))
    teacher = z @ rng.standard_normal((5, 16)) + 0.3 * rng.standard_normal((n, 16)) + 1.0
    same = z[:, :3] @ rng.standard_normal((3, 16)) + 0.2 * rng.standard_normal((n, 16))
    maps = (z @ rng.standard_normal((5, 6)))[:, :, None, None] * rng.uniform(0.5, 1.5, (1, 6, 2, 3))
    maps = maps + 0.1 * rng.standard_normal((n, 6, 2, 3))
    layers = {
        ("teacher", "clean", "embedding"): teacher.astype(np.float32),
        ("student", "clean", "embedding"): same.astype(np.float32),
        ("student", "clean", "conv"): maps.astype(np.float32),
        ("other", "clean", "embedding"): rng.standard_normal((n, 16)).astype(np.float32),
    }
    path = write_store(tmp_path / "pairs.h5", layers)
    pooled = {"teacher": teacher.astype(np.float32).astype(np.float64),
              "embedding": same.astype(np.float32).astype(np.float64),
              "conv": maps.astype(np.float32).astype(np.float64).mean(axis=(2, 3)),
              "other": layers[("other", "clean", "embedding")].astype(np.float64)}
    return path, pooled


def _get(r, name, student="student", teacher_layer="embedding", student_layer="embedding"):
    return r[name].sel(student=student, condition="clean", teacher_layer=teacher_layer,
                       student_layer=student_layer)


def test_streamed_alignment_equals_array_layer(pair_store):
    path, pooled = pair_store
    r = ds.analyze(path, rows=37)
    x = pooled["teacher"]
    for layer in ("embedding", "conv"):
        y = pooled[layer]
        assert float(_get(r, "linear_cka", student_layer=layer)) == pytest.approx(
            ref.linear_cka(ref.centre(x), ref.centre(y)), rel=1e-10)
        assert float(_get(r, "linear_cka_debiased", student_layer=layer)) == pytest.approx(
            ref.linear_cka_debiased(x, y), rel=1e-9)
        rho = ref.cca(x, y)
        assert float(_get(r, "cca_mean", student_layer=layer)) == pytest.approx(rho.mean(), rel=1e-9)
        assert float(_get(r, "cca_r2", student_layer=layer)) == pytest.approx((rho**2).mean(), rel=1e-9)
        assert float(_get(r, "svcca", student_layer=layer)) == pytest.approx(ref.svcca(x, y), rel=1e-9)
        assert float(_get(r, "pwcca", student_layer=layer)) == pytest.approx(ref.pwcca(x, y), rel=1e-9)
        assert float(_get(r, "procrustes_angular", student_layer=layer)) == pytest.approx(
            ref.procrustes_angular(x, y), abs=1e-9)
        assert float(_get(r, "mutual_knn", student_layer=layer)) == pytest.approx(
            ref.mutual_knn(x, y, 10), abs=1e-12)
        k = min(10, y.shape[1])
        np.testing.assert_allclose(_get(r, "principal_angles", student_layer=layer).values[:k],
                                   ref.principal_angles_sample(x, y, k), atol=1e-9)
        folds = [np.arange(f * 240 // 5, (f + 1) * 240 // 5) for f in range(5)]
        r2, retention = ref.ridge_cv(x, y, folds, 1e-3)
        assert float(_get(r, "linear_predictivity", student_layer=layer)) == pytest.approx(r2, rel=1e-9)
        np.testing.assert_allclose(_get(r, "retention", student_layer=layer).values[:16], retention,
                                   rtol=1e-7, atol=1e-9)
    y = pooled["embedding"]
    np.testing.assert_allclose(_get(r, "variance_captured").values, ref.variance_captured(x, y),
                               rtol=1e-9)
    assert float(_get(r, "infonce_loss")) == pytest.approx(ref.infonce(y, x, 0.1, 64, "sample"), rel=1e-10)
    assert np.isnan(_get(r, "infonce_loss", student_layer="conv"))  # different spaces
    assert np.isnan(_get(r, "variance_captured", student_layer="conv")).all()
    # all pairs from the shared similarity pass: float32 cosines of float32 features
    assert float(r["uniformity"].sel(model="teacher", condition="clean", layer="embedding")) == \
        pytest.approx(ref.uniformity(x), rel=1e-6)


def test_paper_convention_reduces_per_batch(pair_store):
    path, pooled = pair_store
    r = ds.analyze(path, convention="arxiv_2603_06698")
    unit = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in pooled.items()}
    x, y = unit["teacher"], unit["embedding"]
    assert float(_get(r, "infonce_loss")) == pytest.approx(ref.infonce(y, x, 0.1, 64, "batch"), rel=1e-10)
    batches = [ref.uniformity(x[s:s + 64], include_diagonal=True) for s in range(0, 240, 64)]
    assert float(r["uniformity"].sel(model="teacher", condition="clean", layer="embedding")) == \
        pytest.approx(np.mean(batches), rel=1e-10)
    assert float(_get(r, "linear_cka")) == pytest.approx(ref.linear_cka(ref.centre(x), ref.centre(y)),
                                                         rel=1e-10)
    assert r.attrs["infonce_reduction"] == "batch"
    # the library's decompositions of the cross moments are not the paper's: out unless named
    assert not {"cca_mean", "svcca", "principal_angles", "linear_predictivity"} & set(r)
    named = ds.analyze(path, convention="arxiv_2603_06698", metrics="default,svcca")
    xr.testing.assert_identical(named["svcca"], ds.analyze(path, metrics="svcca",
                                                           convention="arxiv_2603_06698")["svcca"])
    assert np.isfinite(_get(named, "svcca")) and "cca_mean" not in named
    assert "svcca" not in ds.analyze(path, convention="arxiv_2603_06698", frequency=False)
    assert r.attrs["omitted_metrics"].startswith("cca_mean, cca_r2, svcca, pwcca, principal_angles")
    assert named.attrs["omitted_metrics"].split(":")[0].split(", ")[:3] == ["cca_mean", "cca_r2",
                                                                             "pwcca"]


def test_alignment_contract_round_trip_and_switch(pair_store, tmp_path):
    path, _ = pair_store
    r = ds.analyze(path)
    assert r["linear_cka"].dims == ("student", "condition", "teacher_layer", "student_layer")
    assert list(r["student"].values) == ["student", "other"]
    assert list(r["student_layer"].values) == ["embedding", "conv"]
    assert np.isnan(_get(r, "linear_cka", student="other", student_layer="conv"))  # no such layer
    assert float(_get(r, "linear_cka")) > float(_get(r, "linear_cka", student="other")) + 0.2
    assert r.attrs["mutual_knn_chance"] == pytest.approx(10 / 239)
    for name, var in r.data_vars.items():
        assert {"long_name", "units", "definition"} <= set(var.attrs), name
    back = ds.load_results(ds.save_results(r, tmp_path / "r.nc"))
    xr.testing.assert_allclose(back["linear_cka"], r["linear_cka"])
    plain = ds.analyze(path, alignment=False)
    assert "linear_cka" not in plain and "effective_rank" in plain
    no_teacher = ds.analyze(path, models=["student", "other"])
    assert "linear_cka" not in no_teacher


def test_degenerate_pairs_are_nan_and_flagged(tmp_path):
    rng = np.random.default_rng(1)
    n = 40
    path = write_store(tmp_path / "wide.h5", {
        ("teacher", "clean", "e"): rng.standard_normal((n, 30)),
        ("student", "clean", "e"): rng.standard_normal((n, 12)),
    })
    r = ds.analyze(path)
    assert np.isnan(_get(r, "cca_mean", teacher_layer="e", student_layer="e"))  # d1 + d2 >= n
    assert not np.isnan(_get(r, "linear_cka_debiased", teacher_layer="e", student_layer="e"))
    path = write_store(tmp_path / "mid.h5", {
        ("teacher", "clean", "e"): rng.standard_normal((200, 30)),
        ("student", "clean", "e"): rng.standard_normal((200, 12)),
    })
    r = ds.analyze(path)
    assert bool(_get(r, "small_sample", teacher_layer="e", student_layer="e"))
