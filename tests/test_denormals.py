"""Network passes run where subnormal floats count as zero (:mod:`msnewlesions.denormals`): on
x86 CPUs a pass whose activations turn subnormal otherwise runs 10-100 times slower (HD-BET on a
real head: more than 30 minutes instead of 25 s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from msnewlesions.denormals import run_flushed
from msnewlesions.io import Volume

torch = pytest.importorskip("torch")

SUBNORMAL = 1e-39  # below float32's smallest normal value, 1.18e-38


def subnormals_flushed() -> bool:
    """Whether PyTorch's CPU arithmetic now turns a subnormal result into zero."""
    return float((torch.tensor([SUBNORMAL], dtype=torch.float32) * 2)[0]) == 0.0


@pytest.fixture(autouse=True)
def _needs_flush_support() -> None:
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormal floats (not x86 with SSE3)")


SUBNORMALS = torch.full((1_000_000,), SUBNORMAL, dtype=torch.float32)  # made while not flushed


def subnormals_left() -> int:
    """How many of a million subnormal products stay non-zero; an op this large is split over
    PyTorch's OpenMP workers, so each worker's own switch counts."""
    return int((SUBNORMALS * 2).count_nonzero())


def test_the_function_runs_flushed_and_the_caller_is_left_as_it_was() -> None:
    assert not subnormals_flushed()
    assert run_flushed(subnormals_flushed) is True
    assert not subnormals_flushed()
    assert subnormals_left() == 1_000_000


def test_every_worker_of_the_pass_flushes_even_when_the_callers_workers_exist() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # workers to tell apart, also where the tests run one thread each
    try:
        assert subnormals_left() == 1_000_000  # the caller's OpenMP workers now exist
        # Setting the switch in the calling thread reaches only its own share of the work ...
        torch.set_flush_denormal(True)
        try:
            only_the_caller = subnormals_left()
        finally:
            torch.set_flush_denormal(False)
        assert 0 < only_the_caller < 1_000_000
        # ... while the pass's own thread and its workers flush all of it.
        assert run_flushed(subnormals_left) == 0
    finally:
        torch.set_num_threads(threads)


def test_the_functions_error_reaches_the_caller() -> None:
    def failing_pass() -> None:
        raise MemoryError("a network pass too large")

    with pytest.raises(MemoryError, match="too large"):
        run_flushed(failing_pass)
    assert not subnormals_flushed()


def test_hd_bet_runs_with_subnormals_flushed(monkeypatch: pytest.MonkeyPatch) -> None:
    from msnewlesions.preprocessing import skullstrip

    seen: list[bool] = []

    def fake_hd_bet(array_zyx: np.ndarray, *args: Any, **kwargs: Any) -> np.ndarray:
        seen.append(subnormals_flushed())
        return np.ones_like(array_zyx, dtype=np.uint8)

    monkeypatch.setattr(skullstrip, "_hdbet_segmentation", fake_hd_bet)
    head = Volume(np.ones((6, 7, 8), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    mask = skullstrip.hdbet_brain_mask(head)
    assert seen == [True]
    assert mask.array.sum() == 6 * 7 * 8
    assert not subnormals_flushed()


def test_the_new_lesion_network_runs_with_subnormals_flushed() -> None:
    from msnewlesions.model.nnunet.prediction import NewLesionPredictor

    seen: list[bool] = []

    class FakeNnunetPredictor:
        network = torch.nn.Identity()

        def predict_single_npy_array(self, data: np.ndarray, *args: Any) -> tuple[None, Any]:
            seen.append(subnormals_flushed())
            return None, np.stack([1 - data[1] / 2, data[1] / 2])

    predictor = NewLesionPredictor.__new__(NewLesionPredictor)  # the network pass alone
    predictor._predictor = FakeNnunetPredictor()
    predictor.precision = "float32"
    predictor.engine = "torch"
    grid = np.diag([1.0, 1.0, 1.0, 1.0])
    followup = np.zeros((4, 5, 6), np.float32)
    followup[1, 2, 3] = 1.0
    probability = predictor.probability(
        Volume(np.zeros((4, 5, 6), np.float32), grid), Volume(followup, grid)
    )
    assert seen == [True]
    assert probability.array[1, 2, 3] == 0.5 and probability.array.sum() == 0.5
    assert not subnormals_flushed()


def test_training_on_the_cpu_runs_with_subnormals_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on this project's CPU: training steps of the shipped network took 2.3-6 times
    longer with subnormals left in (20-57 s against 9 s for 3 steps of 2 patches)."""
    from nnunetv2.run import run_training

    from msnewlesions.model.nnunet import training

    seen: list[tuple[str, bool]] = []

    class FakeTrainer:
        initial_lr = 0.01
        current_epoch = 0

        def apply_schedule(self, schedule: Any) -> None:
            pass

        def run_training(self) -> None:
            seen.append(("train", subnormals_flushed()))

        def perform_actual_validation(self, save_probabilities: bool) -> None:
            seen.append(("validate", subnormals_flushed()))

    monkeypatch.setattr(run_training, "get_trainer_from_args", lambda *a, **k: FakeTrainer())
    training.train(tmp_path / "preprocessed", tmp_path / "results", 520, 0)
    assert seen == [("train", True), ("validate", True)]
    assert not subnormals_flushed()
