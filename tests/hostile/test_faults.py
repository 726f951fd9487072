"""Faults around a run: where it writes (read-only, full, taken by another run), how it ends
(kill -9), and what it may not reach (the network, a writable home or current folder).

File-system faults are real: a tmpfs mounted read-only or tiny in a private mount namespace
(``unshare``, skipped where the system does not allow it). The stand-in network of
tests/test_segment.py replaces the real one where the subject is not the network.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from msnewlesions.atomic import output_lock
from msnewlesions.commands import segment as segment_command
from msnewlesions.example import write_example_pair
from tests.conftest import REPOSITORY, PreprocessOnce, run_cli
from tests.fakes import CubesPredictor
from tests.test_segment import CUBES, OUTPUTS

#: segment preprocesses each distinct pair once here: the subject is what it does after.
pytestmark = pytest.mark.usefixtures("segment_preprocesses_once")


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_example_pair(tmp_path_factory.mktemp("faults_example"), seed=4)


@pytest.fixture
def cubes(monkeypatch: pytest.MonkeyPatch) -> CubesPredictor:
    predictor = CubesPredictor(CUBES)
    monkeypatch.setattr(segment_command, "load_predictor", lambda *a, **k: (predictor, Path("c")))
    return predictor


def segment_argv(example: dict[str, str], out: Path) -> list[str]:
    return ["segment", "--baseline", example["baseline"], "--followup", example["followup"],
            "--out", str(out), "-q"]  # fmt: skip


def test_a_second_run_on_the_same_output_fails_at_once_and_the_first_writes_whole(
    example: dict[str, str], cubes: CubesPredictor, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "result"
    with output_lock(out):  # the first run, at work
        code, _, err = run_cli(segment_argv(example, out), capsys)
        assert code == 1 and "Traceback" not in err
        assert err.strip() == f"error: another run is writing {out} now; wait for it to end or " \
            "choose another output."  # fmt: skip
        assert not out.exists()
    # The first run's own write, once the lock is its own again: whole, and nothing beside it.
    code, _, err = run_cli(segment_argv(example, out), capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def test_a_run_killed_with_sigkill_leaves_debris_that_the_next_run_clears(
    example: dict[str, str], cubes: CubesPredictor, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A real kill -9 of ``segment`` (the shipped network, killed once it logs), then a rerun.
    kill -9 runs no clean-up: the killed run's lock file stays (unlocked: the system released
    it), and had it been writing, its staging folder; one is put there as it would be."""
    out = tmp_path / "result"
    argv = [sys.executable, "-m", "msnewlesions.cli", *segment_argv(example, out)[:-1], "-v"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if re.match(r"\d\d:\d\d:\d\d ", line):
            process.send_signal(signal.SIGKILL)
            break
    assert process.wait(timeout=120) == -signal.SIGKILL
    assert not out.exists()
    staging = tmp_path / ".result.partial-killed"
    staging.mkdir()
    (staging / "new_lesions.nii.gz").write_bytes(b"half a file")
    code, _, err = run_cli(segment_argv(example, out), capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def unshare_works() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "-rm", "true"], capture_output=True)
    return probe.returncode == 0


needs_unshare = pytest.mark.skipif(
    not unshare_works(), reason="unshare -rm (a private mount namespace) is not allowed here"
)


def in_namespace(script: str, *args: str, network: bool = True) -> subprocess.CompletedProcess:
    """Run ``sh -c script`` (``$1``... = args, ``$PYTHON`` = this interpreter) in a private
    mount namespace (and, with ``network=False``, without any network)."""
    flags = "-rm" if network else "-rmn"
    return subprocess.run(
        ["unshare", flags, "sh", "-c", script, "sh", *args],
        capture_output=True, text=True, timeout=900, cwd=REPOSITORY,
        env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@needs_unshare
def test_an_output_on_a_read_only_file_system_is_refused_before_any_work(
    example: dict[str, str], tmp_path: Path
) -> None:
    mount = tmp_path / "readonly"
    mount.mkdir()
    result = in_namespace(
        'mount -t tmpfs -o size=4m,ro tmpfs "$1" && '
        'exec "$PYTHON" -m msnewlesions.cli segment --baseline "$2" --followup "$3" --out "$1/r"',
        str(mount), example["baseline"], example["followup"],
    )  # fmt: skip
    line = one_error_line(result)
    assert "cannot write in" in line and "read-only file system" in line
    assert "rigid registration" not in result.stderr  # refused before any work


@needs_unshare
def test_a_full_disk_gives_one_line_and_no_partial_file(tmp_path: Path) -> None:
    """``model export`` of the shipped model (22 MB) onto a 2 MB file system."""
    mount = tmp_path / "small"
    mount.mkdir()
    model = REPOSITORY / "src/msnewlesions/model/weights"
    result = in_namespace(
        'mount -t tmpfs -o size=2m tmpfs "$1" && "$PYTHON" -m msnewlesions.cli model export '
        '--model "$2" --out "$1/model.zip"; status=$?; ls -A "$1"; exit $status',
        str(mount), str(model),
    )  # fmt: skip
    line = one_error_line(result)
    assert line.startswith("error: no space left on the device holding"), line
    assert result.stdout.strip() == ""  # the file system is empty again: nothing partial


@pytest.mark.slow
@needs_unshare
def test_segment_on_a_full_disk_leaves_nothing_partial(
    example: dict[str, str], tmp_path: Path
) -> None:
    """The real ``segment`` (shipped network) writing onto a 1 MB file system."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = in_namespace(
        'mount -t tmpfs -o size=1m tmpfs "$1" && "$PYTHON" -m msnewlesions.cli segment -q '
        '--baseline "$2" --followup "$3" --out "$1/result"; status=$?; ls -A "$1"; exit $status',
        str(mount), example["baseline"], example["followup"],
    )  # fmt: skip
    line = one_error_line(result)
    assert "no space left on the device" in line
    assert result.stdout.strip() == ""


@pytest.mark.slow
@needs_unshare
def test_segment_runs_offline_with_a_read_only_home_and_current_folder(
    example: dict[str, str], tmp_path: Path
) -> None:
    """No network (``unshare -n``), ``HOME`` and the current folder on read-only file systems:
    the real ``segment`` still writes its whole result (nothing downloaded, no cache needed)."""
    home, here, out = tmp_path / "home", tmp_path / "here", tmp_path / "out"
    home.mkdir()
    here.mkdir()
    result = in_namespace(
        'mount -t tmpfs -o ro tmpfs "$1" && mount -t tmpfs -o ro tmpfs "$2" && cd "$2" && '
        'HOME="$1" exec "$PYTHON" -m msnewlesions.cli segment -q --baseline "$3" '
        '--followup "$4" --out "$5"',
        str(home), str(here), example["baseline"], example["followup"], str(out / "result"),
        network=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (out / "result").iterdir()) == OUTPUTS


def test_a_dataset_resumed_after_a_kill_ignores_the_killed_runs_partial_files(
    tmp_path: Path, preprocess_once: PreprocessOnce
) -> None:
    """What kill -9 leaves while a case is written (atomic_file's temporary file beside the
    label: a hidden ``.x.nii.gz.partial-*.nii.gz``, which nnU-Net would take for a case) is
    removed by the next run, which counts only whole cases."""
    from msnewlesions.cli import main
    from msnewlesions.example import write_example_bids
    from msnewlesions.model import datasets

    bids = write_example_bids(tmp_path / "bids", seeds=[4])
    raw = tmp_path / "raw"
    labels = raw / "Dataset503_MSNewLesions" / "labelsTr"
    labels.mkdir(parents=True)
    leftover = labels / ".sub-02.nii.gz.partial-k9x2.nii.gz"
    leftover.write_bytes(b"half a label")
    argv = ["dataset", "--layout", "bids", "--input", str(bids), "--out", str(raw), "--id", "503"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets, "preprocess_pair", preprocess_once)
        assert main([*argv, "--quiet"]) == 0
    assert not leftover.exists()
    names = [p.name for p in labels.iterdir()]
    assert len(names) == 1 and not names[0].startswith("."), names
    import json

    assert json.loads((labels.parent / "dataset.json").read_text())["numTraining"] == 1


@pytest.mark.slow
def test_a_dataset_killed_with_sigkill_resumes_and_counts_whole_cases(tmp_path: Path) -> None:
    """A real kill -9 of ``msnewlesions dataset`` once its second case has begun, then the
    same command again: it keeps the first case, writes the second, and counts two."""
    import json

    from msnewlesions.example import write_example_bids

    bids = write_example_bids(tmp_path / "bids", seeds=[4, 5])
    raw = tmp_path / "raw"
    argv = [sys.executable, "-m", "msnewlesions.cli", "dataset", "--layout", "bids",
            "--input", str(bids), "--out", str(raw), "--id", "504"]  # fmt: skip
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "case 2/2" in line:
            process.send_signal(signal.SIGKILL)
            break
    assert process.wait(timeout=900) == -signal.SIGKILL
    labels = raw / "Dataset504_MSNewLesions" / "labelsTr"
    (whole,) = [p for p in labels.iterdir() if not p.name.startswith(".")]
    first = whole.stat().st_mtime_ns
    finished = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-2000:]
    names = sorted(p.name for p in labels.iterdir())
    assert len(names) == 2 and not any(name.startswith(".") for name in names), names
    assert whole.stat().st_mtime_ns == first  # kept, not redone
    assert json.loads((labels.parent / "dataset.json").read_text())["numTraining"] == 2


def test_paths_with_spaces_and_non_ascii_characters_work_end_to_end(
    example: dict[str, str], cubes: CubesPredictor, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import json

    folder = tmp_path / "Patientin Müller, 2. Verlauf (ö ü 患者)"
    folder.mkdir()
    baseline, followup = folder / "FLAIR base é.nii.gz", folder / "FLAIR suivi à.nii.gz"
    shutil.copy(example["baseline"], baseline)
    shutil.copy(example["followup"], followup)
    out = folder / "résultat ø"
    argv = ["segment", "--baseline", str(baseline), "--followup", str(followup), "--out", str(out)]
    code, _, err = run_cli([*argv, "-q"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["inputs"]["followup"]["path"] == str(followup)
    assert summary["new_lesion_count"] == len(CUBES) - 1  # the single voxel is no lesion


_KILLED_WHILE_SAVING = """
import os, signal, sys
from pathlib import Path

import torch

from msnewlesions.model import nnunet
from msnewlesions.model.schedule import TrainingSchedule

preprocessed, results = Path(sys.argv[1]), Path(sys.argv[2])
save, saves = torch.save, []


def dying(obj, f, *args, **kwargs):
    # Epoch 1's checkpoint: half of it reaches the disk, then the process is killed.
    save(obj, f, *args, **kwargs)
    if "checkpoint_latest" in str(f):
        saves.append(f)
        if len(saves) == 3:  # each save writes twice (nnU-Net's, then with our state)
            with open(f, "r+b") as handle:
                handle.truncate(os.path.getsize(f) // 2)
            os.kill(os.getpid(), signal.SIGKILL)


torch.save = dying
schedule = TrainingSchedule(epochs=3, anneal_epochs=0, iterations_per_epoch=2, checkpoint_every=1,
                            validation_iterations=1)
nnunet.train(preprocessed, results, 502, 0, "cpu", schedule=schedule, validate=False,
             data_workers=0)
"""


@pytest.mark.slow
def test_training_killed_while_saving_a_checkpoint_resumes_from_the_last_whole_one(
    chain: dict, tmp_path: Path
) -> None:
    """kill -9 in the middle of writing epoch 1's checkpoint (the worst moment), then
    ``--resume``: it continues from epoch 0's checkpoint, whole, and ends at epoch 3."""
    from msnewlesions.model import nnunet
    from msnewlesions.model.nnunet.archives import load_checkpoint
    from msnewlesions.model.schedule import TrainingSchedule

    preprocessed = chain["fold"].parents[3] / "preprocessed"
    results = tmp_path / "results"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_WHILE_SAVING, str(preprocessed), str(results)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    fold = nnunet.model_folder(results, 502, "cpu") / "fold_0"
    assert load_checkpoint(fold / "checkpoint_latest.pth")["current_epoch"] == 1  # epoch 0's
    schedule = TrainingSchedule(epochs=3, anneal_epochs=0, iterations_per_epoch=2,
                                checkpoint_every=1, validation_iterations=1)  # fmt: skip
    nnunet.train(preprocessed, results, 502, 0, "cpu", schedule=schedule, resume=True,
                 validate=False, data_workers=0)  # fmt: skip
    assert load_checkpoint(fold / "checkpoint_final.pth")["current_epoch"] == 3
    assert not [p for p in fold.iterdir() if ".partial-" in p.name]  # the half file removed


def test_a_run_that_blocks_after_sigterm_is_ended_anyway(tmp_path: Path) -> None:
    # A library that keeps the process after the interrupt (nnU-Net's validation waited forever
    # in multiprocessing.Pool.terminate): here, one that swallows every KeyboardInterrupt.
    script = tmp_path / "stuck.py"
    script.write_text(
        "import sys, time\n"
        "from msnewlesions import cli\n"
        "cli.TERMINATE_GRACE_SECONDS = 5.0\n"  # time enough to print, even on a loaded machine
        "cli._interrupt_on_sigterm()\n"
        "ready = False\n"
        "while True:\n"
        "    try:\n"  # 'ready' inside the try: the interrupt may come at once
        "        if not ready:\n"
        "            ready = True\n"
        "            print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "    except KeyboardInterrupt:\n"
        "        print('interrupted, staying', flush=True)\n"
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=REPOSITORY
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=60)
    finally:
        process.kill()
    assert process.stdout.read().strip() == "interrupted, staying"  # it did block
    assert code == 128 + signal.SIGTERM
