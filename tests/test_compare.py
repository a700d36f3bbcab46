"""``distillscope compare``: runs on one ``run`` dimension (netCDF that netCDF4 and ncdump read),
and a page with the conversion table, the runs, collapse ratios and the registry's numbers."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import distillscope as ds
from distillscope.cli import main

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser",
                             "/usr/bin/google-chrome") if shutil.which(p)), None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One store, analysed under two conventions."""
    folder = tmp_path_factory.mktemp("compare")
    rng = np.random.default_rng(5)
    n = 240
    teacher = rng.standard_normal((n, 16)) * np.geomspace(3, 0.1, 16)
    with ds.StoreWriter(folder / "s.h5", sample_ids=np.arange(n),
                        labels=np.argmax(teacher[:, :3], axis=1),
                        splits=np.where(np.arange(n) % 4 == 0, "test", "train")) as w:
        w.add_condition("clean", kind="clean")
        w.add_model("teacher", role="teacher", architecture="vit", n_params=5000)
        w.write_layer("teacher", "clean", "embedding", teacher)
        for i, k in enumerate((2, 5)):
            w.add_model(f"student_{k}", role="student", architecture="cnn", n_params=500 * (i + 1))
            w.write_layer(f"student_{k}", "clean", "embedding",
                          teacher @ rng.standard_normal((16, k)) @ rng.standard_normal((k, 16)))
    out = []
    for convention in ("default", "arxiv_2603_06698"):
        path = folder / f"{convention}.nc"
        assert main(["analyze", str(folder / "s.h5"), "-o", str(path), "-q", "--convention",
                     convention]) == 0
        out.append(path)
    return out


def test_the_runs_on_one_run_dimension_read_by_netcdf4_and_ncdump(runs, tmp_path):
    netCDF4 = pytest.importorskip("netCDF4")
    out = tmp_path / "both.nc"
    assert main(["compare", *map(str, runs), "-o", str(out)]) == 0
    combined = ds.load_results(out)
    assert list(combined["run_convention"].values) == ["default", "arxiv_2603_06698"]
    for run, path in zip(combined.run.values, runs):
        np.testing.assert_array_equal(combined["effective_rank"].sel(run=run).values,
                                      ds.load_results(path)["effective_rank"].values)
    with netCDF4.Dataset(out) as nc:
        assert nc.dimensions["run"].size == 2 and "effective_rank" in nc.variables
        assert nc["effective_rank"].dimensions[0] == "run"
    if shutil.which("ncdump"):
        header = subprocess.run(["ncdump", "-h", str(out)], capture_output=True, text=True,
                                check=True).stdout
        assert "run = 2 ;" in header and "effective_rank(run, model" in header


def test_the_page_converts_between_conventions_and_sets_papers_against_their_runs(runs, tmp_path):
    page = tmp_path / "compare.html"
    assert main(["compare", *map(str, runs), "--papers", "arxiv_2603_06698", "-o",
                 str(page)]) == 0
    text = page.read_text()
    assert "the same features under 2 conventions" in text
    default, paper = (ds.load_results(p) for p in runs)
    for results in (default, paper):  # the conversion table holds each run's teacher rank
        value = float(results["effective_rank"].sel(model="teacher", condition="clean",
                                                    layer="embedding", estimator="erank_variance"))
        assert f"{value:.2f}" in text
    assert "88.68" in text and ">arxiv_2603_06698<" in text  # Table I, set against its run
    assert "15.91" in text and "runs under the same convention" in text
    if CHROMIUM is None:
        pytest.skip("needs Chromium (Debian package chromium)")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom",
         page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "Conversion table" in proc.stdout
    assert [line for line in proc.stderr.splitlines() if "CONSOLE" in line] == []


def test_bad_inputs_are_one_line_and_nothing_is_overwritten(runs, tmp_path, capsys):
    before = runs[0].read_bytes()
    assert main(["compare", *map(str, runs), "-o", str(runs[0]), "--overwrite"]) != 0
    assert runs[0].read_bytes() == before  # never over an input
    assert main(["compare", str(runs[0]), "--papers", "nope", "-o",
                 str(tmp_path / "x.html")]) == 2
    assert main(["compare", str(runs[0]), "-o", str(tmp_path / "x.txt")]) == 2
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"not netcdf")
    assert main(["compare", str(junk), "-o", str(tmp_path / "y.nc")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(line.startswith("distillscope: error:") for line in err) and len(err) == 4
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "y.nc").exists()
