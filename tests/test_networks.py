"""The difference-weighting network (Rokuss et al. 2024); its trainer is trained in
test_model.py, on the chain."""

from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet

from msnewlesions.model.networks.difference_weighting import (
    DifferenceWeightingUNet,
    from_two_channel_weights,
)

SMALL = {
    "n_stages": 3,
    "features_per_stage": [4, 8, 16],
    "conv_op": torch.nn.Conv3d,
    "kernel_sizes": 3,
    "strides": [1, 2, 2],
    "n_conv_per_stage": 2,
    "num_classes": 2,
    "n_conv_per_stage_decoder": 2,
    "conv_bias": True,
    "norm_op": torch.nn.InstanceNorm3d,
    "norm_op_kwargs": {"eps": 1e-5, "affine": True},
    "nonlin": torch.nn.LeakyReLU,
    "nonlin_kwargs": {"inplace": True},
}


def _networks() -> tuple[PlainConvUNet, DifferenceWeightingUNet]:
    torch.manual_seed(0)
    concatenation = PlainConvUNet(input_channels=2, **SMALL)
    weighting = DifferenceWeightingUNet(PlainConvUNet(input_channels=1, **SMALL))
    state, fresh = from_two_channel_weights(concatenation.state_dict(), weighting.state_dict())
    assert fresh and all(name.startswith("weighting.") for name in fresh)
    weighting.load_state_dict(state)
    return concatenation.eval(), weighting.eval()


def test_from_two_channel_weights_it_reads_an_unchanged_pair_as_the_two_channel_network() -> None:
    """Started from a concatenation model, the shared encoder sees one visit as that model saw
    the same image twice: where nothing changed, both networks give the same output."""
    concatenation, weighting = _networks()
    visit = torch.randn(2, 1, 16, 16, 16)
    unchanged = torch.cat([visit, visit], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(
            weighting(unchanged), concatenation(unchanged), atol=1e-4, rtol=0
        )


def test_a_change_between_the_visits_changes_the_output_and_their_order_matters() -> None:
    _, weighting = _networks()
    visit = torch.randn(1, 1, 16, 16, 16)
    changed = visit.clone()
    changed[..., 6:10, 6:10, 6:10] += 3.0
    with torch.no_grad():
        same = weighting(torch.cat([visit, visit], 1))
        new = weighting(torch.cat([visit, changed], 1))  # the follow-up gained signal
        gone = weighting(torch.cat([changed, visit], 1))  # the baseline had it
    assert not torch.allclose(same, new)
    assert not torch.allclose(new, gone)


def test_a_backbone_for_two_channels_is_refused() -> None:
    with pytest.raises(ValueError, match="one input channel"):
        DifferenceWeightingUNet(PlainConvUNet(input_channels=2, **SMALL))
