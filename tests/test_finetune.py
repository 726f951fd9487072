"""finetune's parts on small data: the manifest, the folds, the lesion shapes, the operating
point; and (slow) the whole command on two example pairs, killed with SIGKILL and resumed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.example import write_example_pair
from msnewlesions.finetuning.folds import HELD_OUT_SPLIT_FROM, ellipsoid_shapes, plan_folds
from msnewlesions.finetuning.references import read_reviewed_pairs
from msnewlesions.io import Volume, write_volume
from msnewlesions.lesions import PostprocessingSettings
from msnewlesions.operating_point import ScoredCase, choose_operating_point, score_cases

AFFINE = np.diag([1.0, 1.0, 3.0, 1.0])


def write_pair(folder: Path, name: str, mask_affine: np.ndarray = AFFINE) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role in ("baseline", "followup"):
        paths[role] = folder / f"{name}_{role}.nii.gz"
        write_volume(Volume(np.ones((20, 20, 8), np.float32), AFFINE), paths[role])
    paths["new_lesions"] = folder / f"{name}_mask.nii.gz"
    write_volume(Volume(np.zeros((20, 20, 8), np.uint8), mask_affine), paths["new_lesions"])
    return paths


def test_a_manifest_gives_its_pairs_with_paths_relative_to_it(tmp_path: Path) -> None:
    write_pair(tmp_path / "scans", "a")
    write_pair(tmp_path / "scans", "b")
    manifest = tmp_path / "reviewed.csv"
    manifest.write_text(
        "id,baseline,followup,new_lesions,subject\n"
        "a,scans/a_baseline.nii.gz,scans/a_followup.nii.gz,scans/a_mask.nii.gz,p1\n"
        "b,scans/b_baseline.nii.gz,scans/b_followup.nii.gz,scans/b_mask.nii.gz,p1\n"
    )
    pairs = read_reviewed_pairs(manifest)
    assert [(p.pair_id, p.patient) for p in pairs] == [("a", "p1"), ("b", "p1")]
    assert pairs[1].new_lesions == tmp_path / "scans" / "b_mask.nii.gz"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("a,scans/a_baseline.nii.gz,scans/a_followup.nii.gz,", "no new_lesions mask"),
        ("a,scans/a_baseline.nii.gz,scans/a_followup.nii.gz,gone.nii.gz", "does not exist"),
        ("a,scans/a_baseline.nii.gz,scans/a_followup.nii.gz,scans/c_mask.nii.gz", "grid"),
    ],
)
def test_a_manifest_that_cannot_be_trained_on_is_one_clear_error(
    tmp_path: Path, row: str, message: str
) -> None:
    write_pair(tmp_path / "scans", "a")
    write_pair(tmp_path / "scans", "c", np.diag([1.0, 1.0, 1.0, 1.0]))  # a mask on another grid
    manifest = tmp_path / "reviewed.csv"
    manifest.write_text(f"id,baseline,followup,new_lesions\n{row}\n")
    with pytest.raises(MSNewLesionsError, match=message):
        read_reviewed_pairs(manifest)
    manifest.write_text("id,baseline,followup\na,scans/a_baseline.nii.gz,scans/a_followup.nii.gz\n")
    with pytest.raises(MSNewLesionsError, match="no new_lesions column"):
        read_reviewed_pairs(manifest)


def test_each_patient_is_left_out_once_then_the_final_run_takes_every_pair() -> None:
    folds = plan_folds({"a1": "A", "a2": "A", "b1": "B", "c1": "C"})
    assert [(f.train, f.held_out) for f in folds] == [
        (("b1", "c1"), ("a1", "a2")),
        (("a1", "a2", "c1"), ("b1",)),
        (("a1", "a2", "b1"), ("c1",)),
        (("a1", "a2", "b1", "c1"), ()),
    ]
    assert len({f.dataset_id for f in folds}) == 4 and folds[-1].is_final
    assert [f.name for f in plan_folds({"a1": "A", "a2": "A"})] == ["final"]


def test_from_ten_patients_on_one_fifth_of_them_is_held_out() -> None:
    pairs = {f"p{i}": f"patient{i % HELD_OUT_SPLIT_FROM}" for i in range(2 * HELD_OUT_SPLIT_FROM)}
    folds = plan_folds(pairs)
    assert [f.name for f in folds] == ["held-out split", "final"]
    held_patients = {pairs[p] for p in folds[0].held_out}
    assert len(held_patients) == 2  # a fifth of 10 patients, with both pairs of each
    assert not held_patients & {pairs[p] for p in folds[0].train}
    assert len(folds[0].held_out) + len(folds[0].train) == len(pairs)


def test_ellipsoids_join_a_library_in_deep_white_matter_with_lesion_sizes() -> None:
    from msnewlesions import template

    shapes = ellipsoid_shapes(12, seed=3)
    white_matter = template.mni_white_matter().array
    assert len(shapes) == 12
    for shape in shapes:
        assert 4 <= shape.voxels <= 4 / 3 * np.pi * 4**3 + 1
        centre = np.array(shape.corner) + np.array(shape.mask.shape) // 2
        assert white_matter[tuple(centre)] > 0.9
    assert ellipsoid_shapes(12, seed=3)[5].corner == shapes[5].corner


def _case(
    name: str, blobs: list[tuple[tuple[int, int, int], float]], reference: list
) -> ScoredCase:
    probability = np.zeros((30, 30, 30), np.float32)
    truth = np.zeros((30, 30, 30), np.uint8)
    for (x, y, z), value in blobs:
        probability[x : x + 3, y : y + 3, z : z + 3] = value
    for x, y, z in reference:
        truth[x : x + 3, y : y + 3, z : z + 3] = 1
    affine = np.eye(4)
    return ScoredCase(name, Volume(probability, affine), Volume(truth, affine))


def test_the_operating_point_is_the_best_pooled_f1_and_the_base_setting_wins_near_ties() -> None:
    # One true lesion at 0.45 and one false mark at 0.35: at 0.3 both are marked (pooled F1
    # 2/3), at 0.4 only the true one (F1 1), at 0.5 neither (0).
    cases = [_case("x", [((2, 2, 2), 0.45), ((20, 20, 20), 0.35)], [(2, 2, 2)])]
    candidates = [PostprocessingSettings(t, 3.0) for t in (0.3, 0.4, 0.5)]
    choice, scores = choose_operating_point(cases, candidates)
    assert [round(s.pooled_lesion_f1, 3) for s in scores] == [0.667, 1.0, 0.0]
    assert choice.settings.threshold == 0.4
    # The base model's 0.3 is kept while it is within the margin of the best.
    kept, _ = choose_operating_point(cases, candidates, prefer=candidates[0], tie_margin=0.4)
    assert kept.settings.threshold == 0.3
    empty = score_cases([_case("e", [((5, 5, 5), 0.9)], [])], candidates[0])
    assert empty.false_lesions_per_empty_case == 1 and empty.lesion_f1 is None


def short_finetune_command(folder: Path) -> list[str]:
    """``finetune`` on two example pairs (two patients, seeds 4 and 5, their true new lesions as
    the reviewed masks) into ``folder/model``, one epoch of two iterations per training."""
    rows = ["id,baseline,followup,new_lesions"]
    for seed in (4, 5):
        pair = write_example_pair(folder / f"example{seed}", seed=seed)
        rows.append(f"p{seed},{pair['baseline']},{pair['followup']},{pair['true_new_lesions']}")
    manifest = folder / "reviewed.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return [sys.executable, "-m", "msnewlesions.cli", "finetune", str(manifest),
            str(folder / "model"), "--epochs", "1", "--iterations", "2", "--synthetic-pairs", "1",
            "-q"]  # fmt: skip


@pytest.mark.slow
def test_finetune_on_two_example_pairs_survives_sigkill_and_its_model_segments(
    tmp_path: Path,
) -> None:
    """Two example pairs (two patients), one epoch of two iterations per training: killed with
    SIGKILL during its first training, run again, it goes on and writes a model folder that
    segment takes (about 6 CPU minutes)."""
    command = short_finetune_command(tmp_path)
    model = tmp_path / "model"
    process = subprocess.Popen(command, start_new_session=True)
    work = tmp_path / "model.work"
    deadline = time.monotonic() + 900
    while not list(work.glob("nnunet/results/*/*/fold_0/debug.json")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(1)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not model.exists()
    assert subprocess.run(command, timeout=1800).returncode == 0
    record = json.loads((model / "finetune.json").read_text())
    assert set(record["held_out"]["finetuned"]["cases"]) == {"p4", "p5"}
    assert (model / "fold_0" / "checkpoint_final.pth").exists()
    assert "Held-out figures" in (model / "MODEL_CARD.md").read_text()
    pair = write_example_pair(tmp_path / "example6", seed=6)
    segment = [sys.executable, "-m", "msnewlesions.cli", "segment", "--model", str(model),
               "--baseline", str(pair["baseline"]), "--followup", str(pair["followup"]),
               "--out", str(tmp_path / "segmented"), "-q"]  # fmt: skip
    assert subprocess.run(segment, timeout=900).returncode == 0
    summary = json.loads((tmp_path / "segmented" / "summary.json").read_text())
    assert summary["threshold"] == record["postprocessing"]["threshold"]
