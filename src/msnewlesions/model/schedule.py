"""The training schedule: how long a run trains, how often it checkpoints, how it ends.

One value, :class:`TrainingSchedule`: the trainer applies it, every checkpoint saves it, and a
resumed run restores it from the checkpoint it continues (changed only where asked). The defaults
are the paper's (Martinez-Heras et al.): 300 epochs of 250 iterations, a checkpoint every 25
epochs, no annealing; nnU-Net's 50 validation batches per epoch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

#: The schedule's values under nnU-Net's trainer attribute names.
TRAINER_ATTRIBUTES = {
    "epochs": "num_epochs",
    "iterations_per_epoch": "num_iterations_per_epoch",
    "validation_iterations": "num_val_iterations_per_epoch",
    "checkpoint_every": "save_every",
    "anneal_epochs": "anneal_epochs",
}


@dataclass(frozen=True)
class TrainingSchedule:
    """``anneal_epochs``: the last epochs of the run at the learning rate / 5, the substitute on
    short (CPU) runs for the paper's plateau rule, which needs 30 flat epochs to fire."""

    epochs: int = 300
    iterations_per_epoch: int = 250
    validation_iterations: int = 50
    checkpoint_every: int = 25
    anneal_epochs: int = 0

    def __post_init__(self) -> None:
        for name, value in self.as_dict().items():
            if not isinstance(value, int) or value < (0 if name == "anneal_epochs" else 1):
                raise ValueError(f"a training schedule's {name} must be a whole number >= 1")

    def updated(self, **changes: int | None) -> TrainingSchedule:
        """This schedule with the values given (None keeps this one's)."""
        return replace(self, **{k: int(v) for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainingSchedule:
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in saved.items() if k in names and v is not None})

    @classmethod
    def from_legacy(cls, saved: dict[str, Any]) -> TrainingSchedule:
        """A schedule saved by earlier versions (``msnewlesions_schedule.json``, nnU-Net names)."""
        ours = {ours: saved.get(theirs) for ours, theirs in TRAINER_ATTRIBUTES.items()}
        return cls().updated(**ours)
