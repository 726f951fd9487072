"""The container: built with ``make container``, run offline, read-only and not as root, with
the shipped model and with a model folder that ``finetune`` wrote.

Slow (the first build installs torch and nnU-Net into the image: several minutes; a code change
rebuilds one small layer). Skips without podman or docker (``make container-deps``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from msnewlesions.example import write_example_pair
from msnewlesions.io import read_volume
from msnewlesions.metrics import dice

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/msnewlesions:latest"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine() -> list[str]:
    """The engine and the flags this machine needs (scripts/container_engine.sh), image built."""
    if not (shutil.which("podman") or shutil.which("docker")):
        pytest.skip("neither podman nor docker is installed (make container-deps)")
    subprocess.run(["make", "container"], cwd=ROOT, check=True, timeout=3600)
    found = subprocess.run(
        [str(ROOT / "scripts" / "container_engine.sh"), IMAGE],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.rstrip("\n")
    name, global_flags, run_flags = found.split("\t")
    return [name, *global_flags.split(), "run", *run_flags.split()]


def _run(
    engine: list[str], inputs: Path, out: Path, *arguments: str
) -> subprocess.CompletedProcess:
    command = [
        *engine,
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-v",
        f"{inputs}:/data:ro",
        "-v",
        f"{out}:/out",
        IMAGE,
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("container_inputs")
    write_example_pair(folder, seed=4)
    os.chmod(folder, 0o755)  # pytest's folders are private; the container's user reads them
    for file in folder.iterdir():
        os.chmod(file, 0o644)
    return folder


def _writable_output(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o777)  # the container's user (uid 1000) writes here
    return out


def test_the_msseg2_line_offline_and_read_only_gives_the_hosts_mask(
    engine: list[str], pair: Path, tmp_path: Path
) -> None:
    from msnewlesions.cli import main

    host = tmp_path / "host.nii.gz"
    baseline, followup = pair / "baseline.nii.gz", pair / "followup.nii.gz"
    assert main(["segment", "-t1", str(baseline), "-t2", str(followup), "-o", str(host)]) == 0
    out = _writable_output(tmp_path)
    done = _run(
        engine,
        pair,
        out,
        "segment",
        "-t1",
        "/data/baseline.nii.gz",
        "-t2",
        "/data/followup.nii.gz",
        "-o",
        "/out/new_lesions.nii.gz",
    )
    assert done.returncode == 0, done.stderr
    inside = read_volume(out / "new_lesions.nii.gz")
    outside = read_volume(host)
    np.testing.assert_allclose(inside.affine, outside.affine, atol=1e-5)
    assert outside.array.any()
    assert dice(inside.array > 0, outside.array > 0) >= 0.99
    assert (out / "new_lesions.nii.gz").stat().st_uid != 0


def test_the_container_user_is_not_root(engine: list[str], pair: Path, tmp_path: Path) -> None:
    command = [*engine, "--rm", "--network", "none", "--entrypoint", "id", IMAGE, "-u"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() != "0"


def test_a_failing_input_gives_the_hosts_one_line_error_and_writes_nothing(
    engine: list[str], pair: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from msnewlesions.cli import main

    out = _writable_output(tmp_path)
    missing = "/data/no_such_scan.nii.gz"
    done = _run(
        engine,
        pair,
        out,
        "segment",
        "-t1",
        missing,
        "-t2",
        "/data/followup.nii.gz",
        "-o",
        "/out/m.nii.gz",
    )
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no_such_scan.nii.gz" in lines[0]
    assert list(out.iterdir()) == []
    host_code = main(
        [
            "segment",
            "-t1",
            missing,
            "-t2",
            str(pair / "followup.nii.gz"),
            "-o",
            str(tmp_path / "m.nii.gz"),
        ]
    )
    host_error = capsys.readouterr().err.strip()
    assert host_code == done.returncode
    assert host_error == lines[0]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder written by ``finetune`` on the host: two example pairs (two patients), one
    epoch of two iterations per training (a few CPU minutes)."""
    from tests.test_finetune import short_finetune_command

    root = tmp_path_factory.mktemp("finetuned")
    subprocess.run(short_finetune_command(root), check=True, timeout=1800)
    model = root / "model"
    for path in [model, *model.rglob("*")]:  # the container's user reads it
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return model


def test_a_finetuned_model_folder_runs_in_the_container_as_on_the_host(
    engine: list[str], pair: Path, finetuned: Path, tmp_path: Path
) -> None:
    """A folder ``finetune`` wrote, mounted read-only: the container exports its graphs into a
    cache it cannot keep (the image is read-only) and gives the host's mask and operating point."""
    from msnewlesions.cli import main

    host = tmp_path / "host"
    argv = ["segment", "--model", str(finetuned), "--baseline", str(pair / "baseline.nii.gz"),
            "--followup", str(pair / "followup.nii.gz"), "--out", str(host), "-q"]  # fmt: skip
    assert main(argv) == 0
    out = _writable_output(tmp_path)
    done = _run(
        [*engine, "-v", f"{finetuned}:/model:ro"],
        pair,
        out,
        "segment",
        "--model",
        "/model",
        "--baseline",
        "/data/baseline.nii.gz",
        "--followup",
        "/data/followup.nii.gz",
        "--out",
        "/out/result",
        "-q",
    )
    assert done.returncode == 0, done.stderr
    inside = json.loads((out / "result" / "summary.json").read_text())
    outside = json.loads((host / "summary.json").read_text())
    record = json.loads((finetuned / "finetune.json").read_text())
    assert inside["threshold"] == outside["threshold"] == record["postprocessing"]["threshold"]
    assert inside["new_lesion_count"] == outside["new_lesion_count"]
    mask_inside = read_volume(out / "result" / "new_lesions.nii.gz").array > 0
    mask_outside = read_volume(host / "new_lesions.nii.gz").array > 0
    assert mask_inside.sum() == mask_outside.sum() == 0 or dice(mask_inside, mask_outside) >= 0.99
