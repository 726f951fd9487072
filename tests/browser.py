"""Headless Chromium (Debian's ``chromium``) for the report's tests: run a page's scripts, read
the attributes its ``<body>`` ends with, its console errors, and a screenshot. WebGL2 comes from
SwiftShader (no GPU needed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


def chromium() -> str:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian package chromium: make browser-deps)")
    return browser


@dataclass
class Loaded:
    body: dict[str, str]
    console_errors: list[str]
    screenshot: Path | None


FLAGS = [
    "--headless",
    "--no-sandbox",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-gpu-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1200,1500",
    "--virtual-time-budget=20000",
]


def open_page(
    page: Path, profile: Path, fragment: str = "", screenshot: Path | None = None
) -> Loaded:
    """Load ``page`` (with ``#fragment``), let its scripts run, and return what it shows."""
    browser = chromium()
    url = page.as_uri() + (f"#{fragment}" if fragment else "")
    common = [*FLAGS, f"--user-data-dir={profile}"]
    dumped = subprocess.run(
        [browser, *common, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True, encoding="utf-8", errors="replace", timeout=300, check=True,
    )  # fmt: skip
    match = re.search(r"<body([^>]*)>", dumped.stdout)
    assert match is not None, dumped.stdout[:500]
    body = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))
    errors = [
        line for line in dumped.stderr.splitlines()
        if re.search(r":(ERROR|WARNING):CONSOLE", line)
    ]  # fmt: skip
    if screenshot is not None:
        subprocess.run(
            [browser, *common, f"--screenshot={screenshot}", url],
            capture_output=True, timeout=300, check=True,
        )  # fmt: skip
    return Loaded(body, errors, screenshot)


def check_viewer_on_lesion(folder: Path, tmp_path: Path, lesion: int = 2) -> Loaded:
    """``folder``'s report.html, opened with lesion ``lesion`` "clicked": the viewer is ready,
    without console errors, and both views' cursors sit on that lesion's centre (lesions.csv)."""
    import csv
    import json

    with (folder / "lesions.csv").open() as handle:
        row = next(r for r in csv.DictReader(handle) if int(r["lesion_id"]) == lesion)
    centre = [float(row[f"mni_{axis}_mm"]) for axis in "xyz"]
    loaded = open_page(
        folder / "report.html", tmp_path / "profile", f"lesion={lesion}", tmp_path / "viewer.png"
    )
    assert loaded.body.get("data-viewer") == "ready", loaded.body
    assert loaded.console_errors == []
    assert loaded.body["data-selected-lesion"] == str(lesion)
    for view in ("data-cursor-baseline", "data-cursor-followup"):
        cursor = json.loads(loaded.body[view].replace("&quot;", '"'))
        # The cursor snaps to the voxel (1 mm) that holds the centre.
        assert max(abs(a - b) for a, b in zip(cursor, centre, strict=True)) <= 0.51, (view, centre)
    return loaded
