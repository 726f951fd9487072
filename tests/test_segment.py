"""``msnewlesions segment`` end to end on the example pair, with a stand-in network whose
probability map is known (tests/fakes.py), and its failure modes.

The example's follow-up is its baseline (on the MNI grid) moved by a known rigid transform and
resliced to 3 mm slices, so where an MNI point lies on the follow-up's own grid is known
independently of the pipeline's registration.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from msnewlesions.commands import segment as segment_command
from msnewlesions.example import EXAMPLE_ROTATION_RAD, EXAMPLE_TRANSLATION_MM, write_example_pair
from msnewlesions.io import Volume, read_volume, write_volume
from msnewlesions.lesions import PostprocessingSettings
from msnewlesions.model.default import DEFAULT_MODEL
from msnewlesions.preprocessing import model_inputs, quality, registration
from msnewlesions.preprocessing.intensity import zscore
from msnewlesions.preprocessing.pipeline import PreprocessedPair
from msnewlesions.preprocessing.quality import QualityReport
from msnewlesions.preprocessing.registration import read_transform
from msnewlesions.preprocessing.resolution import reslice
from msnewlesions.segment import SegmentOptions
from msnewlesions.validation import mask_agreement
from tests.conftest import run_cli
from tests.fakes import CubesPredictor

#: Cubes in the white matter of the MNI template: 4 x 4 x 4 (64 mm3), 3 x 3 x 3 (27 mm3), and a
#: single voxel (1 mm3, below MSSEG-2's 3 mm3: not a lesion).
#: What ``segment --out`` writes, sorted.
OUTPUTS = [
    "baseline_to_mni.tfm",
    "followup_to_mni.tfm",
    "lesions.csv",
    "new_lesions.nii.gz",
    "new_lesions_mni.nii.gz",
    "report.html",
    "summary.json",
]
CUBES = [((-26.0, -12.0, 26.0), 4), ((27.0, 8.0, 22.0), 3), ((24.0, -30.0, 30.0), 1)]


#: segment preprocesses each distinct pair once here: the subject is what it does after.
pytestmark = pytest.mark.usefixtures("segment_preprocesses_once")


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_example_pair(tmp_path_factory.mktemp("segment_example"), seed=4)


@pytest.fixture(scope="module")
def segmented(example: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("segment") / "result"
    predictor = CubesPredictor(CUBES)
    result = segment_command.segment_files(
        example["baseline"], example["followup"], out, "cubes", predictor=predictor
    )
    return {"out": out, "result": result, "predictor": predictor}


def true_native_point(mni_point: np.ndarray) -> np.ndarray:
    """Where an MNI point lies on the example follow-up (RAS mm), from the example's own
    transform: a follow-up point p shows the baseline (= MNI) point transform(p)."""
    transform = registration.transform_from_matrix(np.eye(4))
    transform.SetRotation(*EXAMPLE_ROTATION_RAD)
    transform.SetTranslation(EXAMPLE_TRANSLATION_MM)
    return registration.transform_points_ras(registration.invert(transform), mni_point)[0]


def test_segment_writes_every_output(segmented: dict) -> None:
    names = sorted(p.name for p in segmented["out"].iterdir())
    assert names == OUTPUTS
    assert segmented["predictor"].calls == 1


def test_the_report_viewer_centres_both_visits_on_a_clicked_lesion(
    segmented: dict, tmp_path: Path
) -> None:
    """Headless Chromium (skips without it): the viewer loads both scans and the overlay, and the
    second lesion's row moves both cursors to its centre. The screenshot is tmp_path/viewer.png."""
    from tests.browser import check_viewer_on_lesion

    loaded = check_viewer_on_lesion(segmented["out"], tmp_path, lesion=2)
    assert loaded.screenshot is not None and loaded.screenshot.stat().st_size > 50_000


def test_the_example_flair_passes_the_contrast_and_field_of_view_checks(segmented: dict) -> None:
    """The other side of tests/hostile/test_scans.py's refusals, on the same construction: the
    example's FLAIR contrast and whole field of view, measured and not warned about."""
    qc = segmented["result"].preprocessed.qc
    for figures in qc.scan_on_template.values():
        assert figures["grey_to_white"] > 1.0 and figures["csf_to_white"] < 0.5
        assert figures["template_brain_covered"] > 0.99
    assert not [warning for warning in qc.warnings if "FLAIR" in warning or "brain:" in warning]
    assert qc.edge_alignment > quality.MIN_SAME_HEAD_EDGE_ALIGNMENT  # one person's visits


def test_lesions_have_the_known_count_volumes_and_mni_centres(segmented: dict) -> None:
    result, predictor = segmented["result"], segmented["predictor"]
    grid = result.labels_mni
    # The single voxel is 1 mm3, not more than 3 mm3: not a lesion. The others are numbered by
    # decreasing volume.
    assert [lesion.volume_mm3 for lesion in result.lesions] == [64.0, 27.0]
    assert [lesion.voxels_mni for lesion in result.lesions] == [64, 27]
    for lesion, index in zip(result.lesions, (0, 1), strict=True):
        expected = predictor.cube_centre_mm(grid, index)
        np.testing.assert_allclose(lesion.centroid_mni_mm, expected, atol=1e-6)
        assert lesion.max_probability == pytest.approx(0.9)


def test_lesions_land_where_the_example_puts_those_points_on_the_followup(segmented: dict) -> None:
    """Native centroids against the example's own transform (not the pipeline's estimate)."""
    result = segmented["result"]
    native = result.new_lesions
    components, count = ndimage.label(native.array > 0, ndimage.generate_binary_structure(3, 1))
    assert count == 2
    for lesion in result.lesions:
        truth = true_native_point(np.array([lesion.centroid_mni_mm]))
        # Registration leaves well under a millimetre on this pair.
        assert np.linalg.norm(np.array(lesion.centroid_native_mm) - truth) < 1.0
        # The native voxels of the lesion: centred there too, within half a 3 mm slice.
        holder = components[tuple(np.round(native.world_to_index(truth[None])[0]).astype(int))]
        assert holder > 0
        voxels = native.index_to_world(np.argwhere(components == holder))
        assert np.linalg.norm(voxels.mean(axis=0) - truth) < 1.6
        # Its native volume (1 x 1 x 3 mm voxels): the cube's cross-section through the one or
        # two 3 mm slices whose centres fall inside it (nearest neighbour).
        side = round(lesion.volume_mm3 ** (1 / 3))
        native_mm3 = lesion.voxels_native * native.voxel_volume_mm3
        assert side**2 * 3.0 * 0.8 <= native_mm3 <= side**2 * 6.0 * 1.2, native_mm3


def test_the_native_mask_has_the_follow_ups_geometry(segmented: dict, example: dict) -> None:
    mask = nib.load(segmented["out"] / "new_lesions.nii.gz")
    followup = nib.load(example["followup"])
    assert mask.shape == followup.shape
    np.testing.assert_allclose(mask.affine, followup.affine, atol=1e-5)
    assert mask.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(mask.dataobj))) == {0, 1}


def test_table_summary_and_masks_agree(segmented: dict) -> None:
    out = segmented["out"]
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader((out / "lesions.csv").open()))
    assert summary["new_lesion_count"] == len(rows) == 2
    assert summary["new_lesion_volume_mm3"] == 91.0
    assert [float(r["volume_mm3"]) for r in rows] == [64.0, 27.0]
    # Both cubes sit in the centrum semiovale, away from ventricles and cortex (test_location.py).
    assert [r["location"] for r in rows] == ["deep white matter", "deep white matter"]
    mni = read_volume(out / "new_lesions_mni.nii.gz")
    assert int(mni.array.sum()) == 91
    assert len(summary["inputs"]["baseline"]["sha256"]) == 64
    assert summary["qc"]["brain_mask_source"] == "scans (skull-stripped)"
    assert (summary["threshold"], summary["min_lesion_mm3"]) == (0.5, 3.0)


def test_the_native_mask_agrees_with_the_mni_mask_through_the_saved_transform(
    segmented: dict,
) -> None:
    out = segmented["out"]
    agreement = mask_agreement(
        read_volume(out / "new_lesions.nii.gz"),
        read_volume(out / "new_lesions_mni.nii.gz"),
        read_transform(out / "followup_to_mni.tfm"),
    )
    assert sorted(agreement.volume_mm3.values()) == [27.0, 64.0]
    assert agreement.native_voxels_in_mni_lesions > 0.99
    assert max(agreement.centroid_distance_mm.values()) < 1.6  # half a 3 mm slice


def test_segment_applies_the_models_own_postprocessing(example: dict, tmp_path: Path) -> None:
    """A model whose own minimum is 30 mm3 keeps only the 64 mm3 cube; an option overrides it."""
    predictor = CubesPredictor(CUBES, PostprocessingSettings(0.5, 30.0))
    own = segment_command.segment_files(
        example["baseline"], example["followup"], tmp_path / "own", predictor=predictor
    )
    assert [lesion.volume_mm3 for lesion in own.lesions] == [64.0]
    summary = json.loads((tmp_path / "own" / "summary.json").read_text())
    assert (summary["threshold"], summary["min_lesion_mm3"]) == (0.5, 30.0)
    options = SegmentOptions(threshold=0.95)  # above the cubes' 0.9: nothing
    none = segment_command.segment_files(
        example["baseline"], example["followup"], tmp_path / "o", None, options, predictor=predictor
    )
    assert none.lesions == [] and not none.new_lesions.array.any()
    assert "No new lesion was found." in (tmp_path / "o" / "report.html").read_text("utf-8")


def test_a_minimum_depth_drops_marks_short_of_it_and_is_reported(
    example: dict, tmp_path: Path
) -> None:
    """The cubes lie in the white matter, more than 3 mm inside the brain; no brain is 200 mm
    deep, so --min-depth-mm 200 leaves nothing. summary.json and the report say which rule."""
    predictor = CubesPredictor(CUBES)
    kept = segment_command.segment_files(
        example["baseline"],
        example["followup"],
        tmp_path / "kept",
        None,
        SegmentOptions(min_depth_mm=3.0),
        predictor=predictor,
    )
    assert sorted(lesion.volume_mm3 for lesion in kept.lesions) == [27.0, 64.0]
    summary = json.loads((tmp_path / "kept" / "summary.json").read_text())
    assert summary["min_depth_mm"] == 3.0
    report = (tmp_path / "kept" / "report.html").read_text("utf-8")
    assert "reaching 3 mm or more inside the brain" in report
    none = segment_command.segment_files(
        example["baseline"],
        example["followup"],
        tmp_path / "none",
        None,
        SegmentOptions(min_depth_mm=200.0),
        predictor=predictor,
    )
    assert none.lesions == [] and not none.new_lesions.array.any()


@pytest.fixture(scope="module")
def thick_slice_followup(example: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The example baseline with fine texture (1 mm detail), and the same brain seen through
    4 mm axial slices as the follow-up: a 3D baseline against a 2D follow-up, both already on
    the MNI grid."""
    folder = tmp_path_factory.mktemp("thick_slice_followup")
    baseline = read_volume(example["baseline"])
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(size=baseline.shape), 0.8)
    textured = baseline.array * (1 + 0.15 * texture / texture.std())
    thick = reslice(textured, axis=2, thickness_mm=4.0) + rng.normal(0, 10, baseline.shape)
    paths = {"baseline": folder / "baseline.nii.gz", "followup": folder / "followup.nii.gz"}
    for role, array in (("baseline", textured), ("followup", thick)):
        array = np.where(baseline.array > 0, np.clip(array, 0, None), 0).astype(np.float32)
        write_volume(baseline.with_array(array), paths[role], np.float32)
    return {role: str(path) for role, path in paths.items()}


def already_registered(baseline: Volume, followup: Volume, options: object = None) -> object:
    """Preprocessing of two scans already on the MNI grid, without registration (the subject
    here is slice matching; registration of thick-slice scans: test_registration.py): the brain
    is where both are non-zero, both z-scored there, every transform the identity."""
    brain = baseline.with_array(((baseline.array > 0) & (followup.array > 0)).astype(np.uint8))
    identity = registration.transform_from_matrix(np.eye(4))
    qc = QualityReport(0.9, 0.9, 1500.0, 0.0, 0.95, [0.1, 0.0, 0.0], {}, {}, [])
    return PreprocessedPair(
        zscore(baseline, brain), zscore(followup, brain), brain, identity, identity, identity, qc
    )


@pytest.mark.parametrize("match_slices", [True, False])
def test_a_thick_slice_followup_is_compared_with_the_baseline_seen_through_its_slices(
    thick_slice_followup: dict, tmp_path: Path, match_slices: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model_inputs, "preprocess_pair", already_registered)
    predictor = CubesPredictor(CUBES)
    options = SegmentOptions(match_slices=match_slices)
    segment_command.segment_files(
        thick_slice_followup["baseline"],
        thick_slice_followup["followup"],
        tmp_path / "out",
        None,
        options,
        predictor=predictor,
    )
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["slice_matching"] is match_slices
    if not match_slices:
        assert summary["slice_matches"] == []
        assert "slice_matching" not in summary["seconds"]
        return
    [match] = summary["slice_matches"]
    assert (match["axis"], match["resliced"]) == (2, "baseline")  # MNI z: the axial slices
    assert 3.0 <= match["thickness_mm"] <= 5.0
    assert "slice_matching" in summary["seconds"]


@pytest.fixture()
def cubes_through_the_cli(monkeypatch: pytest.MonkeyPatch) -> CubesPredictor:
    """The command line's network replaced by the stand-in."""
    predictor = CubesPredictor(CUBES)

    def load(
        model: object,
        device: str = "cpu",
        tta: bool = False,
        precision: str = "auto",
        engine: str = "auto",
    ) -> tuple:
        return predictor, Path("cubes")

    monkeypatch.setattr(segment_command, "load_predictor", load)
    return predictor


def test_msseg2_container_form_writes_just_the_mask(
    cubes_through_the_cli: CubesPredictor,
    example: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mask = tmp_path / "mask.nii.gz"
    argv = ["segment", "-t1", example["baseline"], "-t2", example["followup"], "-o", str(mask)]
    code, out, _ = run_cli([*argv, "-q"], capsys)
    assert code == 0 and "2 new lesion(s), 91 mm3" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]
    assert nib.load(mask).shape == nib.load(example["followup"]).shape
    # An existing mask is kept without --overwrite, with one line and nothing else written.
    code, _, err = run_cli([*argv, "-q"], capsys)
    assert code == 1 and "already exists" in err and len(err.strip().splitlines()) == 1


def test_without_a_model_segment_says_how_to_get_one(
    example: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An installation whose package holds no model (as before the default model was trained).
    monkeypatch.setattr("msnewlesions.model.default.DEFAULT_MODEL", tmp_path / "no_model_here")
    argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "out")], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "msnewlesions train" in err and not (tmp_path / "out").exists()


def test_an_unknown_model_path_is_refused(
    example: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
    code, _, err = run_cli(
        [*argv, "--out", str(tmp_path / "o"), "--model", str(tmp_path / "x")], capsys
    )
    assert code == 1 and "does not exist" in err


def test_a_model_with_one_input_channel_is_refused(
    example: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "one_channel_model"
    model.mkdir()
    shutil.copy2(DEFAULT_MODEL / "plans.json", model / "plans.json")
    dataset = json.loads((DEFAULT_MODEL / "dataset.json").read_text())
    dataset["channel_names"] = {"0": "FLAIR"}
    (model / "dataset.json").write_text(json.dumps(dataset))
    argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "o"), "--model", str(model)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "takes 1 input channel" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_segment_leaves_nothing_partial(
    example: dict[str, str], tmp_path: Path, signal_number: int
) -> None:
    out = tmp_path / "result"
    argv = [sys.executable, "-m", "msnewlesions.cli", "segment", "-v"]
    argv += ["--baseline", example["baseline"], "--followup", example["followup"]]
    argv += ["--out", str(out)]
    # A background launcher (nohup, `cmd &`) makes its children ignore SIGINT; a user at a
    # terminal has Ctrl-C working, so the child starts with the default disposition.
    process = subprocess.Popen(
        argv,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stderr is not None
    for line in process.stderr:  # the run has started once it logs (time-stamped lines)
        if re.match(r"\d\d:\d\d:\d\d ", line):
            process.send_signal(signal_number)
            break
    assert process.wait(timeout=120) != 0
    assert "interrupted" in process.stderr.read()
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_overwrite_keeps_the_previous_result(
    segmented: dict,
    cubes_through_the_cli: CubesPredictor,
    example: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    previous = tmp_path / "result"
    shutil.copytree(segmented["out"], previous)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}

    def interrupted_while_writing(*args: object, **kwargs: object) -> str:
        assert any(tmp_path.glob(".result.partial-*/new_lesions.nii.gz"))  # writing has begun
        raise KeyboardInterrupt

    monkeypatch.setattr(segment_command, "render_report", interrupted_while_writing)
    argv = ["segment", "--baseline", example["baseline"], "--followup", example["followup"]]
    argv += ["--out", str(previous), "--overwrite", "-q"]
    code, _, err = run_cli(argv, capsys)
    assert code != 0 and "interrupted" in err
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]
