"""A real Orthanc DICOM server on localhost for the tests that send to a PACS (Debian package
``orthanc``, installed by ``make dicom-deps``)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Orthanc:
    aet: str
    dicom_port: int
    http_port: int

    def get(self, path: str) -> Any:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_orthanc(folder: Path) -> Iterator[Orthanc]:
    """An Orthanc with its storage in ``folder``, listening on free local ports, stopped at
    exit. Skips the calling test where Orthanc is not installed."""
    import pytest

    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
    if binary is None:
        pytest.skip("Orthanc is not installed (make dicom-deps)")
    server = Orthanc("ORTHANC", _free_port(), _free_port())
    config = {
        "Name": "msnewlesions-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "DicomAet": server.aet,
        "DicomPort": server.dicom_port,
        "HttpPort": server.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": True,
        "Plugins": [],
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.get("/system")
                break
            except OSError as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    log_path = folder / "orthanc.log"
                    raise RuntimeError(f"Orthanc did not start: see {log_path}") from error
                time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
