"""Every accumulator merges: random splits of the rows into 1 to 7 ranges, each accumulated on
its own (its own shift, as a separate worker would choose), merged in random order, equal one
pass over all rows to 1e-12; and their state pickles."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import distillscope as ds
from conftest import write_store
from distillscope.engine.executor import Block, accumulators, run
from distillscope.engine.options import AnalysisOptions
from distillscope.engine.plan import build_plan
from distillscope.metrics.frequency import SpectrumAccumulator
from distillscope.metrics.moments import RowPreparer
from distillscope.metrics.pairs import CrossMoments
from distillscope.metrics.robustness import DriftAccumulator

N = 301


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((N, 6))
    noise = 0.3 * rng.standard_normal((N, 6))
    layers = {}
    for c, x in (("clean", z), ("noise", z + noise)):
        layers[("teacher", c, "e")] = (x @ rng.standard_normal((6, 24)) + 2.0).astype(np.float32)
        layers[("student", c, "e")] = (x[:, :4] @ rng.standard_normal((4, 16))).astype(np.float16)
        maps = x[:, :4, None, None] * rng.uniform(0.5, 1.5, (1, 4, 3, 5))
        layers[("student", c, "m")] = maps.astype(np.float32)
    return write_store(tmp_path_factory.mktemp("acc") / "s.h5", layers,
                       conditions=("clean", "noise"), labels=np.arange(N) % 3)


def _splits(rng, n):
    cuts = np.sort(rng.choice(np.arange(1, n), size=rng.integers(0, 7), replace=False))
    return list(zip(np.r_[0, cuts], np.r_[cuts, n]))


def _close(a, b, what):
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = max(np.abs(b).max(initial=0.0), 1e-300)
    assert np.abs(a - b).max(initial=0.0) <= 1e-12 * scale, what


def _ranges_merged(plan, ranges, order):
    """Each range accumulated by its own set of accumulators and preparers, then merged."""
    store = plan.store
    parts = []
    for lo, hi in ranges:
        accs = accumulators(plan)
        readers = {k: store.reader(r.info) for k, r in plan.reps.items()}
        preparers = {k: RowPreparer(r.width, l2_normalize=plan.l2) for k, r in plan.reps.items()}
        block = Block(plan, int(lo), int(hi), readers, preparers)
        for condition in plan.condition_order():
            for table in accs.values():
                for key, acc in table.items():
                    target = key[1][1] if isinstance(key[0], tuple) else key[1]
                    if target == condition:
                        acc.update(block)
        block.release()
        parts.append(pickle.loads(pickle.dumps(accs)))  # state travels, as to a worker
    total = parts[order[0]]
    for i in order[1:]:
        for statistic, table in total.items():
            for key, acc in table.items():
                acc.merge(parts[i][statistic][key])
    return {s: {k: a.finalize() for k, a in t.items()} for s, t in total.items()}


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("convention", ["default", "arxiv_2603_06698"])
def test_engine_accumulators_merge_like_one_pass(store, seed, convention):
    rng = np.random.default_rng(seed)
    with ds.open_store(store) as st:
        plan = build_plan(st, AnalysisOptions(convention=convention, rows=37))
        single = run(plan)
        ranges = _splits(rng, N)
        merged = _ranges_merged(plan, ranges, rng.permutation(len(ranges)))
    for key, m in single["moments"].items():
        got = merged["moments"][key]
        for a, b in [(got.full, m.full)] + list(zip(got.folds or [], m.folds or [])):
            n, mean, m2 = a.centered()
            assert n == b.count
            _close(mean, b.centered()[1], f"mean {key}")
            _close(m2, b.centered()[2], f"scatter {key}")
            if a.norms:  # the debiased CKA's sums, about one shift
                sa, sb = a.sums(), b.sums().shifted(b.shift - a.shift)
                _close([sa.a, sa.aa], [sb.a, sb.aa], f"norm sums {key}")
                _close(sa.w, sb.w, f"weighted sums {key}")
        _close(got.full.eigenvalues(), m.full.eigenvalues(), f"spectrum {key}")
    from distillscope.engine.finalize import pair_statistics

    for pair in single["pair"]:
        a, folds_a = pair_statistics(merged, pair)
        b, folds_b = pair_statistics(single, pair)
        _close(a.blocks()[2], b.blocks()[2], f"cross {pair}")
        _close(a.hsic_unbiased(), b.hsic_unbiased(), f"unbiased HSIC {pair}")
        for fa, fb in zip(folds_a or [], folds_b or []):
            _close(fa.blocks()[2], fb.blocks()[2], f"fold cross {pair}")
    for key, spatial in single["maps"].items():
        _close(merged["maps"][key].mean_power(), spatial.mean_power(), f"power {key}")
    for pair, drift in single["drift"].items():
        got = merged["drift"][pair]
        assert got.count == drift.count and got.zero_norm == drift.zero_norm
        _close([got.mean, got.std], [drift.mean, drift.std], f"drift {pair}")
    for key, samples in single["samples"].items():
        np.testing.assert_array_equal(merged["samples"][key].values, samples.values)


@pytest.mark.parametrize("seed", range(10))
def test_array_layer_accumulators_merge_like_one_pass(seed):
    rng = np.random.default_rng(seed)
    n = 200
    x = rng.standard_normal((n, 7)) * rng.uniform(0.1, 5, 7) + rng.uniform(-50, 50, 7)
    y = x[:, :3] @ rng.standard_normal((3, 5)) + rng.standard_normal((n, 5)) - 30
    maps = rng.standard_normal((n, 2, 4, 6))
    ranges = _splits(rng, n)
    order = rng.permutation(len(ranges))

    def each(make, update):
        parts = [update(make(), lo, hi) for lo, hi in ranges]
        parts = [pickle.loads(pickle.dumps(p)) for p in parts]
        total = parts[order[0]]
        for i in order[1:]:
            total.merge(parts[i])
        return total, update(make(), 0, n)

    for l2 in (False, True):
        got, one = each(lambda: ds.SecondMoments(7, l2_normalize=l2, norms=True),
                        lambda m, lo, hi: m.update(x[lo:hi]))
        _close(got.scatter(), one.scatter(), "scatter")
        _close(got.mean, one.mean, "mean")
        sa, sb = got.sums(), one.sums().shifted(one.shift - got.shift)
        _close([sa.a, sa.aa], [sb.a, sb.aa], "norm sums")
        _close(sa.w, sb.w, "weighted sums")
    got, one = each(lambda: ds.PairMoments(7, 5), lambda m, lo, hi: m.update(x[lo:hi], y[lo:hi]))
    _close(got.blocks()[2], one.blocks()[2], "pair cross")
    _close(got.hsic_unbiased(), one.hsic_unbiased(), "pair unbiased HSIC")
    got, one = each(lambda: SpectrumAccumulator((4, 6), log_amplitude=True),
                    lambda m, lo, hi: m.update(maps[lo:hi]))
    _close(got.mean_power(), one.mean_power(), "spatial power")
    _close(got.mean_log_amplitude(), one.mean_log_amplitude(), "log amplitude")
    got, one = each(DriftAccumulator, lambda m, lo, hi: m.update(x[lo:hi], x[lo:hi] + y[lo:hi, :1]))
    _close([got.mean, got.std], [one.mean, one.std], "drift")


def test_cross_moments_reshift_exactly():
    """CrossMoments re-expressed about other shifts equal those accumulated about them."""
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((50, 4)) + 3, rng.standard_normal((50, 3)) - 2
    a, b = RowPreparer(4), RowPreparer(3)
    c1 = CrossMoments(4, 3).add_prepared(a.prepare(x), b.prepare(y), (a.shift, b.shift))
    a2, b2 = RowPreparer(4, shift=np.zeros(4)), RowPreparer(3, shift=np.ones(3))
    c2 = CrossMoments(4, 3).add_prepared(a2.prepare(x), b2.prepare(y), (a2.shift, b2.shift))
    moved = c1.shifted(a.shift - a2.shift, b.shift - b2.shift)
    for name in ("sx", "sy", "cxy", "u", "v", "a", "b", "ab"):
        _close(getattr(moved, name), getattr(c2, name), name)
