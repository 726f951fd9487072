"""The model shipped inside the package (``model/weights``: plans, dataset, checkpoint, card)."""

from __future__ import annotations

from pathlib import Path

from msnewlesions.errors import MSNewLesionsError

#: Where the shipped default model lives inside the package.
DEFAULT_MODEL = Path(__file__).resolve().parent / "weights"


def default_model() -> Path:
    """The model shipped inside the package, or one clear error saying how to get a model."""
    if (DEFAULT_MODEL / "plans.json").exists() and (DEFAULT_MODEL / "dataset.json").exists():
        return DEFAULT_MODEL
    raise MSNewLesionsError(
        "no model given and this installation ships no default model yet; train one "
        "(msnewlesions dataset, then msnewlesions train; see the README) and pass --model FOLDER."
    )
