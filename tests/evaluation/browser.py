"""Open a page in headless Chromium: a screenshot, and what a person would see broken on it (images
that did not load, charts without data marks, script errors). A checker script is added to a copy of
the page; the page itself is left as it is."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--virtual-time-budget=5000"]
ERROR_LISTENER = ("<script>window.__pageErrors=[];window.addEventListener('error',function(e){"
                  "window.__pageErrors.push(String(e.message||e.type))},true);</script>")
CHECKER = """<script>window.addEventListener('load',function(){
var broken=[].filter.call(document.images,function(i){return !i.complete||i.naturalWidth===0})
  .map(function(i){return i.alt||i.src.slice(0,60)});
var svgs=document.querySelectorAll('svg');
var empty=[].filter.call(svgs,function(s){return s.querySelectorAll(
  'circle,polyline,path,rect:not(.legend):not(.axis)').length===0})
  .map(function(s){return s.getAttribute('aria-label')||'svg'});
var out=document.createElement('pre');out.id='page-check';
out.textContent=JSON.stringify({images:document.images.length,charts:svgs.length,broken:broken,empty:empty,
  errors:window.__pageErrors});
document.body.appendChild(out);});</script>"""


@dataclass(frozen=True)
class PageCheck:
    images: int
    charts: int
    broken_images: list[str]
    empty_charts: list[str]
    script_errors: list[str]
    screenshot: Path

    @property
    def problems(self) -> list[str]:
        return ([f"broken image: {name}" for name in self.broken_images]
                + [f"empty chart: {name}" for name in self.empty_charts]
                + [f"script error: {error}" for error in self.script_errors])


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM, "chromium is not installed (infra/install_chromium.sh)"
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=120)


def check_page(page: Path, workdir: Path) -> PageCheck:
    """Load `page` (a copy beside it, so relative links resolve) and screenshot it into `workdir`."""
    source = page.read_text()
    with_head = re.sub(r"(<head[^>]*>)", r"\1" + ERROR_LISTENER.replace("\\", "\\\\"), source, count=1)
    if with_head == source:
        with_head = ERROR_LISTENER + source
    probe = page.with_name(f".{page.stem}.checked.html")
    probe.write_text(with_head.replace("</body>", CHECKER + "</body>") if "</body>" in with_head
                     else with_head + CHECKER)
    try:
        dumped = _chromium("--enable-logging=stderr", "--v=0", "--dump-dom", probe.as_uri())
        match = re.search(r'<pre id="page-check">(.*?)</pre>', dumped.stdout, re.S)
        assert match, f"the page never finished loading:\n{dumped.stderr[-2000:]}"
        found = json.loads(match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                           .replace("&amp;", "&"))
        uncaught = [line for line in dumped.stderr.splitlines() if "Uncaught" in line]
        screenshot = workdir / f"{page.stem}.png"
        _chromium(f"--screenshot={screenshot}", "--window-size=1280,2000", page.as_uri())
    finally:
        probe.unlink(missing_ok=True)
    return PageCheck(found["images"], found["charts"], found["broken"], found["empty"],
                     found["errors"] + [u for u in uncaught if not any(e in u for e in found["errors"])], screenshot)
