"""The documentation follows the code: the metric registry's table in docs/metrics.md, the
store schema's tables in docs/store-format.md, every metric's definition anchor, and the worked
example of CONTRIBUTING.md."""

from __future__ import annotations

import re
from pathlib import Path

from distillscope.metrics.registry import markdown_table, metrics

ROOT = Path(__file__).resolve().parents[1]
METRICS_MD = (ROOT / "docs" / "metrics.md").read_text()


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading slugs and explicit ``<a id="...">`` of a Markdown page."""
    ids = set(re.findall(r'<a id="([^"]+)"', markdown))
    for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        ids.add(slug)
    return ids


def test_the_registry_table_in_the_docs_is_the_registry():
    block = re.search(r"<!-- registry:begin -->\n(.*?)\n<!-- registry:end -->", METRICS_MD,
                      flags=re.S)
    assert block, "docs/metrics.md lost its registry table"
    assert block.group(1).strip() == markdown_table(), (
        "docs/metrics.md's registry table is out of date: replace it with the output of "
        "`distillscope metrics --markdown`")


def test_every_metric_links_to_its_definition():
    anchors = _anchors(METRICS_MD)
    missing = {name: m.anchor for name, m in metrics().items() if m.anchor not in anchors}
    assert not missing, f"anchors not in docs/metrics.md: {missing}"


def test_the_schema_tables_in_the_docs_are_the_schema():
    from distillscope.store.schema import schema_markdown

    text = (ROOT / "docs" / "store-format.md").read_text()
    block = re.search(r"<!-- schema:begin -->\n(.*?)\n<!-- schema:end -->", text, flags=re.S)
    assert block, "docs/store-format.md lost its schema tables"
    assert block.group(1).strip() == schema_markdown(), (
        "docs/store-format.md's schema tables are out of date: replace them with "
        "distillscope.store.schema.schema_markdown()")
