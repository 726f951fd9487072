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
    """Load ``page`` (with ``#fragment``), let its scripts run, and return what it shows: the
    DOM and the screenshot come from the same load."""
    url = page.as_uri() + (f"#{fragment}" if fragment else "")
    shot = [f"--screenshot={screenshot}"] if screenshot is not None else []
    dumped = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
         *shot, "--dump-dom", url],
        capture_output=True, encoding="utf-8", errors="replace", timeout=300, check=True,
    )  # fmt: skip
    match = re.search(r"<body([^>]*)>", dumped.stdout)
    assert match is not None, dumped.stdout[:500]
    body = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(1)))
    errors = [
        line for line in dumped.stderr.splitlines()
        if re.search(r":(ERROR|WARNING):CONSOLE", line)
    ]  # fmt: skip
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


class DevToolsPage:
    """A page in a headless Chromium driven over the DevTools protocol, for what ``--dump-dom``
    cannot do: wheel turns, clicks and key presses, then reading the page back."""

    def __init__(self, page: Path, profile: Path, fragment: str = "") -> None:
        import socket
        import time
        import urllib.request

        from tornado.ioloop import IOLoop

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        flags = [flag for flag in FLAGS if not flag.startswith("--virtual-time-budget")]
        self._process = subprocess.Popen(
            [chromium(), *flags, f"--user-data-dir={profile}",
             f"--remote-debugging-port={port}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self._loop = IOLoop(make_current=False)
        self._counter = 0
        #: The protocol's events (messages that answer no call), in order, as they were read.
        self.events: list[dict] = []
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        self._socket = self._loop.run_sync(lambda: self._connect(port), timeout=60)
        url = page.as_uri() + (f"#{fragment}" if fragment else "")
        self.call("Page.navigate", url=url)

    async def _connect(self, port: int):  # type: ignore[no-untyped-def]
        import json
        import urllib.request

        from tornado.websocket import websocket_connect

        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json").read())
        target = next(t for t in targets if t["type"] == "page")
        return await websocket_connect(target["webSocketDebuggerUrl"], max_message_size=1 << 30)

    def call(self, method: str, **params: object) -> dict:
        import json

        self._counter += 1
        number = self._counter

        async def exchange() -> dict:
            request = {"id": number, "method": method, "params": params}
            self._socket.write_message(json.dumps(request))
            while True:
                message = json.loads(await self._socket.read_message())
                if message.get("id") == number:
                    return message
                if "id" not in message:
                    self.events.append(message)

        return self._loop.run_sync(exchange, timeout=120)

    def evaluate(self, expression: str) -> object:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"]["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 120) -> object:
        import time

        end = time.monotonic() + seconds
        while time.monotonic() < end:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{expression} stayed false for {seconds} s")

    def console_problems(self) -> list[str]:
        """The errors and warnings among :attr:`events` (with ``Runtime.enable`` and
        ``Log.enable`` called): console messages, uncaught exceptions, failed loads."""
        problems = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning"):
                problems.append(" ".join(str(a.get("value", "")) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                problems.append(details.get("exception", {}).get("description") or details["text"])
            elif method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
                problems.append(params["entry"]["text"])
        return problems

    def centre_of(self, element_id: str) -> tuple[float, float]:
        import json

        box = json.loads(str(self.evaluate(
            f"JSON.stringify(document.getElementById('{element_id}').getBoundingClientRect())"
        )))  # fmt: skip
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def close(self) -> None:
        self._socket.close()
        self._process.terminate()
        self._process.wait()
        self._loop.close()
