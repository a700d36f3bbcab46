"""The embedded default: shipped weights, the teacher's geometry, the main job end to end,
and a training script that reproduces itself."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

import distillscope as ds  # noqa: E402
from distillscope.cli import main  # noqa: E402
from browser import CHROMIUM, measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "extract" / "models"
CONFIG = ROOT / "extract" / "configs" / "default.toml"


def training_script():
    spec = importlib.util.spec_from_file_location("train_default", ROOT / "examples" / "train_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_weights_are_the_ones_the_manifest_describes():
    manifest = json.loads((MODELS / "models.json").read_text())
    files = sorted(MODELS.glob("*.safetensors"))
    assert len(files) == len(manifest["models"]) == 12
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20
    for name, entry in manifest["models"].items():
        assert hashlib.sha256((MODELS / entry["file"]).read_bytes()).hexdigest() == entry["sha256"], name


def test_the_shipped_teacher_is_rich_and_useful():
    """Effective rank at least 4 x the 10 classes, and a useful linear probe (test split)."""
    from distillscope_extract.config import load_config
    from distillscope_extract.models import build_model

    train = training_script()
    d = train.data()
    config = load_config(CONFIG)
    teacher = build_model(config.models[0], seed=0, where="test").module
    measured = train.measure(teacher, d)
    manifest = json.loads((MODELS / "models.json").read_text())["models"]["teacher"]
    assert measured["erank_test"] >= 40 and measured["probe_accuracy_test"] >= 0.95
    assert measured["erank_test"] == pytest.approx(manifest["erank_test"], abs=0.01)
    student = build_model(config.models[1], seed=0, where="test").module
    assert train.measure(student, d)["erank_test"] < measured["erank_test"] / 2  # collapse


def test_training_is_deterministic():
    """Two short trainings from scratch give bit-identical weights (the full script: see
    docs/default-experiment.md)."""
    train = training_script()
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        runs = _two_short_trainings(train)
    finally:
        torch.use_deterministic_algorithms(previous)
    assert runs[0].keys() == runs[1].keys()
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def _two_short_trainings(train) -> list[dict]:
    d = train.data()
    d = {**d, "x_train": d["x_train"][:256], "y_train": d["y_train"][:256]}
    runs = []
    for _ in range(2):
        teacher = train.train_teacher(d, 1, lambda *a: None)
        targets = train.embed(teacher, d["x_train"])
        student = train.train_student(d, targets, width=1, seed=0, epochs=1, infonce=1.0)
        runs.append({**{f"t.{k}": v for k, v in teacher.state_dict().items()},
                     **{f"s.{k}": v for k, v in student.state_dict().items()}})
    return runs


def test_reduced_main_job_end_to_end(tmp_path, capsys):
    """The README's main job on 25 samples per split: extract -> analyze -> report."""
    text = CONFIG.read_text().replace("[data]", "[data]\nlimit = 25", 1)
    text = text.replace('"../models/', f'"{MODELS}/')
    config = tmp_path / "default.toml"
    config.write_text(text)
    out = tmp_path / "audit"
    assert main(["audit", str(config), "--out", str(out), "--convention", "arxiv_2603_06698",
                 "-q"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) <= 40 and "audit done" in printed[-1]  # one summary table, the files
    page = (out / "report.html").read_text()
    assert page.count('<img alt="') >= 9 and "student_L_infonce" in page
    assert "Next to arXiv 2603.06698" in page and "88.68" in page and "27.35" in page
    assert all(v in page for v in ("15.91", "16.62", "16.66"))  # Table I, from the registry
    manifest = json.loads((MODELS / "models.json").read_text())["models"]
    with ds.open_store(out / "store.h5") as st:
        assert len(st.models) == 12 and len(st.conditions) == 7
        for name, info in st.models.items():
            assert info.attrs["weights_sha256"] == manifest[name]["sha256"]  # the shipped weights
    results = ds.load_results(out / "results.nc")
    assert np.isfinite(results["probe_accuracy"].sel(layer="embedding")).all()
    assert set(results.band.values) == {"low", "mid", "high"}
    assert "frequency_response" in results and "seed_averaged_rank" in results
    if CHROMIUM is None:
        pytest.skip("needs Chromium (Debian package chromium)")
    seen = measure(out / "report.html", tmp_path)  # 12 models, 7 conditions, at 1280 x 900
    assert seen["scrollWidth"] <= 1280 and seen["width"] == 1280, seen
    assert seen["hidden"] == [] and seen["console"] == [], seen
