"""A report measured in headless Chromium, as a reader at 1280 x 900 sees it.

The page itself runs no script (its policy forbids it), so a copy is measured: the policy is
dropped and a script added that writes, into the DOM Chromium dumps, the page's scroll width
and every element that hides content behind a sideways scroll (an overflowing element whose
``overflow-x`` clips or scrolls, or a table wider than the window). Console messages come back
on standard error.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser",
                             "/usr/bin/google-chrome") if shutil.which(p)), None)

_MEASURE = """<script>
addEventListener("load", () => {
  const width = window.innerWidth, hidden = [];
  for (const el of document.querySelectorAll("body *")) {
    const style = getComputedStyle(el);
    if (["auto", "scroll", "hidden", "clip"].includes(style.overflowX)
        && el.scrollWidth > el.clientWidth + 1) hidden.push(el.tagName + " clips");
    if (el.tagName === "TABLE" && el.getBoundingClientRect().right > width + 0.5)
      hidden.push("TABLE wider than the window");
  }
  const out = {width: width, scrollWidth: document.documentElement.scrollWidth,
               hidden: hidden};
  document.body.setAttribute("data-measure", JSON.stringify(out));
});
</script>"""


def measure(page: Path, folder: Path, width: int = 1280, height: int = 900) -> dict:
    """``{"width", "scrollWidth", "hidden": [...], "console": [...]}`` of ``page``."""
    text = page.read_text()
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text, count=1)
    copy = folder / "measured.html"
    copy.write_text(text.replace("</body>", _MEASURE + "</body>", 1))
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", f"--user-data-dir={folder / 'profile'}",
         f"--window-size={width},{height}", "--hide-scrollbars", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()],
        capture_output=True, text=True, timeout=180)
    found = re.search(r'data-measure="([^"]*)"', proc.stdout)
    assert proc.returncode == 0 and found, proc.stderr[-2000:]
    out = json.loads(found.group(1).replace("&quot;", '"'))
    out["console"] = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    return out
