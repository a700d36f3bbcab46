"""The engine: one pass over the store, the plan, metric selection, the derived split."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

import distillscope as ds
from conftest import write_store
from distillscope.cli import main


@pytest.fixture(scope="module")
def multi_store(tmp_path_factory):
    """A teacher and 4 students over 3 conditions, float16, with maps: every metric family."""
    rng = np.random.default_rng(3)
    n = 900
    z = rng.standard_normal((n, 12))
    layers = {}
    conditions = ("clean", "noise_1", "noise_2")
    for j, c in enumerate(conditions):
        x = z + 0.2 * j * rng.standard_normal(z.shape)
        layers[("teacher", c, "embedding")] = (x @ rng.standard_normal((12, 48))).astype(np.float16)
        for s in range(4):
            keep = 4 + 2 * s
            emb = x[:, :keep] @ rng.standard_normal((keep, 32)) + 0.1 * rng.standard_normal((n, 32))
            layers[(f"student_{s}", c, "embedding")] = emb.astype(np.float16)
            maps = x[:, :3, None, None] * rng.uniform(0.5, 1.5, (1, 3, 4, 4))
            layers[(f"student_{s}", c, "conv")] = maps.astype(np.float16)
    models = {f"student_{s}": {"family": f"f{s // 2}", "seed": s % 2} for s in range(4)}
    return write_store(tmp_path_factory.mktemp("engine") / "multi.h5", layers, conditions=conditions,
                       labels=np.argmax(z[:, :3], axis=1), models=models)


def test_every_dataset_is_read_once_per_run(multi_store):
    with ds.open_store(multi_store) as st:
        results = ds.analyze(st, rows=128)  # blocks that do not line up with the chunks
        expected = {info.path: st.n_samples for info in st.entries()}
        assert st.rows_read == expected  # every row of every dataset, once
    assert "linear_cka" in results and "probe_accuracy" in results and "band_fraction" in results


def test_one_pass_reads_about_the_store_bytes(multi_store):
    """rchar (bytes the process read) over a full analyze: at most 1.1x the store's size."""
    code = textwrap.dedent(f"""
        import warnings, distillscope as ds
        warnings.simplefilter("ignore")
        ds.analyze({str(multi_store)!r})  # load every kernel it runs first
        def rchar():
            return int(open('/proc/self/io').read().split('rchar:')[1].split()[0])
        before = rchar()
        ds.analyze({str(multi_store)!r})
        print(rchar() - before)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    read = int(out.stdout.split()[-1])
    assert read <= 1.1 * multi_store.stat().st_size, (read, multi_store.stat().st_size)


def test_the_plan_says_what_is_read_and_held(multi_store, capsys):
    plan = ds.analyze(multi_store, dry_run=True)
    text = plan.describe()
    assert "read once: 27 datasets" in text and "MiB" in text and "memory (MiB)" in text
    assert "teacher-student pairs: 24" in text and "clean-vs-condition pairs: 18" in text
    assert plan.bytes_read() > 0 and sum(plan.memory().values()) > 0
    assert main(["analyze", str(multi_store), "--plan", "--metrics", "linear_cka"]) == 0
    out = capsys.readouterr().out
    assert "metrics: linear_cka," in out and "plan for" in out


def test_metrics_select_any_registered_metric(multi_store, tmp_path, capsys):
    only = ds.analyze(multi_store, metrics=["linear_cka", "rbf_cka"], models=["teacher", "student_0"])
    assert "rbf_cka" in only and "linear_cka" in only and "svcca" not in only
    assert "effective_rank" not in only and "available" in only  # descriptors always
    assert float(only["rbf_cka"].sel(student="student_0", condition="clean",
                                     teacher_layer="embedding", student_layer="embedding")) > 0.3
    out = tmp_path / "r.nc"
    assert main(["analyze", str(multi_store), "-o", str(out), "-q", "--metrics", "default,rbf_cka",
                 "--models", "teacher", "student_1"]) == 0
    saved = ds.load_results(out)
    assert "rbf_cka" in saved and "effective_rank" in saved and "linear_cka" in saved
    assert saved["rbf_cka"].attrs["source"].startswith("Kornblith")
    capsys.readouterr()
    assert main(["analyze", str(multi_store), "-o", str(tmp_path / "x.nc"), "--metrics",
                 "nope"]) == 2  # invalid input
    err = capsys.readouterr().err
    assert "metric 'nope' is not registered; registered: " in err and len(err.splitlines()) == 1


def test_labels_without_split_get_a_derived_stratified_split(multi_store, tmp_path, capsys):
    import h5py

    path = tmp_path / "nosplit.h5"
    path.write_bytes(multi_store.read_bytes())
    with h5py.File(path, "r+") as f:
        assert "split" not in f["samples"]  # conftest's stores have labels only
    with pytest.warns(ds.AnalysisNote, match="labels but no /samples/split"):
        r = ds.analyze(path, metrics=["probe_accuracy", "knn_accuracy"])
    assert np.isfinite(r["probe_accuracy"].sel(layer="embedding")).all()
    assert r["knn_accuracy"].sel(model="teacher", condition="clean", layer="embedding") > 0.5
    assert r.attrs["sample_split"].startswith("derived: stratified by label, 25% test")
    assert main(["analyze", str(path), "-o", str(tmp_path / "r.nc"), "-q"]) == 0
    assert "note: the store has labels but no /samples/split" in capsys.readouterr().err


def test_the_derived_split_depends_on_the_ids_only():
    from distillscope.engine.plan import derived_split

    rng = np.random.default_rng(0)
    ids = rng.permutation(10_000)[:997] + 12
    labels = rng.integers(0, 7, ids.size)
    split = derived_split(ids, labels)
    assert not (split.train & split.test).any() and (split.train | split.test).all()
    for c in range(7):  # stratified: a quarter of each class
        members = labels == c
        assert abs(split.test[members].sum() - 0.25 * members.sum()) <= 1
    order = rng.permutation(ids.size)  # the same ids in another order: the same samples test
    again = derived_split(ids[order], labels[order])
    assert set(ids[order][again.test]) == set(ids[split.test])


def test_results_equal_through_the_api_and_the_options_object(multi_store):
    a = ds.analyze(multi_store, convention="arxiv_2603_06698", models=["teacher", "student_2"])
    b = ds.analyze(multi_store, ds.AnalysisOptions(convention="arxiv_2603_06698",
                                                   models=("teacher", "student_2")))
    xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
    with pytest.raises(ds.InputError, match="unexpected option 'convetion'"):
        ds.analyze(multi_store, convetion="default")
