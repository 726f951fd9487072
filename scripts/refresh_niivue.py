"""Refresh the NiiVue viewer embedded in report.html from the npm registry (no Node.js needed).

    .venv/bin/python scripts/refresh_niivue.py [--version 0.69.0]

Downloads ``@niivue/niivue``'s tarball, checks it against the registry's SHA-512 integrity,
checks that the licence is still BSD-2-Clause, and writes into ``src/msnewlesions/report/assets``:
``niivue.umd.js`` (the package's ``dist/niivue.umd.js``: one script, no module loader, so that it
can be inlined into an offline page) and ``niivue.json`` (version, licence, source, checksums).
The licence text (``NIIVUE_LICENSE``) is upstream's ``LICENSE``; it changes only with the licence.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org/@niivue/niivue"
ASSETS = Path(__file__).resolve().parents[1] / "src/msnewlesions/report/assets"
BUNDLE = "package/dist/niivue.umd.js"


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", default="latest")
    args = parser.parse_args()
    metadata = json.loads(fetch(f"{REGISTRY}/{args.version}"))
    if metadata.get("license") != "BSD-2-Clause":
        print(
            f"NiiVue {metadata['version']} is {metadata.get('license')!r}, not BSD-2-Clause: "
            "review its licence before embedding it.",
            file=sys.stderr,
        )
        return 1
    tarball = fetch(metadata["dist"]["tarball"])
    algorithm, expected = metadata["dist"]["integrity"].split("-", 1)
    digest = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if algorithm != "sha512" or digest != expected:
        print("the downloaded tarball does not match the registry's integrity", file=sys.stderr)
        return 1
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        member = archive.extractfile(BUNDLE)
        if member is None:
            print(f"{BUNDLE} is not in the package", file=sys.stderr)
            return 1
        bundle = member.read()
    ASSETS.mkdir(parents=True, exist_ok=True)
    (ASSETS / "niivue.umd.js").write_bytes(bundle)
    record = {
        "package": "@niivue/niivue",
        "version": metadata["version"],
        "license": metadata["license"],
        "license_file": "NIIVUE_LICENSE",
        "tarball": metadata["dist"]["tarball"],
        "integrity": metadata["dist"]["integrity"],
        "file": "niivue.umd.js",
        "from": BUNDLE,
        "sha256": hashlib.sha256(bundle).hexdigest(),
    }
    (ASSETS / "niivue.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"NiiVue {metadata['version']}: {len(bundle)} bytes into {ASSETS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
