"""Several conventions in one pass: each equals its own analysis, and the store is read once."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import distillscope as ds
from distillscope.demo import make_demo_store
from distillscope.results import convention_names, load_results, one_convention, save_results


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Teacher with tokens, three families of two seeds with maps, labels and a split, a
    clean and a noise condition: something for every convention to compute."""
    return make_demo_store(tmp_path_factory.mktemp("pass") / "store.h5", n_samples=400)


def _analyze(path, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ds.analyze(path, **options)


def _same(one: xr.Dataset, single: xr.Dataset, name: str) -> None:
    assert set(one.data_vars) == set(single.data_vars), name
    for v in single.variables:
        a, b = one[v].values, single[v].values
        if b.dtype.kind in "fc":
            np.testing.assert_allclose(a.astype(float), b.astype(float), rtol=1e-12, atol=0,
                                       err_msg=f"{name}: {v}")
        else:
            assert (a == b).all(), f"{name}: {v}"
        assert one[v].attrs == single[v].attrs, f"{name}: attributes of {v}"
    differ = {k for k in set(one.attrs) | set(single.attrs)
              if one.attrs.get(k) != single.attrs.get(k)}
    assert differ <= {"created"}, (name, differ)


@pytest.mark.slow
def test_every_convention_in_one_pass_equals_its_own_analysis(demo):
    together = _analyze(demo, convention="all")
    assert convention_names(together) == list(ds.CONVENTIONS)
    assert together["effective_rank"].dims[0] == "convention"
    for name in ds.CONVENTIONS:
        _same(one_convention(together, name), _analyze(demo, convention=name), name)
    # the conventions really differ on these features (the point of the dimension)
    ranks = together["effective_rank"].sel(model="teacher", condition="clean",
                                           layer="embedding", estimator="erank_variance")
    assert len({round(float(r), 6) for r in ranks.values}) > 1


def test_a_pass_of_several_conventions_reads_each_dataset_once(demo, monkeypatch):
    from distillscope.store import chunks as reader_module

    reads: list[tuple[str, int]] = []
    original = reader_module.DatasetReader.read

    def counting(self, start, stop):
        reads.append((self.where[1], start))
        return original(self, start, stop)

    monkeypatch.setattr(reader_module.DatasetReader, "read", counting)
    _analyze(demo, convention="default,arxiv_2603_06698,rankme", rows=150)
    assert reads and len(reads) == len(set(reads))  # every (dataset, block) once
    with ds.open_store(demo) as st:
        assert len({p for p, _ in reads}) == len(list(st.entries()))


def test_several_conventions_round_trip_through_netcdf_and_the_cli(demo, tmp_path, capsys):
    from distillscope.cli import main

    out = tmp_path / "r.nc"
    models = ["teacher", "student_s_seed0", "student_m_seed0"]  # a third of the pairs' cost
    assert main(["analyze", str(demo), "--convention", "rankme,default", "-o", str(out),
                 "-q", "--models", *models]) == 0
    printed = capsys.readouterr().out
    assert "the same features under 2 conventions" in printed
    loaded = load_results(out)
    assert convention_names(loaded) == ["rankme", "default"]
    assert str(loaded["convention_primary"].sel(convention="rankme").values) == "rankme"
    single = _analyze(demo, convention="rankme", models=models)
    np.testing.assert_allclose(one_convention(loaded, "rankme")["effective_rank"],
                               single["effective_rank"], rtol=1e-12)
    page = tmp_path / "c.html"  # compare: each convention of the file is a run
    assert main(["compare", str(out), "-o", str(page)]) == 0
    assert "the same features under 2 conventions" in page.read_text()
    assert main(["compare", str(out), "-o", str(tmp_path / "c.nc")]) == 0
    runs = load_results(tmp_path / "c.nc")
    assert list(runs["run"].values) == ["r[rankme]", "r[default]"]
    assert list(runs["run_convention"].values) == ["rankme", "default"]
    again = tmp_path / "again.nc"
    save_results(one_convention(loaded, "default"), again)
    assert load_results(again).attrs["convention"] == "default"
    with pytest.raises(SystemExit) as info:  # a usage error, before anything is read
        main(["analyze", str(demo), "--convention", "default,nope", "-o", str(tmp_path / "x.nc")])
    assert info.value.code == 2
    assert "got 'nope'" in capsys.readouterr().err and not (tmp_path / "x.nc").exists()


def test_one_convention_refuses_a_name_it_does_not_hold(demo):
    together = _analyze(demo, convention="default,rankme", metrics="erank_variance")
    with pytest.raises(ds.InputError, match="no convention 'arxiv_2603_06698'"):
        one_convention(together, "arxiv_2603_06698")


def test_the_memory_check_counts_each_way_of_preparing_rows_once(demo, monkeypatch):
    from distillscope.engine import plan as plan_module

    def need(spec):
        plans = _analyze(demo, convention=spec, dry_run=True)
        return sum(plan_module.pass_memory(plans if isinstance(plans, list) else [plans]).values())

    # rankme prepares rows as default does (shared statistics); arxiv_2603_06698 has its own
    assert need("default,rankme") == need("default") < need("default,arxiv_2603_06698")
    monkeypatch.setattr(plan_module, "available_memory", lambda: 1 << 20)  # 1 MiB
    with pytest.raises(ds.InputError, match="this analysis holds about .* memory is available"):
        _analyze(demo, convention="default,arxiv_2603_06698")
