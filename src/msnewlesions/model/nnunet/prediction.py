"""Inference: nnU-Net's predictor for one pair at a time, in process (construct, load, predict).

``segment`` and ``predict`` both go through :class:`NewLesionPredictor`, so the same model gives
the same probabilities through either.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from msnewlesions.denormals import run_flushed
from msnewlesions.engines import Engine, compile_network, engine_network, resolve_engine
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume
from msnewlesions.lesions import PostprocessingSettings, model_postprocessing
from msnewlesions.model.nnunet.archives import (
    check_plans,
    check_trainer_name,
    load_checkpoint,
    open_model,
)
from msnewlesions.model.nnunet.environment import check_device, nnunet_environment, quiet
from msnewlesions.precision import Precision, network_precision, resolve_precision

#: A model folder's inference settings (today only nnU-Net's sliding-window step), beside its
#: plans: ``{"tile_step_size": 0.6}``. Without it nnU-Net's default step is used.
INFERENCE_FILE = "inference.json"

#: nnU-Net's default: windows overlap by half a patch.
DEFAULT_TILE_STEP_SIZE = 0.5


def model_tile_step_size(model_folder: str | Path) -> float:
    """The sliding-window step (a fraction of the patch) saved in ``model_folder``'s
    ``inference.json``, else nnU-Net's default 0.5."""
    import json

    path = Path(model_folder) / INFERENCE_FILE
    if not path.exists():
        return DEFAULT_TILE_STEP_SIZE
    try:
        step = float(json.loads(path.read_text())["tile_step_size"])
    except (ValueError, TypeError, KeyError) as error:
        raise MSNewLesionsError(
            f"{path} is not a valid inference file (it needs a tile_step_size): {error}"
        ) from error
    return check_tile_step_size(step, str(path))


def check_tile_step_size(step: float, source: str = "tile_step_size") -> float:
    """``step`` if it is a fraction of the patch in (0, 1]; else a clear error."""
    if not 0 < step <= 1:
        raise MSNewLesionsError(f"{source}: the tile step must be in (0, 1], not {step}.")
    return step


def _load_predictor(
    model: Path,
    folds: Sequence[int | str] | None,
    device: str,
    test_time_augmentation: bool,
    checkpoint: str,
    tile_step_size: float,
) -> tuple[Any, list[str]]:
    """nnU-Net's predictor with the model's weights loaded (the chosen folds, all by default)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    check_device(device)
    available = [p.name.removeprefix("fold_") for p in sorted(model.glob("fold_*"))]
    chosen = [str(f) for f in folds] if folds else available
    missing = [f for f in chosen if not (model / f"fold_{f}" / checkpoint).exists()]
    if not chosen or missing:
        raise MSNewLesionsError(
            f"{model} has no {checkpoint} for fold(s) {', '.join(missing) or '(none)'}; "
            "train them first."
        )
    with nnunet_environment(), quiet():
        predictor = nnUNetPredictor(
            tile_step_size=tile_step_size,
            use_gaussian=True,
            use_mirroring=test_time_augmentation,
            perform_everything_on_device=device == "cuda",
            device=torch.device(device),
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        _initialize(predictor, model, chosen, checkpoint)
    return predictor, chosen


def trainer_class_by_name(name: str, model: str | Path) -> Any:
    """The trainer class ``name``: ours or nnU-Net's base trainer by direct import, any other
    nnU-Net trainer by nnU-Net's own search (which imports every module of its trainer folder,
    about 4 s here, so it is left for names we do not know)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from msnewlesions.model import trainers

    known = getattr(trainers, name, None) if name != nnUNetTrainer.__name__ else nnUNetTrainer
    if isinstance(known, type) and issubclass(known, nnUNetTrainer):
        return known
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        found = recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        found = None
    if found is None:
        raise MSNewLesionsError(f"{model}: trainer {name} is neither nnU-Net's nor ours.")
    return found


def _initialize(predictor: Any, model: Path, folds: Sequence[str], checkpoint_name: str) -> None:
    """nnU-Net's ``initialize_from_trained_model_folder``, with every checkpoint loaded by
    :func:`~msnewlesions.model.nnunet.archives.load_checkpoint` (never code) and the plans and
    trainer name checked before nnU-Net imports what they name."""
    import json

    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = json.loads((model / "dataset.json").read_text())
    plans = json.loads((model / "plans.json").read_text())
    check_plans(plans, model / "plans.json")
    plans_manager = PlansManager(plans)
    parameters = []
    for index, fold in enumerate(folds):
        path = model / f"fold_{fold}" / checkpoint_name
        checkpoint = load_checkpoint(path)
        if index == 0:
            trainer_name = check_trainer_name(checkpoint.get("trainer_name"), path)
            configuration_name = checkpoint["init_args"]["configuration"]
            mirroring = checkpoint.get("inference_allowed_mirroring_axes")
        parameters.append(checkpoint["network_weights"])
    configuration = plans_manager.get_configuration(configuration_name)
    inputs = determine_num_input_channels(plans_manager, configuration, dataset_json)
    outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    trainer_class = trainer_class_by_name(trainer_name, model)
    network = trainer_class.build_network_architecture(
        plans_manager, configuration, inputs, outputs, enable_deep_supervision=False
    )
    network.load_state_dict(parameters[0])
    predictor.manual_initialization(
        network,
        plans_manager,
        configuration,
        parameters,
        dataset_json,
        trainer_name,
        tuple(mirroring) if mirroring is not None else None,
    )


class NewLesionPredictor:
    """nnU-Net's predictor for one pair at a time, in process (construct, load, predict).

    Arrays are handed over exactly as nnU-Net's SimpleITK reader saw the training images
    (axes k, j, i and spacing reversed), so the network sees what it learned on.
    """

    def __init__(
        self,
        model: str | Path,
        folds: Sequence[int | str] | None = None,
        device: str = "cpu",
        test_time_augmentation: bool = False,
        checkpoint: str = "checkpoint_final.pth",
        mirror_axes: Sequence[int] | None = None,
        tile_step_size: float | None = None,
        precision: Precision = "auto",
        engine: Engine = "auto",
    ) -> None:
        """``mirror_axes``: with ``test_time_augmentation``, mirror along these axes of the
        volumes only (0, 1, 2 as in ``Volume.array``; 0 is left-right in MNI space), one more
        network pass per combination; None: every axis the model allows (8 passes in 3-D).
        ``tile_step_size``: the sliding window's step as a fraction of the patch (smaller: more
        overlapping windows, slower); None: the model folder's ``inference.json``, else 0.5.
        ``precision``: the network passes' number format on the CPU
        (:mod:`msnewlesions.precision`; ``"auto"``: bfloat16 where the CPU has it).
        ``engine``: what runs the passes (:mod:`msnewlesions.engines`; ``"auto"``: OpenVINO on
        the CPU where it is installed); nnU-Net's sliding window and its Gaussian weighting stay
        the same whichever runs them."""
        self.precision = resolve_precision(precision, device)
        self.engine = resolve_engine(engine, device)
        with open_model(model) as folder:  # a zip is unpacked only while the weights load
            self.tile_step_size = (
                model_tile_step_size(folder)
                if tile_step_size is None
                else check_tile_step_size(tile_step_size)
            )
            self._predictor, self.folds = _load_predictor(
                folder, folds, device, test_time_augmentation, checkpoint, self.tile_step_size
            )
            if mirror_axes is not None:
                if not set(mirror_axes) <= {0, 1, 2}:
                    raise ValueError(f"mirror axes must be 0, 1 or 2, not {mirror_axes}")
                # nnU-Net sees the arrays transposed (k, j, i): volume axis a is its axis 2 - a.
                self._predictor.allowed_mirroring_axes = tuple(sorted(2 - a for a in mirror_axes))
            self._postprocessing = model_postprocessing(folder)
        if self.engine != "torch":
            self._compile_folds()

    def _compile_folds(self) -> None:
        """Each fold's weights compiled by the engine; nnU-Net's predictor then calls them in
        place of its PyTorch network."""
        import torch

        predictor = self._predictor
        channels = len(predictor.dataset_json["channel_names"])
        example = torch.zeros((1, channels, *predictor.configuration_manager.patch_size))
        compiled = [
            (weights, compile_network(
                predictor.network, weights, example, self.engine, self.precision, "lesions"
            ))
            for weights in predictor.list_of_parameters
        ]  # fmt: skip
        self.precision = compiled[0][1].precision
        predictor.network = engine_network(compiled)

    @property
    def postprocessing(self) -> PostprocessingSettings:
        """The threshold and minimum lesion volume chosen for this model (or the defaults)."""
        return self._postprocessing

    def probability(self, baseline: Volume, followup: Volume) -> Volume:
        """The new-lesion probability map (float32) on the pair's (preprocessed) grid."""
        if not baseline.same_grid(followup):
            raise ValueError("baseline and follow-up must share the preprocessed grid")
        data = np.stack([baseline.array.transpose(2, 1, 0), followup.array.transpose(2, 1, 0)])
        properties = {"spacing": [float(s) for s in baseline.spacing[::-1]]}

        def predict() -> Any:
            passes = (
                network_precision(self._predictor.network, self.precision)
                if self.engine == "torch"
                else contextlib.nullcontext()
            )
            with passes:
                return self._predictor.predict_single_npy_array(
                    data.astype(np.float32), properties, None, None, True
                )

        with nnunet_environment(), quiet():
            _, probabilities = run_flushed(predict)
        foreground = np.asarray(probabilities[1], dtype=np.float32).transpose(2, 1, 0)
        return baseline.with_array(np.ascontiguousarray(foreground))
