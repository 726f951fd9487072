"""Model folders and archives: check, copy for shipping, export and import as zip, open either."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from msnewlesions.atomic import atomic_file
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.model.nnunet.environment import CHANNEL_NAMES


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint as a dict (on the CPU)."""
    import torch

    checkpoint: dict[str, Any] = torch.load(str(path), map_location="cpu", weights_only=False)
    return checkpoint


def check_model(model: str | Path) -> Path:
    """A model folder with nnU-Net's files and two input channels, else one clear error."""
    model = Path(model)
    if not model.is_dir():
        raise MSNewLesionsError(f"model {model} does not exist or is not a folder.")
    for name in ("plans.json", "dataset.json"):
        if not (model / name).exists():
            raise MSNewLesionsError(f"{model} is not an nnU-Net model folder (no {name}).")
    channels = json.loads((model / "dataset.json").read_text()).get("channel_names", {})
    if len(channels) != len(CHANNEL_NAMES):
        raise MSNewLesionsError(
            f"model {model} takes {len(channels)} input channel(s); a new-lesion model takes 2 "
            "(baseline, follow-up)."
        )
    return model


def strip_checkpoint(source: str | Path, destination: str | Path) -> None:
    """Copy a checkpoint without its optimizer state (for shipping: about a third of the size)."""
    import torch

    checkpoint = load_checkpoint(source)
    checkpoint["optimizer_state"] = None
    checkpoint.pop("lr_scheduler_state", None)
    checkpoint["grad_scaler_state"] = None
    torch.save(checkpoint, str(destination))


_MODEL_FILES = ("plans.json", "dataset.json", "dataset_fingerprint.json", "postprocessing.json")


def copy_model(source: str | Path, destination: str | Path) -> None:
    """Copy a model folder's inference files (plans, dataset, post-processing, final checkpoints)
    elsewhere."""
    source, destination = check_model(source), Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    for name in _MODEL_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, destination / name)
    for fold in sorted(source.glob("fold_*")):
        if (fold / "checkpoint_final.pth").exists():
            (destination / fold.name).mkdir(exist_ok=True)
            strip_checkpoint(
                fold / "checkpoint_final.pth", destination / fold.name / "checkpoint_final.pth"
            )


_FOLD_FILES = ("checkpoint_final.pth", "debug.json", "progress.png")


def export_model(model: str | Path, zip_path: str | Path, strip_optimizer: bool = True) -> Path:
    """Zip a model's inference files in nnU-Net's layout (``DatasetNNN_x/Trainer__Plans__cfg/``).

    nnU-Net's own ``nnUNetv2_install_pretrained_model_from_zip`` reads the result; with
    ``strip_optimizer`` the checkpoints lose their optimizer state (about a third of the size).
    """
    model = check_model(model)
    zip_path = Path(zip_path)
    prefix = (
        Path(model.parent.name, model.name)
        if model.parent.name.startswith("Dataset")
        else Path(model.name)
    )
    if zip_path.exists():
        raise MSNewLesionsError(f"{zip_path} already exists; choose another file.")
    with (
        atomic_file(zip_path) as temporary,
        zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive,
        tempfile.TemporaryDirectory() as scratch,
    ):
        for name in _MODEL_FILES:
            if (model / name).exists():
                archive.write(model / name, str(prefix / name))
        for fold in sorted(model.glob("fold_*")):
            for name in _FOLD_FILES:
                source = fold / name
                if not source.exists():
                    continue
                if name.endswith(".pth") and strip_optimizer:
                    stripped = Path(scratch) / f"{fold.name}_{name}"
                    strip_checkpoint(source, stripped)
                    source = stripped
                archive.write(source, str(prefix / fold.name / name))
    return zip_path


def _model_folder_in(root: Path) -> Path:
    candidates = sorted(
        p.parent for p in root.rglob("plans.json") if (p.parent / "dataset.json").exists()
    )
    if len(candidates) != 1:
        raise MSNewLesionsError(
            f"expected one nnU-Net model in the archive, found {len(candidates)}."
        )
    return check_model(candidates[0])


def _extract(zip_path: Path, destination: Path) -> None:
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member in archive.namelist():
                if Path(member).is_absolute() or ".." in Path(member).parts:
                    raise MSNewLesionsError(f"{zip_path} holds an unsafe path: {member}")
            archive.extractall(destination)
    except zipfile.BadZipFile as error:
        raise MSNewLesionsError(f"{zip_path} is not a zip archive.") from error


def import_model(zip_path: str | Path, destination: str | Path) -> Path:
    """Unpack a model zip (ours or nnU-Net's export) under ``destination``; return its folder."""
    zip_path, destination = Path(zip_path), Path(destination)
    if not zip_path.is_file():
        raise MSNewLesionsError(f"{zip_path} does not exist.")
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination) as scratch:
        _extract(zip_path, Path(scratch))
        found = _model_folder_in(Path(scratch))
        relative = found.relative_to(scratch)
        target = destination / relative
        if target.exists():
            raise MSNewLesionsError(f"{target} already exists; remove it first.")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(found, target)
    return target


@contextmanager
def open_model(model: str | Path) -> Iterator[Path]:
    """A model folder for the duration of the block: the folder itself, or a zip unpacked."""
    model = Path(model)
    if model.is_file() and zipfile.is_zipfile(model):
        with tempfile.TemporaryDirectory(prefix="msnewlesions-model-") as scratch:
            _extract(model, Path(scratch))
            yield _model_folder_in(Path(scratch))
    else:
        yield check_model(model)
