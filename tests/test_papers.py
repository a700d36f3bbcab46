"""The papers registry: every shipped file is well formed, and malformed ones are refused by name."""

from __future__ import annotations

import math
import textwrap

import pytest

import distillscope as ds
from distillscope import papers

VALID = """
[paper]
arxiv = "0000.00000"
title = "A paper"
authors = "A. Author"
venue = "arXiv preprint"
year = 2026

[conventions.rank]
name = "author_0000_00000"
quantity = "effective rank"
features = "embedding"
rows = "images"
centred = true
normalisation = "none"
spectrum = "eigenvalues of the covariance"
formula = "exp(H(p))"
aggregation = "one value over the dataset"
source = "Eq. 1"
status = "verified"
eps = 1e-10

[[numbers]]
model = "m"
timm = ""
role = "teacher"
method = ""
dataset = "CIFAR-10"
split = "test"
n_images = 10000
representation = "embedding"
metric = "effective_rank"
convention = "author_0000_00000"
value = 12
unit = ""
where = "Table 1"
status = "verified"
"""


def test_every_shipped_entry_is_well_formed():
    entries = papers.load()
    assert len(entries) >= 1
    for entry in entries.values():
        assert entry.paper.title and entry.paper.year >= 1990
        for number in entry.numbers:
            assert math.isfinite(number.value) and number.where, (entry.id, number)
            if number.status == "provisional":  # says why
                assert number.note, (entry.id, number)
        for convention in entry.conventions.values():
            if convention.status == "provisional":
                assert convention.note, (entry.id, convention.key)


def test_a_valid_file_loads_with_its_types(tmp_path):
    path = tmp_path / "author_0000_00000.toml"
    path.write_text(VALID)
    entry = papers.load_file(path)
    assert entry.id == "author_0000_00000"
    assert entry.numbers[0].value == 12.0 and isinstance(entry.numbers[0].value, float)
    assert entry.convention("author_0000_00000").eps == 1e-10
    with pytest.raises(ds.InputError, match="no convention named 'other'"):
        entry.convention("other")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('year = 2026', 'year = "2026"'), r"\[paper\]: 'year' must be int"),
    (lambda t: t.replace('title = "A paper"\n', ''), r"\[paper\]: key 'title' is missing"),
    (lambda t: t.replace('value = 12', 'value = nan'), r"numbers\[0\]: 'value' must be finite"),
    (lambda t: t.replace('value = 12', 'value = "about 16"'), r"numbers\[0\]: 'value' must be"),
    (lambda t: t.replace('role = "teacher"', 'role = "boss"'), r"numbers\[0\]: role must be"),
    (lambda t: t.replace('convention = "author_0000_00000"', 'convention = "nope"'),
     r"numbers\[0\]: convention 'nope' is not declared"),
    (lambda t: t.replace('where = "Table 1"\nstatus = "verified"', 'where = "Table 1"\n'
                         'status = "guessed"'), r"numbers\[0\]: status must be one of"),
    (lambda t: t.replace('centred = true', 'centred = "yes"'),
     r"\[conventions.rank\]: 'centred' must be bool"),
    (lambda t: t + '\n[extra]\nx = 1\n', r"unknown table 'extra'"),
    (lambda t: t.replace('unit = ""', 'unit = ""\nunits = "%"'), r"numbers\[0\]: unknown key 'units'"),
    (lambda t: t.replace('[paper]', '[paper'), r"cannot read as TOML"),
])
def test_a_malformed_file_is_refused_naming_the_file_and_key(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit(textwrap.dedent(VALID)))
    with pytest.raises(ds.InputError, match=message) as info:
        papers.load_file(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_numbers_filters_by_field_and_refuses_unknown_names():
    entry = next(iter(papers.load()))
    assert papers.numbers(entry) == list(papers.load()[entry].numbers)
    with pytest.raises(ds.InputError, match="no entry 'nope'"):
        papers.numbers("nope")
    with pytest.raises(ds.InputError, match="cannot match on 'colour'"):
        papers.numbers(entry, colour="red")


def test_the_seed_paper_entry_holds_table_one_and_the_notebook_std():
    """arXiv 2603.06698, v1 Table I: teacher 88.68, students 15.91 / 16.62 / 16.66 (3-seed
    averages of the spectrum); probe accuracies are 3-seed means with np.std (ddof 0)."""
    ranks = {n.model.split()[0]: n.value for n in papers.numbers(
        "arxiv_2603_06698", metric="effective_rank", where="v1 Table I (3-seed average)")}
    assert ranks == {"Student-S": 15.91, "Student-M": 16.62, "Student-L": 16.66}
    teacher = papers.numbers("arxiv_2603_06698", metric="effective_rank", role="teacher")
    assert [n.value for n in teacher] == [88.68] and teacher[0].status == "verified"
    probe = papers.load()["arxiv_2603_06698"].convention("arxiv_2603_06698_probe")
    assert "ddof = 0" in probe.aggregation
    clean = papers.numbers("arxiv_2603_06698", metric="probe_accuracy", model="Student-S (width x1)",
                           condition="gaussian_noise sigma=0 (normalized space)")
    assert [n.value for n in clean] == [71.11]


def test_docs_list_every_paper():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "papers.md").read_text()
    begin, end = "<!-- papers:begin -->", "<!-- papers:end -->"
    table = text[text.index(begin) + len(begin):text.index(end)].strip()
    assert table == papers.summary_markdown(), (
        "docs/papers.md is out of date; paste distillscope.papers.summary_markdown() between "
        "the papers markers")


def test_the_papers_command_prints_every_verified_value_with_where_it_is(capsys):
    from distillscope.cli import main

    assert main(["papers", "--status", "verified"]) == 0
    out = capsys.readouterr().out
    for entry in papers.load().values():
        assert out.count(f"{entry.id}: ") == 1
        for n in entry.numbers:
            if n.status == "verified":
                assert f"{n.value:>10g}" in out and n.where in out
    assert main(["papers", "nope"]) == 2
    assert "no entry 'nope'" in capsys.readouterr().err


def test_every_registry_convention_is_a_named_convention_or_says_why_not():
    from distillscope.conventions import NOT_COMPUTABLE, REGISTRY_CONVENTIONS
    from distillscope.metrics.registry import metrics

    names = {c.name for e in papers.load().values() for c in e.conventions.values()}
    assert names == set(REGISTRY_CONVENTIONS) | set(NOT_COMPUTABLE)
    assert not set(REGISTRY_CONVENTIONS) & set(NOT_COMPUTABLE)
    for name, (library, chosen) in REGISTRY_CONVENTIONS.items():
        assert library in ds.CONVENTIONS, name
        assert chosen and all(m in metrics() for m in chosen), name
    for name in ("arxiv_2603_06698", "tian_2511_15572_per_image", "tian_2511_15572_dataset",
                 "agrawal_neurips2022", "kornblith_1905_00414"):
        assert name in names and name in ds.CONVENTIONS
    # every number with a convention that features can follow names a computable one
    for entry in papers.load().values():
        for n in entry.numbers:
            if n.convention:
                assert n.convention in names, (entry.id, n.convention)
