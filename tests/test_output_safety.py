"""No command writes over what it reads, or over anything but a regular file.

`-o` naming an input (any spelling: relative, `..`, a symbolic or a hard link) is refused with or
without `--overwrite`, and so is an output path that is a device, FIFO or socket: `os.replace`
would otherwise put a regular file in its place. Each refusal is one line, exit 1, and leaves
the input byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

import distillscope as ds
from distillscope.cli import main


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _refused(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _spellings(path: Path, tmp_path: Path) -> list[Path]:
    """Other names of the same file: relative, through '..', a symbolic and a hard link."""
    symlink = tmp_path / "alias.h5"
    symlink.symlink_to(path)
    hardlink = tmp_path / "hard.h5"
    os.link(path, hardlink)
    return [path, Path(os.path.relpath(path)), path.parent / ".." / path.parent.name / path.name,
            symlink, hardlink]


def test_analyze_never_writes_over_its_store(tmp_path, small_store, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _digest(small_store)
    for output in _spellings(small_store, tmp_path):
        for extra in ([], ["--overwrite"]):
            line = _refused(capsys, "analyze", small_store, "-o", output, "-q", *extra)
            assert f"is the input {small_store}" in line, line
    assert _digest(small_store) == before
    ds.open_store(small_store).close()  # still a valid store


def test_the_library_refuses_too(tmp_path, small_store):
    results = ds.analyze(small_store, alignment=False, robustness=False)
    before = _digest(small_store)
    with pytest.raises(ds.OutputError, match="is the input"):
        ds.save_results(results, small_store, overwrite=True)
    from distillscope.report import write_report

    with pytest.raises(ds.OutputError, match="is the input"):
        write_report(results, small_store, overwrite=True)
    assert _digest(small_store) == before


def test_report_never_writes_over_its_results_or_their_store(tmp_path, small_store, capsys):
    results = tmp_path / "r.nc"
    assert main(["analyze", str(small_store), "-o", str(results), "-q"]) == 0
    capsys.readouterr()
    before = _digest(results), _digest(small_store)
    for output in (results, tmp_path / "." / "r.nc"):
        line = _refused(capsys, "report", results, "-o", output, "--overwrite")
        assert f"is the input {results}" in line
    line = _refused(capsys, "report", results, "-o", small_store, "--overwrite")
    assert "is the input" in line
    assert (_digest(results), _digest(small_store)) == before


def test_special_files_are_never_replaced(tmp_path, small_store, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    device = tmp_path / "null"  # a link to a character device: os.replace would swap the link
    device.symlink_to(os.devnull)
    for output in (fifo, device):
        line = _refused(capsys, "analyze", small_store, "-o", output, "--overwrite", "-q")
        assert "is not a regular file" in line
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert device.is_symlink() and stat.S_ISCHR(os.stat(os.devnull).st_mode)
    results = tmp_path / "r.nc"
    assert main(["analyze", str(small_store), "-o", str(results), "-q"]) == 0
    line = _refused(capsys, "report", results, "-o", fifo, "--overwrite")
    assert "is not a regular file" in line
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_publish_checks_again_just_before_the_rename(tmp_path):
    from distillscope.outputs import publish

    tmp = tmp_path / ".out.tmp"
    tmp.write_text("new")
    fifo = tmp_path / "out"
    os.mkfifo(fifo)  # appeared after the early check
    with pytest.raises(ds.OutputError, match="not a regular file"):
        publish(tmp, fifo, overwrite=True, what="report")
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and not tmp.exists()


def test_extract_and_audit_never_write_over_their_configuration(tmp_path, capsys):
    pytest.importorskip("torch")
    shipped = Path(__file__).resolve().parents[1] / "extract" / "configs" / "default.toml"
    text = shipped.read_text().replace('"../', f'"{shipped.parent.parent}/')
    config = tmp_path / "default.toml"
    config.write_text(text)
    line = _refused(capsys, "extract", config, "-o", config, "--overwrite", "-q")
    assert f"is the input {config}" in line
    named_like_the_store = tmp_path / "store.h5"  # audit writes OUT/store.h5
    named_like_the_store.write_text(text)
    line = _refused(capsys, "audit", named_like_the_store, "--out", tmp_path, "--overwrite", "-q")
    assert "is the input" in line
    assert config.read_text() == text and named_like_the_store.read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["default.toml", "store.h5"]
