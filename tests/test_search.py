"""Neighbours through faiss and uniformity on a subsample (``metrics.search``)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

import distillscope as ds
from distillscope import InputError
from distillscope.metrics.neighbours import Samples, similarity_pass, uniformity, unit_rows
from distillscope.metrics.search import (index_cross_neighbours, index_neighbours, recall,
                                         subsample_exp_mean)

faiss = pytest.importorskip("faiss")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_analyze import make_store  # noqa: E402


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The engine's benchmark store (a 768-d teacher, 4 students of 512-d), 1,200 samples."""
    return make_store(tmp_path_factory.mktemp("search") / "bench.h5", 1200, split=True)


def same_sets(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose neighbour sets are identical."""
    return float(np.mean([set(x) == set(y) for x, y in zip(a, b)]))


def test_flat_index_finds_the_exact_passes_neighbour_sets():
    rng = np.random.default_rng(0)
    unit = unit_rows(rng.standard_normal((700, 48)).astype(np.float32), np.float32)
    exact = similarity_pass(unit, knn=10)["knn"]
    found = index_neighbours(unit, 10)
    assert found.shape == (700, 10) and not (found == np.arange(700)[:, None]).any()
    assert same_sets(found, exact) == 1.0  # continuous data: no ties
    assert recall(found, exact) == 1.0
    test, train = np.arange(700) % 4 == 0, np.arange(700) % 4 != 0
    cross = np.flatnonzero(train)[index_cross_neighbours(unit[test], unit[train], 5)]
    assert same_sets(cross, similarity_pass(unit, train_knn=5, split=(train, test))["train"]) == 1


def test_duplicate_rows_keep_k_other_neighbours():
    rows = np.repeat(np.eye(6, dtype=np.float32), 3, axis=0)  # every row thrice
    found = index_neighbours(rows, 4)
    assert found.shape == (18, 4) and not (found == np.arange(18)[:, None]).any()


@pytest.mark.parametrize("kind, at_least", [("faiss-ivf", 0.9), ("faiss-hnsw", 0.9)])
def test_approximate_indexes_report_their_recall(kind, at_least):
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((30, 32))
    rows = centres[rng.integers(0, 30, 4000)] + 0.5 * rng.standard_normal((4000, 32))
    unit = unit_rows(rows.astype(np.float32), np.float32)
    exact = similarity_pass(unit, knn=10)["knn"]
    assert recall(index_neighbours(unit, 10, kind), exact) >= at_least


def test_analyze_through_faiss_equals_the_exact_engine(bench):
    """Mutual kNN and kNN accuracy on the benchmark store: the same neighbour sets (float32
    inner products in another order of summation: ties at rounding level aside)."""
    exact = ds.analyze(bench, metrics="mutual_knn,knn_accuracy")
    fast = ds.analyze(bench, metrics="mutual_knn,knn_accuracy", neighbours="faiss")
    np.testing.assert_allclose(fast["mutual_knn"].values, exact["mutual_knn"].values,
                               rtol=0, atol=2e-4)  # at most two of 12,000 neighbours differ
    np.testing.assert_array_equal(fast["knn_accuracy"].values, exact["knn_accuracy"].values)


def test_uniformity_is_exact_up_to_the_threshold_and_estimated_above(bench, tmp_path):
    exact = ds.analyze(bench, metrics="uniformity", uniformity_samples=None)
    at = ds.analyze(bench, metrics="uniformity", uniformity_samples=1200)
    np.testing.assert_array_equal(at["uniformity"].values, exact["uniformity"].values)
    assert "uniformity_se" not in at
    sub = ds.analyze(bench, metrics="uniformity", uniformity_samples=400)
    se = sub["uniformity_se"]
    assert se.attrs["subsample_size"] == 400 and se.attrs["n_samples"] == 1200
    assert (se.values > 0).all()
    z = (sub["uniformity"] - exact["uniformity"]) / se
    assert float(abs(z).max()) < 4.5  # every estimate within its error of the exact value
    ds.save_results(sub, tmp_path / "sub.nc")
    back = ds.load_results(tmp_path / "sub.nc")
    np.testing.assert_array_equal(back["uniformity_se"].values, se.values)
    assert back["uniformity_se"].attrs["subsample_size"] == 400


def test_the_subsample_estimator_is_unbiased_and_its_standard_error_is_right():
    """Over 400 seeds, the mean of the estimates equals the exact pair mean (within 4 of its
    standard errors) and their spread equals the stated standard error (within 15%)."""
    rng = np.random.default_rng(2)
    unit = unit_rows(rng.standard_normal((300, 6)) * [3, 2, 1, 1, 0.5, 0.2], np.float64)
    exact = math.exp(uniformity(unit))  # mean over the 300 * 299 ordered pairs
    draws = [subsample_exp_mean(unit, 2.0, 60, seed) for seed in range(400)]
    means = np.array([d.mean for d in draws])
    assert abs(means.mean() - exact) < 4 * means.std(ddof=1) / math.sqrt(means.size)
    stated = np.mean([d.standard_error for d in draws])
    assert abs(stated / means.std(ddof=1) - 1) < 0.15


def test_samples_route_the_products_as_configured():
    rng = np.random.default_rng(3)
    values = rng.standard_normal((500, 20)).astype(np.float32)
    plain, routed = Samples(values), Samples(values)
    routed.configure(index="faiss", uniformity_samples=200)
    for s in (plain, routed):
        s.request(knn=10, exp_t=2.0)
    assert same_sets(routed.neighbours(10), plain.neighbours(10)) == 1.0
    estimate = uniformity(routed)
    assert estimate.size == 200 and estimate.standard_error > 0
    assert abs(estimate - uniformity(plain)) < 5 * estimate.standard_error


def test_bad_options_and_a_missing_faiss_are_one_line_errors(bench, monkeypatch):
    with pytest.raises(InputError, match="neighbours must be one of"):
        ds.analyze(bench, neighbours="annoy")
    with pytest.raises(InputError, match="uniformity_samples must be"):
        ds.analyze(bench, uniformity_samples=1)
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(InputError, match="pip install"):
        ds.analyze(bench, metrics="mutual_knn", neighbours="faiss")
