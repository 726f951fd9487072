"""nnU-Net trainers of the paper, found by nnU-Net through nnUNet_extTrainer (set by the adapter).

:class:`nnUNetTrainerMSNewLesions` is nnU-Net's trainer with the schedule of Martinez-Heras et al.:
Adam with an initial learning rate of 0.01; an epoch is 250 training iterations; the learning rate
is divided by 5 when the training loss has not improved by at least 0.005 (absolute) for 30 epochs
(``ReduceLROnPlateau``); no early stopping; at most 300 epochs; a checkpoint every 25 epochs.
A short run (tens of epochs, as on a CPU) never sees 30 flat epochs, so the rule never fires; its
substitute is :attr:`~nnUNetTrainerMSNewLesions.anneal_epochs`: the last epochs of the run at the
learning rate divided by 5, as nnU-Net's own schedule ends low. The paper's run has none (0).
Everything else (network, patch size, loss, data augmentation) is nnU-Net's own, from the plans.

nnU-Net's checkpoint does not store the learning-rate scheduler, which for a plateau rule is state
(best loss, epochs without improvement); it is added to the checkpoint so that a resumed training
continues the rule where it stopped.

The schedule (epochs, iterations, checkpoints, annealing) is one
:class:`~msnewlesions.model.schedule.TrainingSchedule`: applied with :meth:`apply_schedule`, saved
in every checkpoint, restored by :meth:`load_checkpoint`.

nnU-Net imports every module of this folder (``nnUNet_extTrainer``) as a top-level module: it
holds trainers only, and they import nothing from msnewlesions but the schedule and (when built)
the networks.

:class:`nnUNetTrainerMSNewLesionsDifferenceWeighting` is the same trainer with the Difference
Weighting network (model v2's candidate against plain channel concatenation).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from msnewlesions.atomic import atomic_file
from msnewlesions.model.nnunet.archives import load_checkpoint
from msnewlesions.model.schedule import TRAINER_ATTRIBUTES, TrainingSchedule

#: Each epoch's progress line, under the package's logger (this module is imported by nnU-Net
#: under its own name).
PROGRESS = logging.getLogger("msnewlesions.training")

PLATEAU_FACTOR = 0.2  # divided by 5
PLATEAU_PATIENCE = 30  # epochs
PLATEAU_THRESHOLD = 0.005  # absolute improvement of the loss


def plateau_scheduler(optimizer: torch.optim.Optimizer) -> ReduceLROnPlateau:
    """The paper's rule: learning rate / 5 after 30 epochs without a 0.005 drop of the loss."""
    return ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=PLATEAU_FACTOR,
        patience=PLATEAU_PATIENCE,
        threshold=PLATEAU_THRESHOLD,
        threshold_mode="abs",
    )


class nnUNetTrainerMSNewLesions(nnUNetTrainer):
    """nnU-Net with the paper's optimizer, epochs, learning-rate rule and checkpointing."""

    def __init__(
        self,
        plans: dict[str, Any],
        configuration: str,
        fold: int,
        dataset_json: dict[str, Any],
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's signature
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 1e-2
        self.anneal_epochs = 0
        self.annealed = False
        self.apply_schedule(TrainingSchedule())

    def apply_schedule(self, schedule: TrainingSchedule) -> None:
        """Train, validate, checkpoint and anneal as ``schedule`` says."""
        for ours, theirs in TRAINER_ATTRIBUTES.items():
            setattr(self, theirs, getattr(schedule, ours))

    @property
    def schedule(self) -> TrainingSchedule:
        """The schedule this trainer follows."""
        return TrainingSchedule.from_dict(
            {ours: getattr(self, theirs) for ours, theirs in TRAINER_ATTRIBUTES.items()}
        )

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, ReduceLROnPlateau]:
        optimizer = torch.optim.Adam(
            self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay
        )
        return optimizer, plateau_scheduler(optimizer)

    def on_train_epoch_start(self) -> None:
        # nnU-Net steps its polynomial schedule by epoch here; the plateau rule steps on the loss
        # at the end of the epoch instead.
        self.network.train()
        self.print_to_log_file("")
        self.print_to_log_file(f"Epoch {self.current_epoch}")
        if self.anneal_epochs and not self.annealed:
            if self.current_epoch >= self.num_epochs - self.anneal_epochs:
                for group in self.optimizer.param_groups:
                    group["lr"] *= PLATEAU_FACTOR
                self.annealed = True
        learning_rate = self.optimizer.param_groups[0]["lr"]
        self.print_to_log_file(f"Current learning rate: {learning_rate:.6g}")
        self.logger.log("lrs", learning_rate, self.current_epoch)

    def on_epoch_end(self) -> None:
        self.lr_scheduler.step(float(self.logger.get_value("train_losses", step=-1)))
        super().on_epoch_end()
        seconds = self.logger.get_value("epoch_end_timestamps", -1) - self.logger.get_value(
            "epoch_start_timestamps", -1
        )
        left = max(self.num_epochs - self.current_epoch, 0) * seconds
        PROGRESS.info(
            "epoch %d of %d: loss %.4f, %.0f s; about %d min left in this training",
            self.current_epoch,
            self.num_epochs,
            float(self.logger.get_value("train_losses", step=-1)),
            seconds,
            round(left / 60),
        )

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint plus the plateau rule's state, written atomically: a run killed
        while saving (kill -9, a scheduler's time limit) leaves the previous checkpoint whole,
        never a truncated file that ``--resume`` would have to refuse."""
        if self.local_rank != 0 or self.disable_checkpointing:
            return
        with atomic_file(filename) as temporary:
            super().save_checkpoint(str(temporary))
            checkpoint = load_checkpoint(temporary)
            checkpoint["lr_scheduler_state"] = self.lr_scheduler.state_dict()
            checkpoint["annealed"] = self.annealed
            checkpoint["msnewlesions_schedule"] = self.schedule.as_dict()
            torch.save(checkpoint, temporary)

    def load_checkpoint(self, filename_or_checkpoint: dict[str, Any] | str) -> None:
        """nnU-Net's state, then the plateau rule's, the annealing flag and the schedule.

        nnU-Net's own ``load_checkpoint`` unpickles the file with ``weights_only=False`` (a
        crafted file would run code) and mishandles a dict; this is its logic with the file
        loaded by :func:`~msnewlesions.model.nnunet.archives.load_checkpoint` (never code).
        """
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = load_checkpoint(checkpoint)
        network = self.network.module if self.is_ddp else self.network
        network = getattr(network, "_orig_mod", network)  # a compiled network's own module
        own = network.state_dict().keys()
        weights = {
            key[7:] if key not in own and key.startswith("module.") else key: value
            for key, value in checkpoint["network_weights"].items()
        }
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        if "inference_allowed_mirroring_axes" in checkpoint:
            self.inference_allowed_mirroring_axes = checkpoint["inference_allowed_mirroring_axes"]
        network.load_state_dict(weights)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
        if "lr_scheduler_state" in checkpoint:
            self.lr_scheduler.load_state_dict(checkpoint["lr_scheduler_state"])
        self.annealed = bool(checkpoint.get("annealed", False))
        if "msnewlesions_schedule" in checkpoint:
            self.apply_schedule(TrainingSchedule.from_dict(checkpoint["msnewlesions_schedule"]))


class nnUNetTrainerMSNewLesionsDifferenceWeighting(nnUNetTrainerMSNewLesions):
    """The same trainer with a network that looks at change: the plans' U-Net built for one
    visit, its encoder shared by both visits, the skips merged by difference weighting
    (:mod:`msnewlesions.model.networks.difference_weighting`, Rokuss et al. 2024)."""

    @staticmethod
    def build_network_architecture(
        plans_manager: Any,
        configuration_manager: Any,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> torch.nn.Module:
        from msnewlesions.model.networks.difference_weighting import DifferenceWeightingUNet

        if num_input_channels != 2:
            raise ValueError("difference weighting needs two channels: baseline and follow-up")
        backbone = nnUNetTrainer.build_network_architecture(
            plans_manager, configuration_manager, 1, num_output_channels, enable_deep_supervision
        )
        return DifferenceWeightingUNet(backbone)
