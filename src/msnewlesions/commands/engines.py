"""Graphs for the CPU engines made ahead of the first run (a container's build, a cluster's
shared cache): what ``segment`` would otherwise export on first use."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from msnewlesions.engines import Engine, cache_folder, resolve_engine
from msnewlesions.io import Volume
from msnewlesions.preprocessing.skullstrip import SkullstripMode


def prepare_engines(
    model: str | Path | None = None,
    engine: Engine = "auto",
    skullstrip_mode: SkullstripMode = "fast",
) -> list[Path]:
    """Export HD-BET's network(s) and every fold of ``model`` (default: the shipped one) for
    ``engine`` into the cache, and compile each once to check it. Returns the cache's graphs;
    nothing to do (an empty list) when the engine is PyTorch."""
    from msnewlesions.commands.segment import load_predictor
    from msnewlesions.preprocessing.skullstrip import hdbet_brain_mask

    if resolve_engine(engine) == "torch":
        return []
    load_predictor(model, engine=engine)
    # A small head-shaped volume: HD-BET's network is exported (and compiled) on first use.
    grid = np.indices((48, 56, 48)).transpose(1, 2, 3, 0) - np.array([24, 28, 24])
    head = ((grid**2 / np.array([20, 24, 20]) ** 2).sum(-1) < 1).astype(np.float32)
    affine = np.diag([3.0, 3.0, 3.0, 1.0])
    hdbet_brain_mask(Volume(head * 100, affine), skullstrip_mode, engine=engine)
    return sorted(cache_folder().glob("*.onnx"))
