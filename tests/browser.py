"""Open an HTML page in a real headless Chromium (Debian `chromium`): the DOM after load with
what the page's images decoded to, console errors, and a screenshot."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

# Appended to a copy of the page: after load, record every image's natural size and any
# uncaught error into the DOM, where --dump-dom shows them.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return [i.alt, i.complete, i.naturalWidth, i.naturalHeight]; });
  var pre = document.createElement('pre');
  pre.id = '__probe';
  pre.textContent = JSON.stringify({images: imgs, errors: window.__errors});
  document.body.appendChild(pre);
});
</script>"""
CONSOLE_ERROR = re.compile(r"Uncaught|ERROR:CONSOLE|:CONSOLE\(\d+\)\] \"?(?:Error|TypeError)")


@dataclass
class Opened:
    dom: str
    images: list[list]  # [alt, complete, naturalWidth, naturalHeight]
    errors: list[str]  # uncaught errors in the page and console errors in Chromium's log
    screenshot: Path


def _chromium(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    home = tempfile.mkdtemp(prefix="chromium-home-")
    try:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-extensions", "--enable-logging=stderr", "--v=0",
             f"--user-data-dir={home}", *args],
            capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "HOME": home})
    finally:
        shutil.rmtree(home, ignore_errors=True)


def open_page(page: Path, screenshot: Path, height: int = 2400) -> Opened:
    """Load `page` (a file) in Chromium; screenshot it to `screenshot` (also copied to
    tests/artifacts/)."""
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    try:
        run = _chromium(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()])
    finally:
        probe.unlink()
    m = re.search(r'<pre id="__probe">(.*?)</pre>', run.stdout, re.S)
    found = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&")) if m else {
        "images": [], "errors": ["probe missing: the page did not finish loading"]}
    errors = list(found["errors"]) + [ln for ln in run.stderr.splitlines()
                                      if CONSOLE_ERROR.search(ln)]
    shot = _chromium([f"--screenshot={screenshot}", f"--window-size=1280,{height}",
                      "--hide-scrollbars", page.as_uri()])
    assert screenshot.is_file(), shot.stderr[-2000:]
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(screenshot, ARTIFACTS / screenshot.name)
    return Opened(run.stdout, found["images"], errors, screenshot)
