"""Every case of the hostile corpus (``cases.py``) ends as specified, within 30 s.

Refused: ``inspect --deep`` and ``analyze`` exit 2 with one line naming the file (and the HDF5
path), no traceback, and nothing written at the output path or beside it. Read: both exit 0,
every dataset equals plain h5py, and the expected note is printed.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

import distillscope as ds
from cases import CASES, base_store, markdown_table
from distillscope.cli import main

DOCS = Path(__file__).parents[2] / "docs" / "security.md"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return base_store(tmp_path_factory.mktemp("hostile") / "base.h5")


@contextmanager
def within(seconds: int):
    """Fail (not hang) when the body runs longer than ``seconds``."""
    def expire(*_):
        raise TimeoutError(f"took longer than {seconds} s")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case, base, tmp_path, capsys):
    folder = tmp_path / "case"
    folder.mkdir()
    store = case.build(base, folder / "store.h5")
    out = tmp_path / "out" / "results.nc"
    out.parent.mkdir()
    with within(30):
        inspected = _run(capsys, "inspect", "--deep", store, *(
            a for a in case.args if a == "--allow-external"))
        analysed = _run(capsys, "analyze", store, "-o", out, "-q", *case.args)
    for command, (code, stdout, err) in (("inspect", inspected), ("analyze", analysed)):
        if case.outcome == "refused":
            lines = err.strip().splitlines()
            assert code == 2, (command, err)
            assert len(lines) == 1 and "Traceback" not in err, (command, err)
            assert lines[0].startswith(f"distillscope: error: {store}"), (command, lines[0])
            assert f"{case.where}: " in lines[0], (command, lines[0])  # the HDF5 path
            assert case.expect in lines[0], (command, lines[0])
        else:
            assert code == 0, (command, err)
            if case.expect:
                assert case.expect in err, (command, err)
    if case.outcome == "refused":
        assert list(out.parent.iterdir()) == []  # no results, no temporary file
        return
    assert ds.load_results(out)["effective_rank"].notnull().any()
    with ds.open_store(store, allow_external="--allow-external" in case.args) as st, \
            h5py.File(store, "r") as plain:
        for info in st.entries():
            np.testing.assert_array_equal(st.read(info), plain[info.path][()])


def test_a_console_run_of_a_refused_store_is_one_line(base, tmp_path):
    """The installed command, in its own process: one line, exit 2, no traceback."""
    case = next(c for c in CASES if c.name == "soft-link cycle under /models")
    store = case.build(base, tmp_path / "store.h5")
    proc = subprocess.run([sys.executable, "-m", "distillscope", "analyze", str(store), "-o",
                           str(tmp_path / "r.nc"), "-q"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.nc").exists()


def test_docs_list_every_case_with_its_outcome():
    text = DOCS.read_text()
    begin, end = "<!-- corpus:begin -->", "<!-- corpus:end -->"
    table = text[text.index(begin) + len(begin):text.index(end)].strip()
    assert table == markdown_table(), ("docs/security.md is out of date; paste "
                                       "tests/hostile/cases.py's markdown_table() between the "
                                       "corpus markers")
