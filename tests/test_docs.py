"""The documentation site: it builds offline with warnings as errors, every command has its page
with an example, and its pages open in headless Chromium without a broken link."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mkdocs", reason="mkdocs is a development dependency (make install)")
    folder = tmp_path_factory.mktemp("site")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return folder


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.targets.append(value)


def test_every_command_has_a_page_with_its_example(site: Path) -> None:
    from msnewlesions.cli import command_paths

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from mkdocs_hooks import page_name
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    commands = command_paths()
    assert ["segment"] in commands and ["model", "prepare"] in commands
    for command in commands:
        page = (site / "commands" / f"{page_name(command)}.html").read_text(encoding="utf-8")
        assert f"msnewlesions {' '.join(command)}" in page
        assert "Example: msnewlesions" in page, command


def test_no_page_links_to_a_missing_file(site: Path) -> None:
    # 404.html is for a web server (its links start at the server's root), not for the disk.
    pages = sorted(p for p in site.rglob("*.html") if p.name != "404.html")
    assert len(pages) > 20
    broken = []
    for page in pages:
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for target in parser.targets:
            parts = urlsplit(target)
            if parts.scheme or target.startswith(("#", "mailto:", "//")) or not parts.path:
                continue
            if not (page.parent / unquote(parts.path)).exists():
                broken.append(f"{page.relative_to(site)} -> {target}")
    assert broken == []


def test_the_pages_open_in_headless_chromium(site: Path, tmp_path: Path) -> None:
    """Each top-level page loads from the disk, one after the other in one browser, with its
    content and without a console error or warning, an uncaught exception or a failed load."""
    from tests.browser import DevToolsPage, chromium

    chromium()
    browser = DevToolsPage(site / "404.html", tmp_path / "profile")
    try:
        browser.call("Runtime.enable")
        browser.call("Log.enable")
        for page in sorted(site.glob("*.html")):
            if page.name == "404.html":
                continue
            browser.events.clear()
            browser.call("Page.navigate", url=page.as_uri())
            url = json.dumps(page.as_uri())
            browser.wait_for(f"location.href === {url} && document.readyState === 'complete'")
            # A tenth of a second more for what the page's scripts do once it has loaded.
            browser.call(
                "Runtime.evaluate",
                expression="new Promise(done => setTimeout(done, 100))",
                awaitPromise=True,
            )
            assert browser.console_problems() == [], page.name
            if page.name == "index.html":
                title = str(browser.evaluate("document.querySelector('h1').textContent"))
                assert title.startswith("Getting started"), title
    finally:
        browser.close()
