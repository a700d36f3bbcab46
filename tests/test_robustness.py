"""Robustness from features: drift, clean-vs-noisy CKA, probes, kNN, frequency response."""

import numpy as np
import pytest

import distillscope as ds
from distillscope.metrics import robustness as rb
from distillscope.metrics.frequency import band_mask

from reference_alignment import linear_cka as linear_cka_gram


def drift_loop(clean, noisy):
    ratios = [np.linalg.norm(b - a) / np.linalg.norm(a) for a, b in zip(clean, noisy)
              if np.linalg.norm(a) > 0]
    return float(np.mean(ratios))


def test_relative_drift_against_a_loop_and_merging():
    rng = np.random.default_rng(0)
    clean = rng.standard_normal((50, 7))
    noisy = clean + 0.3 * rng.standard_normal((50, 7))
    clean[3] = 0  # left out and counted
    assert rb.relative_drift(clean, noisy) == pytest.approx(drift_loop(clean, noisy), rel=1e-12)
    whole = rb.DriftAccumulator().update(clean, noisy)
    parts = rb.DriftAccumulator().update(clean[:20], noisy[:20]).merge(
        rb.DriftAccumulator().update(clean[20:], noisy[20:]))
    assert parts.mean == pytest.approx(whole.mean, rel=1e-12)
    assert parts.std == pytest.approx(whole.std, rel=1e-10) and whole.zero_norm == 1
    # invariances: scaling both sides, rotating both sides; not translating
    q, _ = np.linalg.qr(rng.standard_normal((7, 7)))
    assert rb.relative_drift(3 * clean @ q, 3 * noisy @ q) == pytest.approx(whole.mean, rel=1e-10)
    assert rb.relative_drift(clean + 5, noisy + 5) != pytest.approx(whole.mean, rel=1e-3)


def labelled_data(n=300, d=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)) * 2
    y = rng.integers(0, classes, n)
    return centres[y] + rng.standard_normal((n, d)), y


def test_probe_accuracy_equals_scikit_learn_run_directly():
    from sklearn.linear_model import LogisticRegression

    x, y = labelled_data()
    noisy = x + np.random.default_rng(1).standard_normal(x.shape) * 2
    acc, info = rb.probe_accuracy(x[:200], y[:200], {"clean": (x[200:], y[200:]),
                                                     "noisy": (noisy[200:], y[200:])})
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    probe = LogisticRegression(solver="lbfgs", C=1.0, max_iter=2000).fit(unit(x[:200]), y[:200])
    assert acc["clean"] == np.mean(probe.predict(unit(x[200:])) == y[200:])
    assert acc["noisy"] == np.mean(probe.predict(unit(noisy[200:])) == y[200:])
    assert acc["clean"] > acc["noisy"] and info["converged"]


def test_knn_accuracy_against_a_slow_vote():
    x, y = labelled_data(n=160)
    train, test = slice(0, 100), slice(100, 160)
    acc = rb.knn_accuracy(x[train], y[train], [(x[test], y[test])], k=5)[0]
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    correct = 0
    for i in range(100, 160):
        nearest = np.argsort(-(unit[train] @ unit[i]), kind="stable")[:5]
        votes = np.bincount(y[train][nearest], minlength=4)
        correct += int(np.argmax(votes) == y[i])  # argmax: ties to the smallest label
    assert acc == correct / 60


def test_frequency_response_normalises_away_the_scale():
    assert rb.frequency_response([0.3, 0.2, 0.1]) == pytest.approx([1.5, 1.0, 0.5])
    assert rb.frequency_response({"a": 3.0, "b": 2.0, "c": 1.0}) == pytest.approx([1.5, 1.0, 0.5])
    assert rb.frequency_response([0.03, 0.02, 0.01]) == pytest.approx([1.5, 1.0, 0.5])


# ----------------------------------------------------------------------------- through analyze
def blur(images, sigma=1.5):
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(im, sigma, mode="wrap") for im in images])


def band_noise(rng, shape, band, sigma):
    mask = band_mask(shape[-2], shape[-1], band)
    white = rng.standard_normal(shape)
    filtered = np.fft.ifft2(np.fft.fft2(white) * mask).real
    return sigma * filtered / np.sqrt(mask.mean())


def filter_store(path, n=120, size=16):
    """Two synthetic 'models' over random images and band-limited noise: a known low-pass
    filter (a Gaussian blur) and its complement, a high-pass filter (image minus blur)."""
    rng = np.random.default_rng(0)
    images = rng.random((n, size, size))
    conditions = {"clean": images}
    for band in ("low", "mid", "high"):
        conditions[f"band_{band}"] = images + band_noise(rng, images.shape, band, 0.2)
    models = {"lowpass": lambda x: blur(x).reshape(len(x), -1),
              "highpass": lambda x: (x - blur(x)).reshape(len(x), -1)}
    with ds.StoreWriter(path, sample_ids=np.arange(n), labels=rng.integers(0, 3, n),
                        splits=np.where(np.arange(n) < 80, "train", "test")) as w:
        w.add_condition("clean", "clean")
        for band in ("low", "mid", "high"):
            w.add_condition(f"band_{band}", "band_noise", band=band, sigma=0.2)
        w.add_model("lowpass", role="teacher", architecture="gaussian blur")
        w.add_model("highpass", role="student", architecture="identity - blur")
        for name, fn in models.items():
            for condition, x in conditions.items():
                w.write_layer(name, condition, "embedding", fn(x).astype(np.float32))
    return path


def test_a_low_pass_filter_comes_out_low_pass(tmp_path):
    res = ds.analyze(filter_store(tmp_path / "f.h5"), alignment=False)
    low = res["frequency_response"].sel(model="lowpass", layer="embedding").values
    high = res["frequency_response"].sel(model="highpass", layer="embedding").values
    assert low[0] > low[1] > low[2] and low[2] < 0.3
    assert high[0] < high[1] < high[2]
    assert list(res["band_condition"].values) == ["band_low", "band_mid", "band_high"]
    assert np.allclose(res["frequency_response"].mean("band"), 1.0)


def test_robustness_variables_against_in_memory_references(tmp_path):
    from sklearn.linear_model import LogisticRegression

    path = filter_store(tmp_path / "f.h5")
    res = ds.analyze(path, alignment=False, rows=17)  # streamed in blocks of 17 samples
    with ds.open_store(path) as st:
        train, test = st.splits == "train", st.splits == "test"
        for model in ("lowpass", "highpass"):
            clean = st.read(st.layers(model, "clean")["embedding"]).astype(np.float64)
            unit = clean / np.linalg.norm(clean, axis=1, keepdims=True)
            probe = LogisticRegression(max_iter=2000).fit(unit[train], st.labels[train])
            for condition in st.conditions:
                x = st.read(st.layers(model, condition)["embedding"]).astype(np.float64)
                cell = res.sel(model=model, condition=condition, layer="embedding")
                assert float(cell["feature_drift"]) == pytest.approx(drift_loop(clean, x), rel=1e-9, abs=1e-12)
                ux = x / np.linalg.norm(x, axis=1, keepdims=True)
                # the default convention does not L2-normalise for CKA; the probe always does
                assert float(cell["cka_clean_noisy"]) == pytest.approx(linear_cka_gram(clean, x), rel=1e-8)
                expected = np.mean(probe.predict(ux[test]) == st.labels[test])
                assert float(cell["probe_accuracy"]) == expected
                change = (cell["effective_rank"].sel(estimator="erank_variance")
                          - res["effective_rank"].sel(model=model, condition="clean", layer="embedding",
                                                      estimator="erank_variance"))
                assert float(cell["effective_rank_change"]) == pytest.approx(float(change))
    assert res.attrs["reference_condition"] == "clean"
    assert res["feature_drift"].attrs["definition"]


def test_seed_means_and_spreads(tmp_path):
    from conftest import write_store

    rng = np.random.default_rng(0)
    n = 90
    base = rng.standard_normal((n, 6))
    layers = {("teacher", "clean", "embedding"): base.astype(np.float32),
              ("teacher", "noisy", "embedding"): (base + 0.1).astype(np.float32)}
    for seed, scale in enumerate((0.1, 0.3, 0.5)):
        x = base @ rng.standard_normal((6, 6))
        layers[(f"s{seed}", "clean", "embedding")] = x.astype(np.float32)
        layers[(f"s{seed}", "noisy", "embedding")] = (x + scale * rng.standard_normal(x.shape)).astype(np.float32)
    models = {f"s{s}": {"family": "S", "seed": s} for s in range(3)}
    path = write_store(tmp_path / "s.h5", layers, conditions=("clean", "noisy"), models=models)
    res = ds.analyze(path, alignment=False)
    drift = res["feature_drift"].sel(condition="noisy", layer="embedding")
    members = drift.sel(model=["s0", "s1", "s2"]).values
    agg = res.sel(family="S", condition="noisy", layer="embedding")
    assert float(agg["feature_drift_seed_mean"]) == pytest.approx(members.mean())
    assert float(agg["feature_drift_seed_std"]) == pytest.approx(members.std(ddof=1))
    paper = ds.analyze(path, alignment=False, convention="arxiv_2603_06698")  # np.std, ddof 0
    drift = paper["feature_drift"].sel(condition="noisy", layer="embedding")
    members = drift.sel(model=["s0", "s1", "s2"]).values
    spread = paper["feature_drift_seed_std"].sel(family="S", condition="noisy", layer="embedding")
    assert float(spread) == pytest.approx(members.std(ddof=0))
    assert "probe_accuracy" in res and np.isnan(res["probe_accuracy"]).all()  # no labels here
    assert "not fitted" in res.attrs["probe"]


def test_robustness_can_be_switched_off_and_needs_a_clean_condition(tmp_path, small_store):
    assert "feature_drift" not in ds.analyze(small_store, robustness=False, alignment=False)
    res = ds.analyze(small_store, alignment=False)
    assert float(res["feature_drift"].sel(model="teacher", condition="clean", layer="embedding")) == 0
