"""3-D convolutions through oneDNN in float32 CPU inference, PyTorch's own kernels elsewhere."""

from __future__ import annotations

import pytest
import torch

from msnewlesions.convolutions import onednn_available, onednn_convolutions

pytestmark = pytest.mark.skipif(
    not onednn_available(), reason="this PyTorch build has no oneDNN convolutions"
)


def _network() -> torch.nn.Module:
    """Strided, dilated, biased and unbiased, 3x3x3 and 1x1x1 convolutions, and a layer that
    is not a convolution, on feature maps small enough for PyTorch's own kernel."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(8, 16, 3, stride=2, padding=1),
        torch.nn.InstanceNorm3d(16, affine=True),
        torch.nn.LeakyReLU(0.01),
        torch.nn.Conv3d(16, 16, 3, padding=2, dilation=2, bias=False),
        torch.nn.Conv3d(16, 2, 1),
    ).eval()


def _kernels(network: torch.nn.Module, x: torch.Tensor) -> set[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as run:
        network(x)
    names = {event.key for event in run.key_averages()}
    return {name for name in names if "conv" in name and name.startswith("aten::")}


def test_small_feature_maps_go_through_onednn_for_the_same_output() -> None:
    network = _network()
    x = torch.randn(1, 8, 12, 10, 8)
    with torch.inference_mode():
        before = network(x)
        assert "aten::slow_conv3d_forward" in _kernels(network, x)  # PyTorch's choice here
        with onednn_convolutions(network):
            inside = network(x)
            kernels = _kernels(network, x)
        after = network(x)
    assert "aten::mkldnn_convolution" in kernels and "aten::slow_conv3d_forward" not in kernels
    assert inside.shape == before.shape == (1, 2, 6, 5, 4)
    torch.testing.assert_close(inside, before, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, before)  # the network is given back as it was
    kinds = {type(module) for module in network.modules()}
    assert kinds == {
        torch.nn.Sequential,
        torch.nn.Conv3d,
        torch.nn.InstanceNorm3d,
        torch.nn.LeakyReLU,
    }


def test_training_and_bfloat16_passes_keep_pytorch_s_own_kernels() -> None:
    network = _network()
    x = torch.randn(1, 8, 12, 10, 8)
    with onednn_convolutions(network):
        output = network(x)  # gradients on: training
        output.sum().backward()
        assert "aten::mkldnn_convolution" not in _kernels(network, x)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert network(x).dtype == torch.bfloat16
    assert network[0].weight.grad is not None and network[0].weight.grad.abs().sum() > 0
