"""Figures: each draws what the results hold, on the axes given, and returns them."""

import numpy as np
import xarray as xr
import pytest

import distillscope as ds
from distillscope import plot

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def feature_store(path, n=160):
    """A teacher and two seeds of a student over labelled samples: clean, Gaussian noise at two
    sigmas, band-limited noise in three bands; an embedding and a map layer each."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, n)
    centres = rng.standard_normal((4, 16)) * 3
    clean = centres[labels] + rng.standard_normal((n, 16))
    conditions = {"clean": ("clean", {}), "gauss_0.1": ("gaussian_noise", {"sigma": 0.1}),
                  "gauss_0.3": ("gaussian_noise", {"sigma": 0.3})}
    conditions.update({f"band_{b}": ("band_noise", {"band": b, "sigma": 0.2})
                       for b in ("low", "mid", "high")})
    scale = {"clean": 0, "gauss_0.1": 1, "gauss_0.3": 3, "band_low": 1, "band_mid": 2, "band_high": 3}
    with ds.StoreWriter(path, sample_ids=np.arange(n), labels=labels,
                        splits=np.where(np.arange(n) < 100, "train", "test")) as w:
        for name, (kind, params) in conditions.items():
            w.add_condition(name, kind, **params)
        w.add_model("teacher", role="teacher", architecture="t", n_params=10_000)
        for seed in (0, 1):
            w.add_model(f"student_{seed}", role="student", architecture="s", n_params=1_000,
                        family="S", seed=seed)
        for model, width in (("teacher", 16), ("student_0", 8), ("student_1", 8)):
            proj = rng.standard_normal((16, width))
            for name in conditions:
                x = (clean + 0.3 * scale[name] * rng.standard_normal(clean.shape)) @ proj
                w.write_layer(model, name, "embedding", x.astype(np.float32))
                if name == "clean":
                    maps = rng.standard_normal((n, 4, 6, 6)).cumsum(axis=-1)  # low-pass along x
                    w.write_layer(model, name, "map", maps.astype(np.float32))
    return path


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return ds.analyze(feature_store(tmp_path_factory.mktemp("plot") / "f.h5"))


@pytest.mark.parametrize("name, kwargs, artists", [
    ("spectrum", {}, 3),
    ("cumulative_variance", {}, 4),          # three models and the 90% line
    ("accuracy_vs_noise", {}, 4),            # teacher, family S's mean and its 2 seeds faint
    ("frequency_response", {}, 4),           # three models and the flat line
    ("variance_captured", {"student_layer": "embedding"}, 0),  # different widths: no curve
    ("radial_profiles", {}, 3),
])
def test_line_plots_draw_one_line_per_model(results, name, kwargs, artists):
    fig, ax = plt.subplots()
    assert getattr(plot, name)(results, ax=ax, **kwargs) is ax
    assert len(ax.lines) == artists
    assert ax.get_title()
    plt.close(fig)


def test_accuracy_against_noise_puts_clean_at_sigma_zero(results):
    ax = plot.accuracy_vs_noise(results)
    teacher = ax.lines[0]
    assert list(teacher.get_xdata()) == [0.0, 0.1, 0.3]
    expected = 100 * results["probe_accuracy"].sel(model="teacher", layer="embedding",
                                                   condition=["clean", "gauss_0.1", "gauss_0.3"])
    np.testing.assert_allclose(teacher.get_ydata(), expected.values)
    plt.close(ax.figure)


def test_rank_against_parameters_band_bars_and_heatmap(results):
    fig, axes = plt.subplots(1, 3)
    plot.rank_vs_params(results, ax=axes[0])  # a point per group, the seeds faint, a legend
    labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
    assert labels == ["teacher", "S (2 seeds)"] and axes[0].get_xscale() == "log"
    assert not axes[0].texts  # no point labels to overprint
    members = axes[0].collections[0].get_offsets()
    assert len(members) == 2 and len(axes[0].lines) == 2
    plot.band_fractions(results, ax=axes[1])
    assert len(axes[1].patches) == 3 * 2  # 3 bands x (teacher, family S) with maps
    plot.cka_heatmap(results, student="student_0", ax=axes[2])
    assert axes[2].images[0].get_array().shape == (2, 2)
    plt.close(fig)


def test_one_cka_figure_for_every_student_with_intervals(results):
    fig, ax = plt.subplots()
    plot.cka_students(results, ax=ax)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["student_0", "student_1"]
    assert len(ax.lines) == 2 * results.sizes["condition"] and not ax.collections
    plt.close(fig)
    with_ci = results.assign(linear_cka_ci=results.linear_cka.expand_dims(
        bound=["low", "high"], axis=-1) + xr.DataArray([-0.01, 0.01], dims="bound"))
    fig, ax = plt.subplots()
    plot.cka_students(with_ci, ax=ax)
    assert len(ax.collections) == 2 * results.sizes["condition"]  # an interval bar each
    plt.close(fig)


def test_clear_errors(results):
    with pytest.raises(ds.InputError, match="condition 'fog' is not in the results"):
        plot.spectrum(results, condition="fog")
    with pytest.raises(ds.InputError, match="no 'probe_accuracy'"):
        plot.accuracy_vs_noise(results.drop_vars("probe_accuracy"))


# ----------------------------------------------------------------------------------- the report
def test_report_is_one_self_contained_page(results, tmp_path):
    from distillscope.report import render_report, write_report

    page = render_report(results)
    assert page.count('<img alt="') >= 8 and "http://" not in page and "https://" not in page
    assert "Headline numbers" in page and "probe acc gauss_0.3" in page
    for name in ("effective_rank", "probe_accuracy", "frequency_response"):
        assert f"<code>{name}</code>" in page  # every definition is listed
    assert "LogisticRegression" in page  # and every parameter of the run
    out = write_report(results, tmp_path / "r.html")
    with pytest.raises(ds.OutputError, match="--overwrite"):
        write_report(results, out)
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_report_from_the_command_line(results, tmp_path):
    from distillscope.cli import main

    ds.save_results(results, tmp_path / "r.nc")
    assert main(["report", str(tmp_path / "r.nc"), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 100_000
    assert main(["report", str(tmp_path / "missing.nc"), "-o", str(tmp_path / "x.html")]) == 2
    with pytest.raises(ds.InputError, match="missing.nc: no such results file"):
        ds.load_results(tmp_path / "missing.nc")
    (tmp_path / "junk.nc").write_text("junk")
    with pytest.raises(ds.InputError, match="junk.nc: not a netCDF results file"):
        ds.load_results(tmp_path / "junk.nc")


CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser",
                             "/usr/bin/google-chrome") if __import__("os").path.exists(p)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium)")
def test_report_opens_in_headless_chromium_and_shows_the_figures(results, tmp_path):
    import subprocess

    from PIL import Image

    from distillscope.report import write_report

    page = write_report(results, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,2400",
         f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert image.shape[:2] == (2400, 1280)
    figures = image[700:2400]  # below the title and the table
    coloured = np.abs(figures - figures.mean(axis=-1, keepdims=True)).max(axis=-1) > 60
    assert coloured.mean() > 0.005  # the plotted lines and bars, not an empty page
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and dom.stdout.count("<img") >= 8
