"""nnU-Net trainers of the paper (this folder is nnU-Net's ``nnUNet_extTrainer``)."""

from msnewlesions.model.trainers.msnewlesions_trainers import (
    PLATEAU_FACTOR,
    PLATEAU_PATIENCE,
    PLATEAU_THRESHOLD,
    nnUNetTrainerMSNewLesions,
    nnUNetTrainerMSNewLesionsDifferenceWeighting,
    plateau_scheduler,
)

__all__ = [
    "PLATEAU_FACTOR",
    "PLATEAU_PATIENCE",
    "PLATEAU_THRESHOLD",
    "nnUNetTrainerMSNewLesions",
    "nnUNetTrainerMSNewLesionsDifferenceWeighting",
    "plateau_scheduler",
]
