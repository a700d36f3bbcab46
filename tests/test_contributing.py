"""CONTRIBUTING.md's worked example runs: the metric it adds, declared exactly as written
there, reaches analyze, the command line, alignment_score and the registry table, and its
test passes. Three files are named, and they are enough."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

from conftest import write_store

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "CONTRIBUTING.md").read_text()


def _block(tag: str) -> str:
    match = re.search(rf"<!-- example:{tag} -->\s*```python\n(.*?)```", GUIDE, flags=re.S)
    assert match, f"CONTRIBUTING.md has no example:{tag} block"
    return match.group(1)


def test_the_example_names_three_files():
    steps = re.findall(r"^\*\*(\d)\. `([^`]+)`\*\*", GUIDE, flags=re.M)
    assert [n for n, _ in steps] == ["1", "2", "3"]
    files = [f for _, f in steps]
    assert all((ROOT / f).exists() or f.startswith("tests/") for f in files), files
    assert len(set(files)) == 3


def test_the_worked_example_runs(tmp_path):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((300, 6))
    teacher = z @ rng.standard_normal((6, 16))
    student = teacher + 0.4 * rng.standard_normal((300, 16))
    store = write_store(tmp_path / "s.h5", {("teacher", "clean", "e"): teacher.astype(np.float32),
                                            ("student", "clean", "e"): student.astype(np.float32)})
    script = textwrap.dedent(f"""
        import numpy as np, pytest
        import distillscope as ds
        from distillscope.metrics import neighbours
        from distillscope.metrics.registry import markdown_table
        from distillscope.cli import main

        from types import SimpleNamespace

        space = dict(vars(neighbours))  # the module the example adds to
        exec({_block("metric")!r}, space)
        tests = {{"np": np, "pytest": pytest, "ds": ds, "nb": SimpleNamespace(**space)}}
        exec({_block("test")!r}, tests)  # as in tests/test_alignment.py
        tests["test_mean_cosine_equals_a_loop"]()

        r = ds.analyze({str(store)!r}, metrics=["mean_cosine"])
        value = float(r["mean_cosine"].sel(student="student", condition="clean",
                                           teacher_layer="e", student_layer="e"))
        t, s = (np.asarray(a, np.float64) for a in (np.load({str(tmp_path / "t.npy")!r}),
                                                     np.load({str(tmp_path / "s.npy")!r})))
        expected = np.mean(np.sum(t * s, 1) / np.linalg.norm(t, axis=1) / np.linalg.norm(s, axis=1))
        assert value == pytest.approx(expected, rel=1e-12), (value, expected)
        attrs = r["mean_cosine"].attrs
        assert attrs["reference"] == "docs/metrics.md#mean-cosine" and attrs["units"] == "1"
        assert ds.alignment_score(t, s, "mean_cosine") == pytest.approx(expected, rel=1e-12)
        assert "| `mean_cosine` |" in markdown_table()  # the docs table must list it
        assert main(["analyze", {str(store)!r}, "-o", {str(tmp_path / "r.nc")!r}, "-q",
                     "--metrics", "default,mean_cosine"]) == 0
        assert "mean_cosine" in ds.load_results({str(tmp_path / "r.nc")!r})
        print("ok")
    """)
    np.save(tmp_path / "t.npy", teacher.astype(np.float32))
    np.save(tmp_path / "s.npy", student.astype(np.float32))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT / "tests", timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
