"""analyze(): streamed store results equal the in-memory reference; result contract; netCDF."""

import numpy as np
import pytest
import xarray as xr

import distillscope as ds
from conftest import write_store

import reference as ref


def _rank(result, model, layer, estimator, condition="clean"):
    return float(result["effective_rank"].sel(model=model, condition=condition, layer=layer,
                                              estimator=estimator))


def _check_entry(result, model, layer, pooled, *, l2=False, eps_variance=0.0, condition="clean",
                 rankme_center=False):
    expected = ref.all_estimators(pooled.astype(np.float64), l2_normalize=l2, eps=eps_variance)
    expected["rankme"] = ref.rankme(ref.singular_values(pooled, center=rankme_center,
                                                        l2_normalize=l2))
    for name in ds.ESTIMATORS:
        got = _rank(result, model, layer, name, condition)
        assert got == pytest.approx(expected[name], rel=1e-10), (model, layer, name)
    lam = ref.spectrum(pooled.astype(np.float64), l2_normalize=l2)
    got = result["spectrum"].sel(model=model, condition=condition, layer=layer).values[: lam.size]
    np.testing.assert_allclose(got, lam, rtol=0, atol=1e-10 * lam[0])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("n, d", [(300, 40), (25, 40)])
@pytest.mark.parametrize("rows", [None, 1, 7, 64])
def test_streamed_equals_in_memory(tmp_path, dtype, n, d, rows):
    rng = np.random.default_rng(0)
    teacher = (rng.standard_normal((n, d)) * rng.uniform(0.1, 3, d) + 1.0).astype(dtype)
    # a collapsed student: five strong directions over a weak full-rank floor. (Exactly
    # low-rank float32 data has singular values at its rounding level, 1e-8 of the largest,
    # where no covariance-based method is accurate; docs/metrics.md, "numerical floor".)
    student = (rng.standard_normal((n, 5)) @ rng.standard_normal((5, d))
               + 0.01 * rng.standard_normal((n, d))).astype(dtype)
    path = write_store(tmp_path / "s.h5", {("teacher", "clean", "emb"): teacher,
                                           ("student", "clean", "emb"): student})
    result = ds.analyze(path, rows=rows)
    _check_entry(result, "teacher", "emb", teacher)
    _check_entry(result, "student", "emb", student)
    # streamed equals distillscope's in-memory path on the same array, for every estimator
    for name in ds.ESTIMATORS:
        assert _rank(result, "student", "emb", name) == pytest.approx(
            ds.effective_rank(student, name), rel=1e-10)
    assert int(result["n_features"].sel(model="teacher", condition="clean", layer="emb")) == d


def test_pooling_of_maps_and_tokens(tmp_path):
    rng = np.random.default_rng(1)
    n = 80
    maps = rng.standard_normal((n, 6, 3, 4)).astype(np.float32) + 0.5
    tokens = rng.standard_normal((n, 2 + 3 * 2, 5)).astype(np.float32)
    path = write_store(tmp_path / "p.h5", {
        ("teacher", "clean", "tokens"): (tokens, {"grid": (3, 2), "num_prefix_tokens": 2}),
        ("student", "clean", "maps"): maps,
    })
    auto = ds.analyze(path)
    _check_entry(auto, "student", "maps", maps.astype(np.float64).mean(axis=(2, 3)))
    _check_entry(auto, "teacher", "tokens", tokens[:, 0])
    assert auto["pooling"].sel(model="teacher", condition="clean", layer="tokens") == "cls"
    mean = ds.analyze(path, pooling="mean")
    _check_entry(mean, "teacher", "tokens", tokens[:, 2:].astype(np.float64).mean(axis=1))
    flat = ds.analyze(path, pooling="flatten")
    _check_entry(flat, "student", "maps", maps.reshape(n, -1))
    _check_entry(flat, "teacher", "tokens", tokens[:, 2:].reshape(n, -1))
    biggest = ds.analyze(path, pooling="max")
    _check_entry(biggest, "student", "maps", maps.max(axis=(2, 3)))
    with pytest.raises(ds.InputError, match="pooling 'cls' needs tokens"):
        ds.analyze(path, pooling="cls")


def test_conventions_and_overrides(tmp_path):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((200, 30)) * rng.uniform(0.1, 2, 30) + 0.7
    path = write_store(tmp_path / "c.h5", {("teacher", "clean", "emb"): z})
    paper = ds.analyze(path, convention="arxiv_2603_06698")
    _check_entry(paper, "teacher", "emb", z, l2=True, eps_variance=1e-10, rankme_center=True)
    assert paper.attrs["convention"] == "arxiv_2603_06698" and paper.attrs["l2_normalize"] == 1
    eps = paper["estimator_eps"].sel(estimator="erank_variance")
    assert float(eps) == 1e-10
    assert bool(paper["estimator_center"].sel(estimator="rankme"))  # the paper centres all
    default = ds.analyze(path)
    assert not bool(default["estimator_center"].sel(estimator="rankme"))
    assert float(default["estimator_eps"].sel(estimator="rankme")) == 1e-7
    rankme = ds.analyze(path, convention="rankme")
    assert _rank(rankme, "teacher", "emb", "rankme") == pytest.approx(
        ref.rankme(ref.singular_values(z, center=False)), rel=1e-10)
    assert _rank(rankme, "teacher", "emb", "erank_variance") == pytest.approx(
        ref.entropy_rank(ref.spectrum(z, center=False)), rel=1e-10)
    centred = ds.analyze(path, center=True)
    assert _rank(centred, "teacher", "emb", "rankme") == pytest.approx(
        ref.rankme(ref.singular_values(z, center=True)), rel=1e-10)
    with pytest.raises(ds.InputError, match="convention must be one of default"):
        ds.analyze(path, convention="paper")


def test_seed_aggregation(tmp_path):
    rng = np.random.default_rng(3)
    n = 150
    seeds = [rng.standard_normal((n, 4)) @ rng.standard_normal((4, 12)) + 0.1 * rng.standard_normal((n, 12))
             for _ in range(3)]
    layers = {(f"s{i}", "clean", "emb"): z for i, z in enumerate(seeds)}
    layers[("teacher", "clean", "emb")] = rng.standard_normal((n, 12))
    models = {f"s{i}": {"family": "small", "seed": i} for i in range(3)}
    path = write_store(tmp_path / "f.h5", layers, models=models)
    result = ds.analyze(path, convention="arxiv_2603_06698")
    spectra = [ref.spectrum(z, l2_normalize=True) for z in seeds]
    mean_s = np.mean([np.sqrt(s) for s in spectra], axis=0)
    got = float(result["seed_averaged_rank"].sel(family="small", condition="clean", layer="emb"))
    assert got == pytest.approx(ref.entropy_rank(mean_s**2, 1e-10), rel=1e-10)
    per_seed = [ref.entropy_rank(s, 1e-10) for s in spectra]
    spread = float(result["seed_rank_std"].sel(family="small", condition="clean", layer="emb"))
    assert spread == pytest.approx(np.std(per_seed, ddof=0), rel=1e-9)  # the paper's np.std
    assert result["seed_rank_std"].attrs["ddof"] == 0
    assert list(result["family"].values) == ["small"]
    plain = ds.analyze(path)  # default convention: mean of per-seed ranks, sample std
    got = float(plain["seed_averaged_rank"].sel(family="small", condition="clean", layer="emb"))
    per_seed = [ref.entropy_rank(ref.spectrum(z)) for z in seeds]
    assert got == pytest.approx(np.mean(per_seed), rel=1e-10)
    spread = float(plain["seed_rank_std"].sel(family="small", condition="clean", layer="emb"))
    assert spread == pytest.approx(np.std(per_seed, ddof=1), rel=1e-9)
    dims = float(plain["seed_averaged_dims"].sel(family="small", condition="clean", layer="emb"))
    assert dims == pytest.approx(np.mean([ref.n_components(ref.spectrum(z), 0.9) for z in seeds]))


def test_result_contract_and_missing_layers(tmp_path):
    rng = np.random.default_rng(4)
    path = write_store(tmp_path / "r.h5", {
        ("teacher", "clean", "emb"): rng.standard_normal((50, 8)),
        ("teacher", "noise", "emb"): rng.standard_normal((50, 8)),
        ("student", "clean", "emb"): rng.standard_normal((50, 4)),
        ("student", "clean", "conv"): rng.standard_normal((50, 3, 2, 2)),
    }, conditions=("clean", "noise"), models={"student": {"n_params": 99}})
    r = ds.analyze(path)
    assert r["effective_rank"].dims == ("model", "condition", "layer", "estimator")
    assert list(r["estimator"].values) == list(ds.ESTIMATORS)
    assert r["spectrum"].sizes["component"] == 8
    assert not bool(r["available"].sel(model="teacher", condition="clean", layer="conv"))
    assert np.isnan(r["effective_rank"].sel(model="teacher", layer="conv")).all()
    assert not bool(r["available"].sel(model="student", condition="noise", layer="emb"))
    assert np.isnan(r["spectrum"].sel(model="student", condition="clean", layer="emb").values[4:]).all()
    assert int(r["n_params"].sel(model="student")) == 99
    assert list(r["role"].values) == ["teacher", "student"]
    assert list(r["condition_kind"].values) == ["clean", "gaussian_noise"]
    for name, var in r.data_vars.items():
        assert {"long_name", "units", "definition"} <= set(var.attrs), name
    for key in ("distillscope_version", "convention", "n_samples", "store", "versions", "created"):
        assert key in r.attrs
    only = ds.analyze(path, models=["student"], conditions=["clean"], layers=["conv"])
    assert only.sizes == {"model": 1, "condition": 1, "layer": 1, "estimator": 8, "component": 3,
                          "band": 3, "radius": 8}
    logged = ds.analyze(path, models=["student"], layers=["conv"], park_kim=True)
    assert logged.sizes["diagonal_step"] == 1
    fractions = only["band_fraction"].sel(model="student", condition="clean", layer="conv")
    assert float(fractions.sum()) == pytest.approx(1.0)
    assert int(only["grid_height"].squeeze()) == 2 and int(only["grid_width"].squeeze()) == 2
    with pytest.raises(ds.InputError, match="model 'ghost' is not in the store; available: teacher, student"):
        ds.analyze(path, models=["ghost"])


def test_netcdf_round_trip_and_concat(tmp_path, small_store):
    a = ds.analyze(small_store)
    out = ds.save_results(a, tmp_path / "a.nc")
    b = ds.load_results(out)
    xr.testing.assert_identical(a.drop_vars("pooling"), b.drop_vars("pooling"))
    assert (a["pooling"].values == b["pooling"].values).all()
    assert b["available"].dtype == bool
    runs = xr.concat([b, b], dim="run", join="exact")
    assert not runs["effective_rank"].isnull().any()


def test_save_refuses_to_overwrite_and_is_atomic(tmp_path, small_store, monkeypatch):
    result = ds.analyze(small_store)
    out = tmp_path / "r.nc"
    out.write_text("precious")
    with pytest.raises(ds.OutputError, match="exists; pass overwrite=True"):
        ds.save_results(result, out)
    assert out.read_text() == "precious"

    def fail(fd):  # the disk fills up while the temporary file is synced
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("distillscope.outputs.os.fsync", fail)
    with pytest.raises(ds.OutputError, match="cannot write .No space left on device"):
        ds.save_results(result, out, overwrite=True)
    assert out.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.nc", "small.h5"]
    monkeypatch.undo()
    ds.save_results(result, out, overwrite=True)
    assert ds.load_results(out)["effective_rank"].notnull().all()
    with pytest.raises(ds.OutputError, match="does not exist"):
        ds.save_results(result, tmp_path / "missing" / "r.nc")


def test_nonfinite_store_values_named_in_analysis(tmp_path):
    z = np.random.default_rng(5).standard_normal((40, 3, 2, 2)).astype(np.float32)
    z[17, 1, 0, 1] = np.nan
    path = write_store(tmp_path / "nan.h5", {("student", "clean", "conv"): z})
    with pytest.raises(ds.StoreError, match=r"nan\.h5:/models/student/clean/conv: 1 non-finite values "
                                             r"\(1 NaN, 0 infinite\), first at sample 17 \(id 1017\), "
                                             r"feature index \(1, 0, 1\)"):
        ds.analyze(path)


def test_constant_features_flagged(tmp_path):
    rng = np.random.default_rng(6)
    z = np.concatenate([rng.standard_normal((30, 5)), np.full((30, 2), 0.1)], axis=1)
    path = write_store(tmp_path / "k.h5", {("teacher", "clean", "e"): z,
                                           ("student", "clean", "e"): np.full((30, 4), 2.5)})
    r = ds.analyze(path)
    assert int(r["constant_features"].sel(model="teacher", condition="clean", layer="e")) == 2
    assert int(r["constant_features"].sel(model="student", condition="clean", layer="e")) == 4
    student = r["effective_rank"].sel(model="student", condition="clean", layer="e")
    assert (student.drop_sel(estimator="rankme") == 0).all()
    _check_entry(r, "teacher", "e", z)


def test_one_sample_store_refused(tmp_path):
    path = write_store(tmp_path / "one.h5", {("teacher", "clean", "e"): np.ones((1, 3))})
    with pytest.raises(ds.StoreError, match="one.h5:/samples/id: holds 1 sample"):
        ds.analyze(path)
