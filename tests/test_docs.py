"""The documentation site: it builds offline with warnings as errors, every command has its page
with an example, and its pages open in headless Chromium without a broken link."""

from __future__ import annotations

import os
import re
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
    """Each top-level page loads from the disk with its content and no console error."""
    from tests.browser import chromium, open_page

    chromium()
    for page in sorted(site.glob("*.html")):
        if page.name == "404.html":
            continue
        loaded = open_page(page, tmp_path / "profile")
        assert loaded.console_errors == [], (page.name, loaded.console_errors)
    dom = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--dump-dom", (site / "index.html").as_uri()],
        capture_output=True, encoding="utf-8", errors="replace", timeout=120, check=True,
    ).stdout  # fmt: skip
    assert re.search(r"<h1[^>]*>Getting started", dom)
