"""The interval machinery (``distillscope.stats``) and the engine's group bootstrap.

Closed forms: the Student-t interval against scipy, percentile and BCa intervals of known
distributions, and through the engine's own path the interval of a mean (the relative drift
of a store built so each sample's drift is a known draw) against mean +- 1.96 s / sqrt(n).
Invariances: intervals do not depend on the block size, nor on the store being accumulated in
two shards and merged (groups and replicates are seeded by sample id). A replicate equals the
metric recomputed from the rows themselves, each group's rows repeated as often as drawn.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import stats as sps

import distillscope as ds
from distillscope import stats
from distillscope.engine.bootstrap import resample
from distillscope.engine.executor import Block, accumulators, run
from distillscope.engine.finalize import compute_values
from distillscope.engine.options import AnalysisOptions
from distillscope.engine.plan import build_plan
from distillscope.metrics.dimensionality import erank_variance
from distillscope.metrics.moments import RowPreparer


def test_t_interval_is_scipys():
    x = np.array([15.91, 16.62, 16.66, 16.2])
    got = stats.t_interval(x, 0.9)
    low, high = sps.t.interval(0.9, x.size - 1, loc=x.mean(), scale=sps.sem(x))
    np.testing.assert_allclose([got["low"], got["high"]], [low, high], rtol=1e-12)
    assert np.isnan(stats.t_interval(x[:1])["low"])


def test_percentile_and_bca_of_known_distributions():
    rng = np.random.default_rng(0)
    reps = rng.standard_normal((400_000, 2)) * [1.0, 3.0] + [0.0, 10.0]
    lo, hi = stats.percentile_interval(reps, 0.95)
    np.testing.assert_allclose(lo, [-1.96, 10 - 3 * 1.96], atol=0.02)
    np.testing.assert_allclose(hi, [1.96, 10 + 3 * 1.96], atol=0.02)
    # BCa with z0 = 0 and a = 0 (symmetric jackknife) is the percentile interval
    jack = np.array([[-1.0, 9.0], [1.0, 11.0]])
    np.testing.assert_allclose(stats.bca_interval(np.median(reps, 0), reps, jack),
                               [lo, hi], atol=0.02)
    # replicates shifted by b below the estimate: BCa moves the interval up by b (a = 0)
    b = 0.5
    got = stats.bca_interval(b, reps[:, 0], jack[:, 0])
    np.testing.assert_allclose(got, [b + b - 1.96, b + b + 1.96], atol=0.03)


def test_group_weights_depend_on_ids_and_seed_only():
    ids = np.arange(1000)
    g = stats.sample_groups(ids, 16, seed=3)
    perm = np.random.default_rng(1).permutation(1000)
    np.testing.assert_array_equal(stats.sample_groups(ids[perm], 16, seed=3), g[perm])
    assert not np.array_equal(stats.sample_groups(ids, 16, seed=4), g)
    assert 40 < np.bincount(g).min() and np.bincount(g).max() < 90
    w = stats.replicate_weights(50, 16, seed=3)
    assert w.shape == (50, 16) and (w.sum(axis=1) == 16).all()
    np.testing.assert_array_equal(w, stats.replicate_weights(50, 16, seed=3))
    with pytest.raises(ds.InputError, match="groups"):
        stats.sample_groups(ids, 1)


def _store(path, n=600, seed=0, drift=None):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, 8)) * np.arange(8, 0, -1)
    t = z @ rng.standard_normal((8, 24))
    s = z[:, :5] @ rng.standard_normal((5, 12)) + 0.3 * rng.standard_normal((n, 12))
    noisy = t * (1 + drift[:, None]) if drift is not None else t + rng.standard_normal(t.shape)
    with ds.StoreWriter(path, sample_ids=np.arange(n) * 7 + 3, overwrite=True) as w:
        w.add_condition("clean", kind="clean")
        w.add_condition("noise", kind="gaussian_noise", space="normalized", sigma=0.1)
        w.add_model("teacher", role="teacher", architecture="t", n_params=10)
        w.add_model("student", role="student", architecture="s", n_params=5)
        w.write_layer("teacher", "clean", "e", t)
        w.write_layer("teacher", "noise", "e", noisy)
        w.write_layer("student", "clean", "e", s)
        w.write_layer("student", "noise", "e", s + 0.2 * rng.standard_normal(s.shape))
    return path


def test_mean_through_the_engine_has_the_textbook_interval(tmp_path):
    """Each sample's drift is |r_i| with r_i ~ Exp(mean 0.5): feature_drift is their mean."""
    n = 4000
    r = np.random.default_rng(7).exponential(0.5, n)
    path = _store(tmp_path / "drift.h5", n=n, drift=r)
    res = ds.analyze(path, metrics="feature_drift", bootstrap=1000, bootstrap_groups=200,
                     interval="percentile")
    est = float(res.feature_drift.sel(model="teacher", condition="noise").squeeze())
    lo, hi = res.feature_drift_ci.sel(model="teacher", condition="noise").values.ravel()
    np.testing.assert_allclose(est, r.mean(), rtol=1e-6)
    half = 1.96 * r.std(ddof=1) / np.sqrt(n)
    assert abs((hi - lo) / 2 - half) < 0.12 * half  # B = 1000, G = 200: a few percent off
    assert abs((hi + lo) / 2 - est) < 0.15 * half
    assert lo < 0.5 < hi


def test_replicate_equals_rows_repeated(tmp_path):
    path = _store(tmp_path / "s.h5")
    with ds.open_store(path) as st:
        plan = build_plan(st, AnalysisOptions(metrics="erank_variance,linear_cka",
                                              bootstrap=3, bootstrap_groups=5))
        statistics = run(plan)
        key = ("teacher", "clean", "e")
        x = st.read(st.layers("teacher", "clean")["e"]).astype(np.float64)
        groups = stats.sample_groups(st.sample_ids, 5)
    weights = stats.replicate_weights(3, 5)
    for w, moments in zip(weights, statistics["group_moments"][key].replicates(weights)):
        rows = np.concatenate([x[groups == g] for g in range(5) for _ in range(int(w[g]))])
        ref = erank_variance(np.linalg.eigvalsh(np.cov(rows, rowvar=False))[::-1])
        np.testing.assert_allclose(erank_variance(moments.eigenvalues()), ref, rtol=1e-5)


def _intervals(results):
    return {v: results[v].values for v in results.data_vars if v.endswith("_ci")}


def test_intervals_do_not_depend_on_blocks(tmp_path):
    path = _store(tmp_path / "s.h5")
    a = _intervals(ds.analyze(path, bootstrap=30, rows=37))
    b = _intervals(ds.analyze(path, bootstrap=30))
    assert {"effective_rank_ci", "linear_cka_ci", "collapse_ratio_ci", "feature_drift_ci",
            "cka_clean_noisy_ci", "spectrum_ci"} <= set(a)
    for name in a:  # spectra from float64 sums; CKA from float32 cross sums
        rtol = 2e-5 if "cka" in name else 1e-9
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=1e-12, err_msg=name)


def test_two_shards_merged_give_the_same_intervals(tmp_path):
    path = _store(tmp_path / "s.h5")
    options = AnalysisOptions(bootstrap=30, rows=64, interval="bca")  # replicates and jackknife
    with ds.open_store(path) as st:
        plan = build_plan(st, options)
        single = run(plan)
        parts = []
        for lo, hi in ((0, 250), (250, st.n_samples)):  # each shard its own shifts
            accs = accumulators(plan)
            readers = {k: st.reader(r.info) for k, r in plan.reps.items()}
            preparers = {k: RowPreparer(r.width, l2_normalize=plan.l2)
                         for k, r in plan.reps.items()}
            block = Block(plan, lo, hi, readers, preparers)
            for condition in plan.condition_order():
                for table in accs.values():
                    for k, acc in table.items():
                        if (k[1][1] if isinstance(k[0], tuple) else k[1]) == condition:
                            acc.update(block)
            block.release()
            parts.append(pickle.loads(pickle.dumps(accs)))
        for statistic, table in parts[1].items():
            for k, acc in table.items():
                parts[0][statistic][k].merge(acc)
        merged = {s: {k: a.finalize() for k, a in t.items()} for s, t in parts[0].items()}
        found = []
        for statistics in (single, merged):
            values = compute_values(plan, statistics)
            resample(plan, statistics, values)
            found.append(values.intervals)
    assert set(found[0]) == set(found[1]) and found[0]
    for name, entries in found[0].items():
        for index, ci in entries.items():
            np.testing.assert_allclose(found[1][name][index], ci, rtol=2e-5, atol=1e-9,
                                       err_msg=f"{name} {index}")


def test_results_carry_intervals_and_say_how(tmp_path):
    path = _store(tmp_path / "s.h5")
    res = ds.analyze(path, bootstrap=20, interval="percentile", confidence=0.9)
    ci = res["effective_rank_ci"]
    assert ci.dims[-1] == "bound" and list(res.bound.values) == ["low", "high"]
    assert ci.attrs["replicates"] == 20 and ci.attrs["confidence"] == 0.9
    assert "percentile" in ci.attrs["method"] and ci.attrs["units"] == "dimensions"
    er = res.effective_rank.sel(estimator="participation_ratio")
    lo, hi = (ci.sel(estimator="participation_ratio", bound=b) for b in ("low", "high"))
    assert bool(((lo <= er * 1.05) & (er * 0.95 <= hi)).all())
    ratio = res.collapse_ratio.squeeze()
    rank = res.effective_rank.sel(estimator="erank_variance", layer="e")
    np.testing.assert_allclose(float(ratio.sel(condition="clean")),
                               float(rank.sel(model="student", condition="clean")
                                     / rank.sel(model="teacher", condition="clean")))
    assert "effective_rank_ci" not in ds.analyze(path)
    out = tmp_path / "r.nc"
    ds.save_results(res, out)
    back = ds.load_results(out)
    np.testing.assert_array_equal(back.effective_rank_ci.values, ci.values)


@pytest.mark.parametrize("bad", [dict(bootstrap=-1), dict(bootstrap_groups=1),
                                 dict(confidence=1.5), dict(interval="normal")])
def test_bad_options_name_the_parameter(bad):
    with pytest.raises(ds.InputError, match=next(iter(bad))):
        AnalysisOptions(**bad)


def test_probe_accuracy_resamples_the_test_samples(tmp_path):
    from distillscope.demo import make_demo_store

    path = make_demo_store(tmp_path / "demo.h5", n_samples=400)
    res = ds.analyze(path, metrics="probe_accuracy,knn_accuracy", bootstrap=400,
                     interval="percentile")
    acc = res.probe_accuracy.sel(layer="embedding")
    ci = res.probe_accuracy_ci.sel(layer="embedding")
    assert bool(((ci.sel(bound="low") <= acc) & (acc <= ci.sel(bound="high"))).all())
    with ds.open_store(path) as st:
        plan = build_plan(st, AnalysisOptions())
        n_test = int(plan.split.test.sum())
    # the binomial standard error of a proportion, the interval about 2 x 1.96 of it wide
    width = (ci.sel(bound="high") - ci.sel(bound="low")).values
    expected = 2 * 1.96 * np.sqrt(acc.values * (1 - acc.values) / n_test)
    np.testing.assert_allclose(width, expected, rtol=0.35)
    assert np.isfinite(res.knn_accuracy_ci.values).any()


def test_paired_difference_is_narrower_than_two_intervals():
    rng = np.random.default_rng(3)
    common = rng.standard_normal(2000)
    a = (10.0, 10 + common + 0.1 * rng.standard_normal(2000))
    b = (4.0, 4 + common + 0.1 * rng.standard_normal(2000))
    est, (lo, hi) = stats.paired(a, b)
    assert est == 6.0 and lo < 6 < hi and hi - lo < 0.6  # the common part cancels
    lo_a, hi_a = stats.percentile_interval(a[1])
    assert hi_a - lo_a > 3.5
    est, (lo, hi) = stats.paired(a, b, op="ratio")
    assert est == 2.5 and lo < 2.5 < hi


def test_jackknife_interval_of_a_mean_is_the_t_interval():
    """One sample per group: the pseudo-values of a mean are the samples themselves."""
    x = np.random.default_rng(5).exponential(2.0, 40)
    jack = np.array([np.delete(x, i).mean() for i in range(x.size)])
    lo, hi = stats.jackknife_interval(x.mean(), jack, 0.95)
    ref = sps.t.interval(0.95, x.size - 1, loc=x.mean(), scale=sps.sem(x))
    np.testing.assert_allclose([lo, hi], ref, rtol=1e-12)


def test_the_default_interval_is_the_jackknife_and_draws_no_replicate(tmp_path):
    path = _store(tmp_path / "s.h5")
    res = ds.analyze(path, bootstrap=200)
    ci = res.effective_rank_ci
    assert "jackknife" in ci.attrs["method"] and ci.attrs["replicates"] == 0
    er = res.effective_rank.sel(estimator="erank_variance")
    lo, hi = (ci.sel(estimator="erank_variance", bound=b) for b in ("low", "high"))
    assert bool(((lo < er + 1) & (er - 1 < hi) & (lo < hi)).all())


def test_requested_metrics_are_the_jackknife_of_their_rows(tmp_path):
    """``resample="all"``: the CCA family, Procrustes and the cross-validated predictivity
    and retention get the jackknife interval of their own functions recomputed from the rows
    with each group deleted; the groups nest in the 5 contiguous folds (2 per fold)."""
    from distillscope.metrics.alignment import cca, procrustes_angular, svcca
    from distillscope.metrics.pairs import fold_bounds, pair_moments
    from distillscope.metrics.predictivity import CrossValidation

    path = _store(tmp_path / "s.h5", n=400)
    names = "cca_mean,svcca,procrustes_angular,linear_predictivity,retention"
    res = ds.analyze(path, metrics=names, bootstrap=1, bootstrap_groups=10, resample="all")
    with ds.open_store(path) as st:
        t, s = (st.read(st.layers(m, "clean")["e"]).astype(np.float64)
                for m in ("teacher", "student"))
        ids = st.sample_ids
    bounds = fold_bounds(len(ids), 5)
    fold = np.searchsorted(bounds, np.arange(len(ids)), side="right") - 1
    group = fold * 2 + stats.sample_groups(ids, 2)
    assert res.retention_ci.attrs["groups"] == 10 and "nested" in res.retention_ci.attrs[
        "resampled"]

    def by_rows(keep):
        folds = CrossValidation(pair_moments(t[keep & (fold == f)], s[keep & (fold == f)])
                                for f in range(5))
        predictivity, retention = folds.fit()
        return {"cca_mean": cca(t[keep], s[keep]).mean(), "svcca": svcca(t[keep], s[keep]),
                "procrustes_angular": procrustes_angular(t[keep], s[keep]),
                "linear_predictivity": predictivity, "retention": retention[:8]}

    everything = by_rows(np.ones(len(ids), bool))
    deleted = [by_rows(group != g) for g in range(10)]
    for name, estimate in everything.items():
        found = res[name].sel(condition="clean").squeeze().values
        ci = res[f"{name}_ci"].sel(condition="clean").squeeze().values
        if name == "retention":  # the teacher's rank is 8: the other directions are noise
            found, ci = found[:8], ci[:8]
        np.testing.assert_allclose(found, estimate, rtol=1e-9, err_msg=name)
        expected = stats.jackknife_interval(estimate, np.array([d[name] for d in deleted]))
        # float32 cross sums, pseudo-values G times the replicates: 1e-5
        np.testing.assert_allclose(np.moveaxis(ci, -1, 0), expected, rtol=2e-5, atol=1e-5,
                                   err_msg=name)


def test_requested_metrics_only_when_asked(tmp_path):
    path = _store(tmp_path / "s.h5", n=300)
    res = ds.analyze(path, bootstrap=1)
    assert "linear_cka_ci" in res and "cca_mean_ci" not in res and "retention_ci" not in res
    with pytest.raises(ds.InputError, match="bootstrap_groups must be a multiple of the 5"):
        ds.analyze(path, bootstrap=1, bootstrap_groups=16, resample="all")
    with pytest.raises(ds.InputError, match="resample"):
        AnalysisOptions(resample="everything")


def test_student_rank_difference_is_paired_and_antisymmetric(tmp_path):
    from distillscope.demo import make_demo_store

    path = make_demo_store(tmp_path / "demo.h5", n_samples=300)
    res = ds.analyze(path, metrics="erank_variance,student_rank_difference", bootstrap=1,
                     bootstrap_groups=16)
    diff = res.student_rank_difference.sel(layer="embedding", condition="clean")
    rank = res.effective_rank.sel(estimator="erank_variance", layer="embedding",
                                  condition="clean")
    students = list(res.student.values)
    assert len(students) > 1 and list(res.versus.values) == students
    a, b = students[:2]
    np.testing.assert_allclose(float(diff.sel(student=a, versus=b)),
                               float(rank.sel(model=a) - rank.sel(model=b)), rtol=1e-12)
    np.testing.assert_array_equal(diff.values, -diff.values.T)  # NaN on the diagonal
    ci = res.student_rank_difference_ci.sel(layer="embedding", condition="clean")
    np.testing.assert_allclose(ci.sel(student=a, versus=b).values,
                               -ci.sel(student=b, versus=a).values[::-1], rtol=1e-9)
    # paired: narrower than the two students' own intervals combined
    own = res.effective_rank_ci.sel(estimator="erank_variance", layer="embedding",
                                    condition="clean")
    half = [float(own.sel(model=m, bound="high") - own.sel(model=m, bound="low")) / 2
            for m in (a, b)]
    width = float(ci.sel(student=a, versus=b, bound="high") - ci.sel(student=a, versus=b,
                                                                     bound="low")) / 2
    assert width < np.hypot(*half)
