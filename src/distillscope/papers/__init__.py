"""The papers registry: published numbers with the exact conventions they were computed under.

Papers report "effective rank", "dimensionality" or "alignment" under definitions that differ in
centring, normalisation, eps, singular values against variances, tokens against CLS, per image
against dataset level, and in how images, seeds and layers are aggregated. The registry keeps,
for every number a paper published, the model, the data, the representation, the complete
convention, the value, where it is in the paper and a status:

``verified``
    read in the paper's text or tables, or recomputed from its released code;
``provisional``
    read off a figure, taken from a secondary source, or computed under a convention that had
    to be inferred. Never a guess: a number nobody could read is not in the registry.

One human-readable TOML file per paper lives in ``distillscope/papers/`` (``docs/papers.md``
describes the format and lists the papers). ``load()`` reads and checks every file, naming the
file and the key of whatever is malformed.

Examples
--------
>>> from distillscope import papers
>>> seed = papers.load()["arxiv_2603_06698"]
>>> seed.paper.arxiv
'2603.06698'
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .._errors import InputError

__all__ = ["Paper", "PaperConvention", "PublishedNumber", "Entry", "load", "load_file",
           "numbers", "table", "summary_markdown", "STATUSES", "ROLES"]

STATUSES = ("verified", "provisional")
ROLES = ("teacher", "student", "standalone")


@dataclass(frozen=True)
class Paper:
    """Bibliographic record of one paper."""

    arxiv: str
    title: str
    authors: str
    venue: str
    year: int
    code: str = ""
    versions: tuple[str, ...] = ()
    code_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class PaperConvention:
    """How a paper computed a quantity: every choice that changes the number."""

    key: str
    name: str
    quantity: str
    features: str
    rows: str
    centred: bool
    normalisation: str
    spectrum: str
    formula: str
    aggregation: str
    source: str
    status: str
    eps: float | None = None
    note: str = ""


@dataclass(frozen=True)
class PublishedNumber:
    """One number a paper printed (or showed), with what it was computed on and where it is."""

    model: str
    timm: str
    role: str
    method: str
    dataset: str
    split: str
    n_images: int
    representation: str
    metric: str
    convention: str
    value: float
    unit: str
    where: str
    status: str
    condition: str = ""
    note: str = ""


@dataclass(frozen=True)
class Entry:
    """One registry file: the paper, its conventions (by key) and its numbers."""

    id: str
    paper: Paper
    conventions: dict[str, PaperConvention]
    numbers: tuple[PublishedNumber, ...]

    def convention(self, name: str) -> PaperConvention:
        """The convention registered under ``name`` (its ``name``, not its table key)."""
        for c in self.conventions.values():
            if c.name == name:
                return c
        raise InputError(f"{self.id}: no convention named {name!r}; it has "
                         f"{', '.join(c.name for c in self.conventions.values()) or 'none'}")


# --------------------------------------------------------------------------------- reading
_PAPER = {"arxiv": str, "title": str, "authors": str, "venue": str, "year": int}
_PAPER_OPTIONAL = {"code": str, "versions": list, "code_files": list}
_CONVENTION = {"name": str, "quantity": str, "features": str, "rows": str, "centred": bool,
               "normalisation": str, "spectrum": str, "formula": str, "aggregation": str,
               "source": str, "status": str}
_CONVENTION_OPTIONAL = {"eps": float, "note": str}
_NUMBER = {"model": str, "timm": str, "role": str, "method": str, "dataset": str, "split": str,
           "n_images": int, "representation": str, "metric": str, "convention": str,
           "value": float, "unit": str, "where": str, "status": str}
_NUMBER_OPTIONAL = {"condition": str, "note": str}


def _fields(table: Any, required: dict, optional: dict, where: str) -> dict[str, Any]:
    """``table``'s values, each checked against its declared type; unknown keys refused."""
    if not isinstance(table, dict):
        raise InputError(f"{where}: expected a table; got {type(table).__name__}")
    unknown = sorted(set(table) - set(required) - set(optional))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r}; the keys are "
                         f"{', '.join([*required, *optional])} (docs/papers.md)")
    out = {}
    for key, kind in [*required.items(), *optional.items()]:
        if key not in table:
            if key in required:
                raise InputError(f"{where}: key {key!r} is missing (docs/papers.md)")
            continue
        value = table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InputError(f"{where}: {key!r} must be {kind.__name__}; got {value!r}")
        if kind is float and not math.isfinite(value):
            raise InputError(f"{where}: {key!r} must be finite; got {value!r}")
        if key == "status" and value not in STATUSES:
            raise InputError(f"{where}: status must be one of {', '.join(STATUSES)}; got "
                             f"{value!r}")
        out[key] = tuple(value) if kind is list else value
    return out


def load_file(path: str | Path) -> Entry:
    """Read and check one registry file (its id is the file name without ``.toml``).

    Raises
    ------
    InputError
        Naming the file and the key that is missing, of the wrong type or out of range.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise InputError(f"{path}: cannot read as TOML ({err})") from None
    paper = Paper(**_fields(data.get("paper"), _PAPER, _PAPER_OPTIONAL, f"{path}: [paper]"))
    conventions = {
        key: PaperConvention(key=key, **_fields(table, _CONVENTION, _CONVENTION_OPTIONAL,
                                                f"{path}: [conventions.{key}]"))
        for key, table in data.get("conventions", {}).items()
    }
    names = [c.name for c in conventions.values()]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: convention names repeat: {', '.join(sorted(names))}")
    published = []
    for i, table in enumerate(data.get("numbers", [])):
        where = f"{path}: numbers[{i}]"
        number = PublishedNumber(**_fields(table, _NUMBER, _NUMBER_OPTIONAL, where))
        if number.role not in ROLES:
            raise InputError(f"{where}: role must be one of {', '.join(ROLES)}; got "
                             f"{number.role!r}")
        if number.convention and number.convention not in names:
            raise InputError(f"{where}: convention {number.convention!r} is not declared in "
                             f"[conventions] (declared: {', '.join(names) or 'none'})")
        published.append(number)
    unknown = sorted(set(data) - {"paper", "conventions", "numbers"})
    if unknown:
        raise InputError(f"{path}: unknown table {unknown[0]!r}; expected paper, conventions, "
                         "numbers (docs/papers.md)")
    return Entry(path.stem, paper, conventions, tuple(published))


@cache
def load() -> dict[str, Entry]:
    """Every registry file shipped with distillscope, by id (file name without ``.toml``)."""
    folder = resources.files(__name__)
    entries = [load_file(Path(str(item))) for item in folder.iterdir()
               if item.name.endswith(".toml")]
    return {e.id: e for e in sorted(entries, key=lambda e: e.id)}


def numbers(paper: str, **match: Any) -> list[PublishedNumber]:
    """The numbers of registry entry ``paper`` whose fields equal ``match``.

    Examples
    --------
    >>> [n.value for n in numbers("arxiv_2603_06698", metric="effective_rank", role="teacher",
    ...                           split="test")][:1]
    [88.68]
    """
    entries = load()
    if paper not in entries:
        raise InputError(f"papers: no entry {paper!r}; the registry has {', '.join(entries)}")
    fields = PublishedNumber.__dataclass_fields__
    bad = sorted(set(match) - set(fields))
    if bad:
        raise InputError(f"papers: cannot match on {bad[0]!r}; fields are {', '.join(fields)}")
    return [n for n in entries[paper].numbers
            if all(getattr(n, key) == value for key, value in match.items())]


def table():
    """Every published number as one tidy ``pandas.DataFrame``: a row per number, its paper
    (``paper``, ``arxiv``, ``year``), its fields, and its convention's choices (``centred``,
    ``normalisation``, ``spectrum``, ``eps``, ``rows``, ``aggregation``, ``convention_status``;
    empty where the number has no convention, such as an accuracy).

    Examples
    --------
    >>> t = table()
    >>> t.loc[(t.paper == "arxiv_2603_06698") & (t.metric == "effective_rank")
    ...       & (t.role == "teacher"), "value"].tolist()
    [88.68]
    """
    import pandas as pd

    rows = []
    for entry in load().values():
        by_name = {c.name: c for c in entry.conventions.values()}
        for n in entry.numbers:
            c = by_name.get(n.convention)
            rows.append({
                "paper": entry.id, "arxiv": entry.paper.arxiv, "year": entry.paper.year,
                **{f: getattr(n, f) for f in PublishedNumber.__dataclass_fields__},
                "centred": c.centred if c else None,
                "normalisation": c.normalisation if c else "",
                "spectrum": c.spectrum if c else "", "eps": c.eps if c else None,
                "rows": c.rows if c else "", "aggregation": c.aggregation if c else "",
                "convention_status": c.status if c else ""})
    return pd.DataFrame(rows)


def summary_markdown() -> str:
    """The registry as the table of ``docs/papers.md`` (one row per paper)."""
    lines = ["| id | paper | conventions | numbers (verified / provisional) |",
             "|---|---|---|---|"]
    for entry in load().values():
        p = entry.paper
        authors = [a.strip() for a in p.authors.split(",") if a.strip()]
        paper = authors[0].split()[-1] + (" et al." if len(authors) > 1 else "")
        paper += f", {p.venue}" + ("" if str(p.year) in p.venue else f" {p.year}")
        if p.arxiv:
            paper += f", arXiv {p.arxiv}"
        names = ", ".join(f"`{c.name}` ({c.status})" for c in entry.conventions.values()) or "-"
        verified = sum(n.status == "verified" for n in entry.numbers)
        lines.append(f"| `{entry.id}` | {paper} | {names} | {verified} / "
                     f"{len(entry.numbers) - verified} |")
    return "\n".join(lines)
