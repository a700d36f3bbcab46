"""Faults on the output side: SIGKILL at seeded random moments, two writers of one output, a
full disk, stale leftovers. The output path holds the old file or the new one, whole, or
nothing; whatever a killed run left is cleaned up by the next.

Kills per test: ``DISTILLSCOPE_FAULTS`` (default 3; the nightly run uses 50:
``DISTILLSCOPE_FAULTS=50 pytest tests/hostile/test_faults.py``).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import distillscope as ds
from cases import base_store
from distillscope.cli import main

FAULTS = int(os.environ.get("DISTILLSCOPE_FAULTS", "3"))
COMMAND = [sys.executable, "-m", "distillscope"]


def _leftovers(folder: Path, name: str) -> list[str]:
    """Hidden temporaries, partial files and locks of output ``name`` in ``folder``."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name.startswith(f".{name}.") or p.name == f"{name}.partial")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return base_store(tmp_path_factory.mktemp("faults") / "small.h5")


def _kill_at_random_moments(argv: list[str], out: Path, whole) -> None:
    """Run ``argv`` once (timing it), then ``FAULTS`` times killed with SIGKILL at seeded
    random moments, half of them over an existing output: afterwards the output path holds the
    old file, or a new one that ``whole(path)`` accepts, or (without an old file) nothing."""
    start = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    full = time.monotonic() - start
    assert whole(out)
    saved = out.with_name("saved-" + out.name)
    shutil.copy(out, saved)
    rng = np.random.default_rng(0)
    for i in range(FAULTS):
        overwrite = i % 2 == 1  # half the kills over an existing output
        out.unlink(missing_ok=True)
        if overwrite:
            shutil.copy(saved, out)
        proc = subprocess.Popen(argv + (["--overwrite"] if overwrite else []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, 1.05) * full)  # mostly late: the writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():  # the old file untouched, or the new one whole
            assert whole(out)
        else:
            assert not overwrite  # nothing at the output path
    out.unlink(missing_ok=True)
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    assert _leftovers(out.parent, out.name) == []  # the next run removed what the killed left
    assert whole(out)


def test_analyze_killed_at_random_moments_leaves_the_old_file_or_nothing(small, tmp_path):
    out = tmp_path / "r.nc"
    assert main(["analyze", str(small), "-o", str(tmp_path / "reference.nc"), "-q"]) == 0
    reference = ds.load_results(tmp_path / "reference.nc")
    _kill_at_random_moments([*COMMAND, "analyze", str(small), "-o", str(out), "-q"], out,
                            lambda path: ds.load_results(path).equals(reference))


def test_report_killed_at_random_moments_leaves_the_old_file_or_nothing(small, tmp_path):
    results = tmp_path / "r.nc"
    assert main(["analyze", str(small), "-o", str(results), "-q"]) == 0
    out = tmp_path / "report.html"
    _kill_at_random_moments([*COMMAND, "report", str(results), "-o", str(out)], out,
                            lambda path: path.read_text().rstrip().endswith("</html>"))


def test_a_second_writer_of_the_same_output_fails_at_once(small, tmp_path, capsys):
    out = tmp_path / "r.nc"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from distillscope.outputs import OutputLock; "
         f"lock = OutputLock({str(out)!r}, 'results file'); print('held', flush=True); "
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["analyze", str(small), "-o", str(out), "-q"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"another process (PID {holder.pid}) is writing" in err[0]
        assert not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the next writer goes ahead and cleans up
    assert main(["analyze", str(small), "-o", str(out), "-q"]) == 0
    assert out.exists() and _leftovers(tmp_path, "r.nc") == []


def test_stale_leftovers_of_killed_writers_are_removed(small, tmp_path):
    out = tmp_path / "r.nc"
    for name in (".r.nc.tmp-999999", ".r.nc.tmp-1", ".r.nc.lock"):
        (tmp_path / name).write_bytes(b"left by a killed run")
    assert main(["analyze", str(small), "-o", str(out), "-q"]) == 0
    assert _leftovers(tmp_path, "r.nc") == []
    (tmp_path / "s.h5.partial").write_bytes(b"a killed writer's store")
    base_store(tmp_path / "s.h5")
    assert _leftovers(tmp_path, "s.h5") == []


def _limited(limit: int):
    def apply() -> None:  # a full disk: writes past `limit` bytes fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("argv, output", [
    (["analyze", "{store}", "-o", "{out}/r.nc", "-q"], "r.nc"),
    (["demo", "--out", "{out}", "--samples", "2000", "-q"], "store.h5"),
])
def test_a_full_disk_is_one_line_and_leaves_nothing(small, tmp_path, argv, output):
    folder = tmp_path / "out"
    folder.mkdir()
    argv = [a.format(store=small, out=folder) for a in argv]
    proc = subprocess.run([*COMMAND, *argv], capture_output=True, text=True, timeout=300,
                          preexec_fn=_limited(64 << 10))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, \
        proc.stderr
    assert output in lines[0], lines[0]
    assert "File too large" in lines[0] or "file size limit (ulimit -f)" in lines[0], lines[0]
    assert not (folder / output).exists() and _leftovers(folder, output) == []


FILLER = """
import os, sys
import numpy as np
import distillscope as ds
folder = sys.argv[1]
try:
    with ds.StoreWriter(os.path.join(folder, "s.h5"), sample_ids=np.arange(20000)) as w:
        w.add_condition("clean")
        w.add_model("t", role="teacher", architecture="t")
        layer = w.create_layer("t", "clean", "e", (16,))
        for i in range(0, 20000, 1000):
            layer.append(np.ones((1000, 16), "f4"))
            if i == 0:  # another program fills the disk meanwhile, leaving 1.2 MiB
                st = os.statvfs(folder)
                with open(os.path.join(folder, "filler"), "wb") as fh:
                    fh.write(b"x" * (st.f_bavail * st.f_frsize - (1200 << 10)))
except ds.OutputError as err:
    print(err)
"""


@contextmanager
def _tmpfs(mount: Path, options: str):
    """A real tmpfs mounted at ``mount`` for the block (skips where mounting needs root)."""
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                          capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a file system here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB file system."""
    with _tmpfs(tmp_path / "disk", "size=4m") as mount:
        yield mount


def test_a_disk_that_fills_while_a_store_is_written(small_disk):
    proc = subprocess.run([sys.executable, "-c", FILLER, str(small_disk)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no crash, no traceback
    assert "s.h5: the store needs" in proc.stdout and "MiB free" in proc.stdout
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no partial store left


@pytest.fixture
def read_only_disk(tmp_path):
    """A real read-only file system: it refuses even root, unlike chmod."""
    with _tmpfs(tmp_path / "ro", "size=1m,ro") as mount:
        yield mount


@pytest.mark.parametrize("what", ["analyze", "report", "store"])
def test_a_read_only_file_system_is_one_line_naming_the_path(small, tmp_path, read_only_disk,
                                                              what):
    results = tmp_path / "r.nc"
    assert main(["analyze", str(small), "-o", str(results), "-q"]) == 0
    out = read_only_disk / "out"
    argv = {"analyze": ["analyze", str(small), "-o", str(out), "-q"],
            "report": ["report", str(results), "-o", str(out)]}.get(what)
    if argv is None:  # the store writer, through the API
        code = [sys.executable, "-c", "import sys, numpy as np, distillscope as ds\n"
                "try:\n    ds.StoreWriter(sys.argv[1], sample_ids=np.arange(4))\n"
                "except ds.OutputError as err:\n    print(err)\n", str(out)]
        proc = subprocess.run(code, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        line = proc.stdout.strip()
    else:
        proc = subprocess.run([*COMMAND, *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        line = proc.stderr.strip()
    assert len(line.splitlines()) == 1 and str(read_only_disk) in line, line
    assert list(read_only_disk.iterdir()) == []
