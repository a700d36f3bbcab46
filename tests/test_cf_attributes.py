"""Self-describing results: every data variable and every coordinate of a results file (one
convention with intervals, several conventions, a comparison) has ``long_name`` and ``units``
(CF conventions 3.1), read back by the reference netCDF library."""

from __future__ import annotations

import warnings

import pytest

import distillscope as ds
from distillscope.demo import make_demo_store
from distillscope.report.compare import combine
from distillscope.results import save_results
from distillscope.results.attributes import describe


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cf")
    store = make_demo_store(folder / "store.h5", n_samples=300)
    # two families, one of two seeds: every variable and coordinate of the seven models' results
    # (the same names), at a quarter of the cost; percentile intervals need no jackknife
    models = ["teacher", "student_s_seed0", "student_s_seed1", "student_m_seed0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = ds.analyze(store, metrics="all", bootstrap=3, interval="percentile",
                         park_kim=True, models=models)
        several = ds.analyze(store, convention="default,rankme,arxiv_2603_06698", models=models)
    paths = {"one": folder / "one.nc", "several": folder / "several.nc",
             "compare": folder / "compare.nc"}
    save_results(one, paths["one"])
    save_results(several, paths["several"])
    save_results(combine([one, several], ["one", "several"]), paths["compare"])
    return paths


@pytest.mark.parametrize("kind", ["one", "several", "compare"])
def test_every_variable_and_coordinate_says_what_it_holds(files, kind):
    # imported here, not at collection: netCDF4 puts its HDF5 filter plugins on the path of
    # the whole process, and the hostile corpus needs a filter that is not available
    import netCDF4

    with netCDF4.Dataset(files[kind]) as nc:
        missing = [name for name, var in nc.variables.items()
                   if not {"long_name", "units"} <= set(var.ncattrs())]
        assert not missing, f"{kind}: no long_name or units on {missing}"
        assert nc.variables["estimator_center"].flag_meanings == "uncentred centred" \
            if "estimator_center" in nc.variables and kind != "compare" else True


def test_an_undescribed_coordinate_is_refused():
    import xarray as xr

    with pytest.raises(KeyError, match="COORDINATES"):
        describe(xr.Dataset(coords={"mystery": [1, 2]}))
