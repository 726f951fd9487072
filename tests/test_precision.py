"""Network passes in bfloat16 on CPUs that have it, float32 elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from msnewlesions import precision
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.example import write_example_pair
from msnewlesions.io import Volume
from msnewlesions.precision import network_precision, resolve_precision
from tests.conftest import run_cli


def test_auto_means_bfloat16_only_on_a_cpu_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: True)
    assert resolve_precision("auto") == "bfloat16"
    assert resolve_precision("auto", "cuda") == "float32"  # nnU-Net's own float16 there
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: False)
    assert resolve_precision("auto") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"  # asked for: emulated if need be
    assert resolve_precision("float32", "cuda") == "float32"
    with pytest.raises(MSNewLesionsError, match="for the CPU"):
        resolve_precision("bfloat16", "cuda")
    with pytest.raises(MSNewLesionsError, match="precision must be one of"):
        resolve_precision("float16")


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv3d(2, 8, 3, padding=1), torch.nn.LeakyReLU(), torch.nn.Conv3d(8, 2, 1)
    ).eval()


def test_bfloat16_passes_return_float32_close_to_float32_ones() -> None:
    network = _network()
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.inference_mode():
        full = network(x)
        with network_precision(network, "float32"):  # oneDNN's kernels: the sums' order only
            torch.testing.assert_close(network(x), full, rtol=1e-5, atol=1e-6)
        with network_precision(network, "bfloat16"):
            half = network(x)
        after = network(x)
    assert half.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: close to the float32 result, and not the same.
    scale = float(full.abs().max())
    assert 0 < float((half - full).abs().max()) < 0.05 * scale
    assert torch.equal(after, full)  # the network is left as it was
    assert not network._forward_hooks


def _slow_without_bfloat16(test: Any) -> Any:
    """Marked slow where the CPU has no bfloat16 instructions: PyTorch emulates them there, and
    one 64^3 window of the shipped network took 218 s so on a 2-core AMD EPYC without AVX-512
    (``auto`` never takes bfloat16 there)."""
    return pytest.mark.slow(test) if not precision.cpu_has_bfloat16() else test


@_slow_without_bfloat16
def test_the_predictor_gives_nearly_the_same_probabilities_in_either_precision() -> None:
    from msnewlesions.model import nnunet
    from msnewlesions.model.default import DEFAULT_MODEL

    rng = np.random.default_rng(0)
    pair = [Volume(rng.normal(size=(64, 64, 64)).astype(np.float32), np.eye(4)) for _ in "ab"]
    pair[1].array[20:30, 20:30, 20:30] += 4  # a bright blob at follow-up only
    maps = {}
    for name in ("float32", "bfloat16"):
        predictor = nnunet.NewLesionPredictor(DEFAULT_MODEL, folds=[0], precision=name)
        assert predictor.precision == name
        maps[name] = predictor.probability(*pair).array
    assert maps["bfloat16"].dtype == np.float32
    difference = np.abs(maps["bfloat16"] - maps["float32"])
    assert 0 < difference.max() < 0.1 and difference.mean() < 0.005
    assert maps["float32"][25, 25, 25] > 0.5 and maps["bfloat16"][25, 25, 25] > 0.5


def test_the_precision_and_engine_options_reach_both_networks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``segment --precision`` and ``--engine`` are HD-BET's (the preprocessing options) and
    the lesion network's (the predictor's)."""
    from msnewlesions.commands import segment

    seen: list[tuple[str, object, object]] = []

    def record(
        model: object, device: object, tta: object, precision: object, engine: object
    ) -> None:
        seen.append(("lesion network", precision, engine))
        raise KeyboardInterrupt  # stop there: nothing else is under test

    monkeypatch.setattr(segment, "load_predictor", record)
    real_segment_files = segment.segment_files

    def keep_options(*args: Any, **kwargs: Any) -> Any:
        options = args[4].preprocess
        seen.append(("hd-bet", options.precision, options.engine))
        return real_segment_files(*args, **kwargs)

    monkeypatch.setattr(segment, "segment_files", keep_options)
    files = write_example_pair(tmp_path / "example", seed=0)
    argv = ["segment", "--baseline", files["baseline"], "--followup", files["followup"]]
    runs = [("float32", "torch"), ("bfloat16", "onnxruntime"), ("auto", "auto")]
    for number_format, engine in runs:
        out = tmp_path / number_format
        options = ["--out", str(out), "--precision", number_format, "--engine", engine]
        code, _, _ = run_cli([*argv, *options], capsys)
        assert code == 130 and not out.exists()
    assert seen == [(n, p, e) for p, e in runs for n in ("hd-bet", "lesion network")]
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "x"), "--precision", "int8"], capsys)
    assert code != 0 and "int8" in err


@pytest.mark.slow
@pytest.mark.real_data
def test_hd_bet_in_bfloat16_finds_nearly_the_same_brain(open_ms_data: Path) -> None:
    """HD-BET's mask of a real head (patient01's baseline) in bfloat16 and in float32."""
    from msnewlesions.io import read_volume
    from msnewlesions.preprocessing.skullstrip import hdbet_brain_mask

    head = read_volume(open_ms_data / "longitudinal/raw/patient01/study1_FLAIR.nii.gz")
    full = hdbet_brain_mask(head, precision="float32").array > 0
    half = hdbet_brain_mask(head, precision="bfloat16").array > 0
    voxel_ml = float(np.prod(head.spacing)) / 1000
    assert 1000 < full.sum() * voxel_ml < 1800  # a brain, in ml
    dice = 2 * (full & half).sum() / (full.sum() + half.sum())
    assert dice > 0.999
