"""The command line: inspect, analyze, demo; one-line errors, exit codes, no tracebacks."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import distillscope as ds
from distillscope.cli import main
from conftest import write_store


SCRIPT = Path(sys.executable).with_name("distillscope")  # the console script of this environment


def _run(*args):
    """The installed console script, as a user runs it."""
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_console_script_analyze_and_inspect(tmp_path, small_store):
    out = tmp_path / "r.nc"
    proc = _run("analyze", str(small_store), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    assert "erank_variance" in proc.stdout and f"wrote {out}" in proc.stdout
    assert ds.load_results(out)["effective_rank"].notnull().all()
    proc = _run("inspect", str(small_store), "--deep")
    assert proc.returncode == 0
    assert "teacher" in proc.stdout and "(60, 24) float32" in proc.stdout and "valid" in proc.stdout


def test_console_script_error_is_one_line_without_traceback(tmp_path):
    proc = _run("inspect", str(tmp_path / "missing.h5"))
    assert proc.returncode == 2  # invalid input
    assert proc.stderr == f"distillscope: error: {tmp_path / 'missing.h5'}: no such file; check the path " \
                          "(create stores with extract or distillscope.StoreWriter)\n"
    proc = _run("--debug", "inspect", str(tmp_path / "missing.h5"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def _error(capsys, *argv, exit_code=2):
    """The one line of error of a command given invalid input (exit 2; other failures 1)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    assert code == exit_code, captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distillscope: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_bad_stores_give_one_line(tmp_path, small_store, capsys):
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    assert "not HDF5" in _error(capsys, "inspect", str(text))
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(small_store.read_bytes()[:3000])
    assert "truncated" in _error(capsys, "analyze", str(truncated), "-o", str(tmp_path / "o.nc"))
    with h5py.File(small_store, "r+") as f:
        f.attrs["format_version"] = 7
    assert "format_version 7 is not supported" in _error(capsys, "inspect", str(small_store))
    assert not (tmp_path / "o.nc").exists()


def test_nan_store_named_by_inspect_deep_and_analyze(tmp_path, capsys):
    z = np.ones((30, 4), np.float32)
    z[3] = np.nan
    path = write_store(tmp_path / "nan.h5", {("teacher", "clean", "e"): z})
    assert main(["inspect", str(path)]) == 0  # structure is fine
    capsys.readouterr()
    line = _error(capsys, "inspect", str(path), "--deep")
    assert "4 non-finite values (4 NaN, 0 infinite), first at sample 3 (id 1003)" in line
    line = _error(capsys, "analyze", str(path), "-o", str(tmp_path / "r.nc"), "-q")
    assert "nan.h5:/models/teacher/clean/e: 4 non-finite values" in line
    assert not (tmp_path / "r.nc").exists()


def test_existing_output_needs_overwrite(tmp_path, small_store, capsys):
    out = tmp_path / "r.nc"
    out.write_text("keep me")
    line = _error(capsys, "analyze", str(small_store), "-o", str(out), "-q", exit_code=1)
    assert "exists; pass overwrite=True (--overwrite)" in line
    assert out.read_text() == "keep me"
    assert main(["analyze", str(small_store), "-o", str(out), "-q", "--overwrite"]) == 0
    assert ds.load_results(out).sizes["model"] == 2


def test_unwritable_output(tmp_path, small_store, capsys):
    line = _error(capsys, "analyze", str(small_store), "-o", str(tmp_path / "no" / "r.nc"), "-q",
                  exit_code=1)
    assert "folder" in line and "does not exist" in line
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = _error(capsys, "analyze", str(small_store), "-o", str(blocker / "r.nc"), "-q",
                  exit_code=1)
    assert "does not exist" in line
    line = _error(capsys, "analyze", str(small_store), "-o", str(tmp_path), "-q", exit_code=1)
    assert "exists" in line or "directory" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_read_only_folder(tmp_path, small_store, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert "not writable" in _error(capsys, "analyze", str(small_store), "-o",
                                        str(folder / "r.nc"), "-q", exit_code=1)
    finally:
        folder.chmod(0o700)


def test_one_sample_and_selection_errors(tmp_path, small_store, capsys):
    one = write_store(tmp_path / "one.h5", {("teacher", "clean", "e"): np.ones((1, 2))})
    assert "holds 1 sample" in _error(capsys, "analyze", str(one), "-o", str(tmp_path / "a.nc"))
    line = _error(capsys, "analyze", str(small_store), "-o", str(tmp_path / "a.nc"), "--layers", "fc")
    assert "layer 'fc' is not in the store; available: embedding" in line


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["analyze"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["analyze", "x.h5", "-o", "y.nc", "--convention", "nope"])
    assert info.value.code == 2


def test_demo_runs_and_reproduces_the_papers_shape(tmp_path, capsys):
    # the paper's convention computes on the test split (a fifth of the demo's 2000 samples):
    # 400 rows, enough for the 768-d teacher's rank
    assert main(["demo", "--out", str(tmp_path / "demo"), "-q",
                 "--convention", "arxiv_2603_06698"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "results.nc" in out
    r = ds.load_results(tmp_path / "demo" / "results.nc")
    ranks = r["effective_rank"].sel(condition="clean", layer="embedding", estimator="erank_variance")
    teacher = float(ranks.sel(model="teacher"))
    students = ranks.where(r["role"] == "student", drop=True)
    assert teacher > 4 * float(students.max())  # collapse, whatever the width
    assert float(students.max() - students.min()) < 3
    assert set(r["family"].values) == {"student_s", "student_m", "student_l"}
    # the same command again refuses to overwrite
    assert main(["demo", "--out", str(tmp_path / "demo"), "--samples", "600", "-q"]) == 1


def test_python_dash_m(small_store, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "distillscope", "inspect", str(small_store)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "student" in proc.stdout


def test_audit_of_a_missing_configuration_creates_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["audit", str(tmp_path / "missing.toml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing.toml: no such configuration file" in err and "Traceback" not in err
    assert not out.exists()
