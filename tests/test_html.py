"""The html view in a real browser: headless Chromium (Debian's package, installed by .ci/run)
loads the page from disk with the network off, and the test reads the DOM it built and a
screenshot it took."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler import views
from tests.planning import Project

pytestmark = pytest.mark.anyio

BROWSER = next(
    (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)),
    None,
)
if BROWSER is None and os.environ.get("CI"):
    raise RuntimeError("CI must install Chromium (.ci/run does: apt-get install chromium)")
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine")

SPECS = """
apiVersion: reconciler/v1
kind: Lookup
metadata: {name: bad_ips, domains: [initech, globex, umbrella]}
spec:
  csv:
    file: data/bad_ips.csv
    hasHeader: true
    columns: [{name: ip, type: IP4}, {name: reason, type: STRING}]
    key: {type: column, column: ip}
---
apiVersion: reconciler/v1
kind: Lookup
metadata: {domain: initech, name: admins}
spec:
  staticQuery: {query: "from siem.logtrust.web.activity select user, role", key: {type: column, column: user}}
"""
OVERLAY = """
apiVersion: reconciler/v1
kind: Overlay
metadata: {domain: globex, name: bad_ips}
spec: {visibility: all-subdomains}
"""


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert BROWSER is not None
    return subprocess.run(
        [
            BROWSER,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--proxy-server=127.0.0.1:9",  # nothing may load from the network
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@needs_browser
async def test_the_html_plan_renders_the_grid_in_a_browser(tmp_path: Path) -> None:
    project = Project(tmp_path)
    (project.specs / "data" / "bad_ips.csv").write_text("ip,reason\n10.0.0.9,scanner<script>\n")
    project.write(SPECS)
    assert await project.apply() == 0
    project.write(
        SPECS, OVERLAY, "apiVersion: reconciler/v1\nkind: Domain\nmetadata: {name: acme}\n"
    )
    run = await project.plan()
    page = tmp_path / "plan.html"
    page.write_text(views.plan_view("html")(run.plan))
    assert not re.search(r'(src|href)="(https?:)?//', page.read_text())  # self-contained

    # One browser start for both (0.6 CPU-s each): the page's DOM once its script has run, and
    # a screenshot of it.
    shot = tmp_path / "plan.png"
    dom = _chromium(
        "--dump-dom", "--window-size=900,400", f"--screenshot={shot}", page.as_uri()
    ).stdout
    assert 'id="grid"' in dom and "Plan: 0 to add, 1 to change, 0 to destroy." in dom
    headers = re.findall(r"<th>([^<]*)</th>", dom)
    assert headers == ["lookup", "globex", "initech", "umbrella", "admins", "bad_ips"]
    assert re.search(r'<tr><th>admins</th>\s*<td class="none"></td>', dom)  # not in globex
    cell = re.search(r'<td class="update" data-address="globex/bad_ips">(.*?)</td>', dom, re.S)
    assert cell is not None, dom
    assert "<summary>update</summary>" in cell.group(1)
    assert "visibility" in cell.group(1) and "overlay" in cell.group(1)
    for address in ("initech/bad_ips", "umbrella/bad_ips", "initech/admins"):
        assert re.search(rf'<td class="noop" data-address="{address}">no change</td>', dom)
    assert "<script>" not in dom.split("<body>", 1)[1]  # cell text is escaped, never markup

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000


def test_the_html_plan_escapes_every_name_and_value_without_a_browser() -> None:
    """What a live lookup or a cell can hold never becomes markup (issue 27, item 6)."""
    from html.parser import HTMLParser

    from reconciler.plan.model import Action, AttributeChange, Change, Plan
    from reconciler.views.html import plan as render

    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    change = Change(
        address=f"acme/{hostile}",
        domain="acme",
        name=hostile,
        action=Action.UPDATE,
        reason=hostile,
        diff=[AttributeChange(path="recipe.source.query", before=hostile, after="from a")],
    )
    page = render(Plan(changes=(change,), unmanaged=(f"acme/{hostile}-2",), warnings=(hostile,)))
    tags: list[str] = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag)
            assert not any(name.startswith("on") for name, _ in attrs), attrs

    Tags().feed(page)
    assert "script" not in tags and "img" not in tags, tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
