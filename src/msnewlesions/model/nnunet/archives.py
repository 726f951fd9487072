"""Model folders and archives: check, copy for shipping, export and import as zip, open either."""

from __future__ import annotations

import json
import os
import re
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


def _plain_numpy_types() -> list[Any]:
    """The numpy types nnU-Net's checkpoints hold (its logs keep numpy floats): data, not code."""
    import numpy as np

    core = getattr(np, "_core", None) or getattr(np, "core")  # noqa: B009 (numpy 1 and 2)
    scalar = core.multiarray.scalar
    dtypes = [type(np.dtype(kind)) for kind in ("f2", "f4", "f8", "i4", "i8", "u1", "?")]
    return [np.dtype, scalar, *dtypes]


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint as a dict (on the CPU), loaded so that it can never run code.

    ``torch.load(weights_only=True)``: tensors and plain Python data, plus the numpy scalars
    nnU-Net logs with. A pickle that names anything else (a crafted file could name a function
    to call) is refused before anything in it is built.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_plain_numpy_types()):
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not re.search(r"GLOBAL|allowlisted|reduce", str(error)):  # not a pickle of ours at all
            raise MSNewLesionsError(
                f"{path} is not a readable checkpoint; download or copy it again."
            ) from None
        named = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" ({named.group(1)})" if named else ""
        raise MSNewLesionsError(
            f"{path} holds more than weights and plain data{what}; it is refused, as loading it "
            "could run code. Use a checkpoint made by msnewlesions or nnU-Net that you trust."
        ) from None
    except (OSError, EOFError, RuntimeError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise MSNewLesionsError(
            f"{path} is not a readable checkpoint ({first}); download or copy it again."
        ) from None
    if not isinstance(checkpoint, dict):
        raise MSNewLesionsError(f"{path} is not an nnU-Net checkpoint (not a dictionary).")
    return checkpoint


#: Where a model's plans may take their network classes from (plans.json names them and nnU-Net
#: imports whatever they name): dynamic-network-architectures, this package's networks, torch.nn.
NETWORK_MODULES = ("dynamic_network_architectures.", "msnewlesions.model.networks.")
LAYER_MODULES = ("torch.nn.",)


def check_plans(plans: dict[str, Any], where: str | Path) -> None:
    """Refuse plans whose network or layer classes come from anywhere else than
    :data:`NETWORK_MODULES` / :data:`LAYER_MODULES`: nnU-Net would import them."""
    for name, configuration in (plans.get("configurations") or {}).items():
        architecture = (
            configuration.get("architecture") if isinstance(configuration, dict) else None
        )
        if not architecture:
            continue
        network = str(architecture.get("network_class_name", ""))
        if not network.startswith(NETWORK_MODULES):
            raise MSNewLesionsError(
                f"{where}: configuration {name} names the network {network!r}, which is not one "
                "of dynamic-network-architectures' or msnewlesions'; the model is refused."
            )
        arguments = architecture.get("arch_kwargs") or {}
        for key in architecture.get("_kw_requires_import") or []:
            value = arguments.get(key)
            if value is not None and not str(value).startswith(LAYER_MODULES):
                raise MSNewLesionsError(
                    f"{where}: configuration {name} names {value!r} for {key}, not a torch.nn "
                    "class; the model is refused."
                )


TRAINER_NAME = re.compile(r"nnUNetTrainer\w*")


def check_trainer_name(name: object, where: str | Path) -> str:
    """A trainer class name that nnU-Net looks up among its own trainers and ours."""
    if not isinstance(name, str) or not TRAINER_NAME.fullmatch(name):
        raise MSNewLesionsError(
            f"{where} names the trainer {name!r}, not an nnU-Net trainer class; refused."
        )
    return name


def check_model(model: str | Path) -> Path:
    """A model folder with nnU-Net's files and two input channels, else one clear error."""
    model = Path(model)
    if not model.is_dir():
        raise MSNewLesionsError(f"model {model} does not exist or is not a folder.")
    for name in ("plans.json", "dataset.json"):
        if not (model / name).exists():
            raise MSNewLesionsError(f"{model} is not an nnU-Net model folder (no {name}).")
    try:
        plans = json.loads((model / "plans.json").read_text())
        dataset = json.loads((model / "dataset.json").read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise MSNewLesionsError(
            f"{model}: plans.json or dataset.json is not JSON ({error})."
        ) from None
    if not isinstance(plans, dict) or not isinstance(dataset, dict):
        raise MSNewLesionsError(f"{model}: plans.json and dataset.json must be JSON objects.")
    check_plans(plans, model / "plans.json")
    channels = dataset.get("channel_names", {})
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


_MODEL_FILES = (
    "plans.json",
    "dataset.json",
    "dataset_fingerprint.json",
    "postprocessing.json",
    "inference.json",
)


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
        for checkpoint in sorted(found.glob("fold_*/*.pth")):
            load_checkpoint(checkpoint)  # refused here, before it is installed, if not plain
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
