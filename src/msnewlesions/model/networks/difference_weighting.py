"""A U-Net that looks at change: the Difference Weighting Block of Rokuss et al. (MICCAI 2024).

"Longitudinal segmentation of MS lesions via temporal difference weighting" (Rokuss, Kirchhoff,
Roy, Denner, Holzschuh, Ulrich, Isensee, Maier-Hein; MIC-DKFZ/Longitudinal-Difference-Weighting):
the two visits go through ONE encoder (shared weights, one channel each); at every resolution
stage the follow-up's features are weighted by the instance-normalised difference between the
two visits' features, ``f * norm(f - b) + f``, and one decoder reads these merged skips. Where
nothing changed, ``f - b`` is zero and the follow-up's features pass unchanged; where the visits
differ, they are amplified or damped. On MSSEG-2 it beat plain channel concatenation (the
paper's and nnU-Net's input: both visits as two channels of one image) in Dice and lesion F1.

Built from a :class:`dynamic_network_architectures.architectures.unet.PlainConvUNet` made for one
input channel: the wrapper owns its ``encoder`` and ``decoder`` (nnU-Net switches deep supervision
through ``network.decoder``), so its state dict extends the plain U-Net's by ``weighting.*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from dynamic_network_architectures.building_blocks.helper import get_matching_instancenorm
from torch import nn

#: Input channels of the pair: 0 the baseline, 1 the follow-up (the datasets' convention).
BASELINE_CHANNEL, FOLLOWUP_CHANNEL = 0, 1


class DifferenceWeighting(nn.Module):
    """Per stage: the follow-up's features times (1 + instance-normalised difference)."""

    def __init__(self, features_per_stage: Sequence[int], conv_op: type[nn.Module]) -> None:
        super().__init__()
        norm = get_matching_instancenorm(conv_op)
        self.norms = nn.ModuleList(norm(int(n), affine=True) for n in features_per_stage)

    def forward(
        self, followup_skips: list[torch.Tensor], baseline_skips: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        return [
            followup * norm(followup - baseline) + followup
            for followup, baseline, norm in zip(
                followup_skips, baseline_skips, self.norms, strict=True
            )
        ]


class DifferenceWeightingUNet(nn.Module):
    """Shared encoder for both visits, difference-weighted skips, one decoder."""

    encoder: Any
    decoder: Any

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        encoder = backbone.encoder
        if encoder.stages[0][0].convs[0].conv.in_channels != 1:
            raise ValueError("the backbone must be built for one input channel (one visit)")
        self.encoder = encoder
        self.decoder = backbone.decoder
        self.weighting = DifferenceWeighting(encoder.output_channels, encoder.conv_op)

    def forward(self, pair: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        baseline = pair[:, BASELINE_CHANNEL : BASELINE_CHANNEL + 1]
        followup = pair[:, FOLLOWUP_CHANNEL : FOLLOWUP_CHANNEL + 1]
        # Both visits in one encoder pass (instance norm is per sample), then split back.
        skips = self.encoder(torch.cat([followup, baseline], dim=0))
        size = pair.shape[0]
        merged = self.weighting([s[:size] for s in skips], [s[size:] for s in skips])
        return self.decoder(merged)


#: The first convolution's weights, the only ones whose shape depends on the input channels.
FIRST_CONVOLUTION = (
    "encoder.stages.0.0.convs.0.conv.weight",
    "encoder.stages.0.0.convs.0.all_modules.0.weight",
    "decoder.encoder.stages.0.0.convs.0.conv.weight",
    "decoder.encoder.stages.0.0.convs.0.all_modules.0.weight",
)


def from_two_channel_weights(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``target`` (a :class:`DifferenceWeightingUNet`'s state) filled from a two-channel
    U-Net's ``source`` state of the same plans: every weight that exists in both with one shape
    is copied; the first convolution takes the sum of its two input channels' kernels, so that
    the shared encoder sees one visit as the two-channel network saw a pair without change. The
    difference weighting starts as initialised (its norms' scale 1, shift 0). Returns the state
    and the names left as initialised."""
    state = dict(target)
    fresh = []
    for name, value in target.items():
        if name in FIRST_CONVOLUTION and name in source and source[name].shape[1] == 2:
            state[name] = source[name].sum(dim=1, keepdim=True)
        elif name in source and source[name].shape == value.shape:
            state[name] = source[name]
        else:
            fresh.append(name)
    return state, fresh
