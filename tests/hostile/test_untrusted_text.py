"""Strings from a store are text in the report: escaped, and a policy that runs no script and
loads nothing from elsewhere. Checked in headless Chromium where it is installed."""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import distillscope as ds
from conftest import write_store
from distillscope.report import write_report

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser",
                             "/usr/bin/google-chrome") if Path(p).exists()), None)
IMG = "<img src=x onerror=alert(1)>"
TITLE = "<img src=x onerror=\"document.title='PWNED'\">"
SCRIPT = "<script>document.title='PWNED'</script>"  # an attribute value ('/' allowed)
SVG = "<svg onload=\"document.title='PWNED'\">"  # a condition name (no '/')


class _Elements(HTMLParser):
    """Every element's tag and attribute names of a page."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)


def _no_active_content(text: str) -> None:
    elements = _Elements(text)
    assert not elements.tags & {"script", "svg", "iframe", "object", "embed", "link"}
    assert not [a for a in elements.attributes if a.startswith("on")]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("xss")
    rng = np.random.default_rng(0)
    z = rng.standard_normal((80, 6))
    layers = {("teacher", c, "embedding"): (z @ rng.standard_normal((6, 12))).astype("f4")
              for c in ("clean", SVG)}
    for name in (IMG, TITLE):
        for c in ("clean", SVG):
            layers[(name, c, "embedding")] = (z[:, :4] @ rng.standard_normal((4, 8))).astype("f4")
    store = write_store(folder / "s.h5", layers, conditions=("clean", SVG),
                        models={IMG: {"family": SCRIPT}})
    return write_report(ds.analyze(store), folder / "report.html")


def test_store_strings_are_escaped_and_the_page_runs_nothing(page):
    text = page.read_text()
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert not any(s in text for s in (IMG, TITLE, SCRIPT, SVG))
    _no_active_content(text)
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text) is None  # nothing remote


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian package chromium)")
def test_headless_chromium_shows_the_names_as_text(page, tmp_path):
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert "&lt;img src=x onerror=alert(1)&gt;" in dom  # shown as text
    _no_active_content(dom)  # the names never became elements
    title = re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert "PWNED" not in title  # no script ran
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console  # no error, no blocked load, no script output
