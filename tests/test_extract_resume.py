"""A real extraction killed with SIGKILL at several points, resumed, equals an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("timm")

from distillscope_extract import extract  # noqa: E402

from test_extract import FACTORIES, vit_config  # noqa: E402


def config_for(tmp_path: Path) -> Path:
    return vit_config(
        tmp_path, data='source = "digits"\nlimit = 150',
        run='batch_size = 10\ndtype = "float16"\ncheckpoint_seconds = 0',
        conditions="""
            [[conditions]]
            name = "band"
            kind = "band_noise"
            band = "mid"
            sigma = 0.2
            """,
        extra_model=f"""
            [[models]]
            name = "student"
            role = "student"
            factory = "{FACTORIES}:tiny_cnn"
            layers = ["embedding", "0"]
            """)


def contents(path: Path) -> dict:
    """Every dataset and every attribute of a store, except its creation time."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()
                     if k != "created"}
            out[name] = (obj[()] if isinstance(obj, h5py.Dataset) else None, attrs)
        visit("/", f)
        f.visititems(visit)
    return out


def start(config: Path, output: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distillscope", "extract", str(config), "-o",
                             str(output), "-q", "--allow-code"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": "0"})


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.002)
    proc.wait(timeout=timeout)
    return False


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_equals_uninterrupted(tmp_path):
    config = config_for(tmp_path)
    reference = extract(config, output=tmp_path / "reference.h5", progress=False, log=lambda *a: None,
                        allow_code=True)
    output = tmp_path / "killed.h5"
    work = tmp_path / "killed.h5.work"

    def shards() -> int:
        return sum(1 for _ in work.rglob("*.npz")) if work.is_dir() else 0

    points = [("during start-up", lambda: work.is_dir()),
              ("after the first shard", lambda: shards() >= 1),
              ("in the teacher's second condition", lambda: shards() >= 40),
              ("in the student's run", lambda: shards() >= 75),
              ("while assembling the store", lambda: (tmp_path / "killed.h5.partial").exists())]
    killed = []
    for what, ready in points:
        before = shards()
        proc = start(config, output)
        if kill_when(proc, ready):
            killed.append(what)
            # a killed run never leaves a store that looks complete
            assert not output.exists(), what
            assert shards() >= before  # finished shards are never lost
        else:
            assert proc.returncode == 0, proc.stderr.read().decode()
            break
    assert len(killed) >= 4, killed
    if not output.exists():
        proc = start(config, output)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    assert not work.exists()
    ours, ref = contents(output), contents(reference)
    assert ours.keys() == ref.keys()
    for name in ref:
        data, attrs = ours[name]
        if ref[name][0] is not None:
            np.testing.assert_array_equal(data, ref[name][0], err_msg=name)
        assert attrs == ref[name][1], name


def test_rerun_after_the_store_was_renamed_only_cleans_up(tmp_path):
    """A kill between renaming the finished store and deleting the work folder."""
    config = config_for(tmp_path)
    out = extract(config, output=tmp_path / "f.h5", progress=False, log=lambda *a: None,
                  allow_code=True)
    (tmp_path / "f.h5.work").mkdir()
    messages = []
    assert extract(config, output=out, progress=False, log=messages.append,
                   allow_code=True) == out
    assert "already complete" in messages[0] and not (tmp_path / "f.h5.work").exists()


FAULTS = int(os.environ.get("DISTILLSCOPE_FAULTS", "2"))


@pytest.mark.slow
def test_sigkill_at_seeded_random_moments_then_resume_equals_uninterrupted(tmp_path):
    """``DISTILLSCOPE_FAULTS`` kills (2 in CI, 50 nightly) at seeded random moments of one
    extraction, each followed by a resume that is killed in turn; the last resume finishes, and
    the store equals an uninterrupted one bit for bit. No kill ever leaves a store at the
    output path that is not whole."""
    config = config_for(tmp_path)
    reference = tmp_path / "reference.h5"
    started = time.monotonic()
    proc = start(config, reference)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    full = time.monotonic() - started
    output = tmp_path / "killed.h5"
    rng = np.random.default_rng(0)
    for _ in range(FAULTS):
        proc = start(config, output)
        time.sleep(rng.uniform(0.1, 1.0) * full)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if output.exists():  # it finished first: the store is whole; start over
            assert contents(output).keys() == contents(reference).keys()
            output.unlink()
    proc = start(config, output)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    assert not (tmp_path / "killed.h5.work").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".killed", "killed"))) \
        == ["killed.h5"]  # no lock, temporary or partial file left
    ours, ref = contents(output), contents(reference)
    assert ours.keys() == ref.keys()
    for name in ref:
        if ref[name][0] is not None:
            np.testing.assert_array_equal(ours[name][0], ref[name][0], err_msg=name)
        assert ours[name][1] == ref[name][1], name
