"""Seconds from opening a report.html to its viewer being ready, in headless Chromium, here.

Drives Chromium over the DevTools protocol (no virtual time: wall-clock seconds): navigates to
the page and polls ``document.body.dataset.viewer`` until it is ``ready`` (or an error). Prints
the page's size and, per run, the seconds to ready.

    python benchmarks/report_open.py REPORT.html [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tornado.ioloop import IOLoop
from tornado.websocket import websocket_connect

FLAGS = ["--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-gpu-sandbox", "--no-first-run", "--window-size=1200,1500"]  # fmt: skip


async def seconds_to_ready(port: int, url: str) -> tuple[float, str]:
    targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json").read())
    page = next(t for t in targets if t["type"] == "page")
    socket = await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=1 << 30)
    counter = 0

    async def call(method: str, **params: object) -> dict:
        nonlocal counter
        counter += 1
        socket.write_message(json.dumps({"id": counter, "method": method, "params": params}))
        while True:
            message = json.loads(await socket.read_message())
            if message.get("id") == counter:
                return message

    start = time.perf_counter()
    await call("Page.navigate", url=url)
    state = ""
    while time.perf_counter() - start < 60:
        result = await call("Runtime.evaluate", expression="document.body?.dataset.viewer || ''")
        state = result["result"]["result"].get("value", "")
        if state:
            break
        time.sleep(0.02)
    timing = await call("Runtime.evaluate", expression="document.body.dataset.timing || ''")
    socket.close()
    marks = timing["result"]["result"].get("value", "")
    return time.perf_counter() - start, f"{state} {marks}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("Chromium is not installed (make browser-deps)", file=sys.stderr)
        return 1
    print(f"{args.report}: {args.report.stat().st_size / 1e6:.1f} MB")
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
            port = 9300 + run
            process = subprocess.Popen(
                [browser, *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                 "about:blank"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                for _ in range(100):
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version")
                        break
                    except OSError:
                        time.sleep(0.1)
                url = args.report.resolve().as_uri()
                seconds, state = IOLoop.current().run_sync(
                    lambda port=port, url=url: seconds_to_ready(port, url)  # type: ignore[misc]
                )
            finally:
                process.terminate()
                process.wait()
        print(f"run {run + 1}: viewer {state or 'not ready'} after {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
