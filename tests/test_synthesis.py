"""Synthetic pairs: where new lesions land, their volumes, old lesions that fade, determinism."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from msnewlesions import template
from msnewlesions.example import flair_like, write_example_bids
from msnewlesions.io import read_volume
from msnewlesions.lesions import SIX_CONNECTED
from msnewlesions.model import synthesis
from msnewlesions.model.synthesis import LesionShape, SynthesisSettings
from msnewlesions.model.synthesis.anatomy import finish_anatomy
from msnewlesions.preprocessing import registration
from msnewlesions.preprocessing.intensity import brain_bounding_box
from msnewlesions.preprocessing.resolution import reslice
from tests.conftest import run_cli

#: A second acquisition identical to the first: no reslicing, blur, bias, gamma, noise or motion.
SAME_ACQUISITION = SynthesisSettings(
    reslice_probability=0.0,
    noise_range=(0.0, 0.0),
    blur_sigma_mm=(0.0, 0.0),
    bias_amplitude=0.0,
    gamma_range=(1.0, 1.0),
    fade_pair_probability=0.0,
)


def ball(radius: int) -> np.ndarray:
    grid = np.mgrid[-radius : radius + 1, -radius : radius + 1, -radius : radius + 1]
    return (grid**2).sum(axis=0) <= radius**2


def deep_white_matter_points(count: int, seed: int) -> np.ndarray:
    deep = ndimage.binary_erosion(template.mni_white_matter().array > 0.9, iterations=4)
    points = np.argwhere(deep)
    return points[np.random.default_rng(seed).choice(len(points), count, replace=False)]


@pytest.fixture(scope="module")
def anatomy() -> synthesis.Anatomy:
    """The template's FLAIR-like head with four bright old lesions (balls of radius 3)."""
    image = flair_like(seed=3).array
    brain = template.mni_brain_mask().array > 0
    old = np.zeros(brain.shape, dtype=bool)
    for point in deep_white_matter_points(4, seed=11):
        box = tuple(slice(p - 3, p + 4) for p in point)
        old[box] |= ball(3)
    image = np.where(old, 1.6 * 600, image)
    return finish_anatomy("example", image, brain, old)


@pytest.fixture(scope="module")
def library() -> list[LesionShape]:
    """Balls of 7, 33, 123 and 257 voxels, positioned in deep white matter of the template."""
    shapes = []
    for index, point in enumerate(deep_white_matter_points(40, seed=5)):
        mask = ball([1, 2, 3, 4][index % 4])
        corner = tuple(int(p) - mask.shape[0] // 2 for p in point)
        shapes.append(LesionShape(mask, corner, f"ball{index}"))
    return shapes


def test_the_anatomy_is_scaled_to_white_matter_and_knows_its_lesion_level(anatomy) -> None:
    white_matter = template.mni_white_matter().array > 0.9
    inside = white_matter & (anatomy.brain_mask.array > 0) & (anatomy.old_lesions.array == 0)
    assert np.median(anatomy.image.array[inside]) == pytest.approx(1.0, abs=0.01)
    # flair_like draws white matter at 600 and the old lesions at 960: 1.6 x white matter.
    assert anatomy.lesion_ratio == pytest.approx(1.6, abs=0.05)


def test_new_lesions_land_in_brain_white_matter_with_the_shapes_volumes(anatomy, library) -> None:
    pair = synthesis.synthesize_pair(
        anatomy, library, synthesis.pair_rng(0, 0, 0), SAME_ACQUISITION, 6, misalignment=False
    )
    label = pair.new_lesions.array > 0
    components, count = ndimage.label(label, structure=SIX_CONNECTED)
    placed = pair.info["new_lesions"]
    assert count == len(placed) == 6
    volumes = sorted(np.bincount(components.ravel())[1:].tolist())
    assert volumes == sorted(lesion["voxels"] for lesion in placed)
    assert set(volumes) <= {7, 33, 123, 257}
    assert (pair.brain_mask.array[label] > 0).all()
    box = brain_bounding_box(anatomy.brain_mask, 5.0)
    assert template.mni_white_matter().array[box][label].mean() > 0.35
    # Hyperintense at the follow-up only, and unchanged elsewhere (same acquisition, no motion).
    difference = pair.followup.array - pair.baseline.array
    assert np.median(difference[label]) > 1.0
    far = ~ndimage.binary_dilation(label, iterations=3) & (pair.brain_mask.array > 0)
    assert np.abs(difference[far]).max() < 0.05
    assert not (label & (np.asarray(anatomy.old_lesions.array[box]) > 0)).any()


def test_old_lesions_that_shrink_or_fade_lose_signal_and_carry_no_label(anatomy, library) -> None:
    settings = replace(SAME_ACQUISITION, fade_pair_probability=1.0, fade_lesion_probability=1.0)
    pair = synthesis.synthesize_pair(
        anatomy, library, synthesis.pair_rng(0, 0, 1), settings, 3, misalignment=False
    )
    faded = pair.faded_old_lesions.array > 0
    assert faded.sum() > 50
    assert not (pair.new_lesions.array[faded] > 0).any()
    difference = pair.followup.array - pair.baseline.array
    assert np.median(difference[faded]) < -1.0


GROWING = replace(
    SAME_ACQUISITION, enlarging_pair_probability=1.0, enlarging_lesion_probability=1.0
)


def test_enlarging_old_lesions_gain_a_labelled_rim_that_touches_them(anatomy, library) -> None:
    """Each of the four old balls (radius 3) grows by a 1-4 mm rim or lobe: the grown part is
    bright at the follow-up, labelled, outside the old lesion and touching it."""
    pair = synthesis.synthesize_pair(
        anatomy, library, synthesis.pair_rng(0, 0, 5), GROWING, 0, misalignment=False
    )
    grown = pair.info["enlarging_lesions"]
    assert len(grown) == 4 and pair.info["new_lesions"] == []
    label = pair.new_lesions.array > 0
    box = brain_bounding_box(anatomy.brain_mask, 5.0)
    old = np.asarray(anatomy.old_lesions.array[box]) > 0
    assert label.sum() == sum(g["grown_voxels"] for g in grown)
    assert not (label & old).any()
    _, count = ndimage.label(label | old, structure=SIX_CONNECTED)
    assert count == 4  # each grown part joins its old lesion
    difference = pair.followup.array - pair.baseline.array
    assert np.median(difference[label]) > 0.5
    # A rim of r voxels round a ball of radius 3 holds at most (3 + r)^3 / 3^3 - 1 of it.
    for g in grown:
        assert 5 <= g["grown_voxels"] <= ball(7).sum() - ball(3).sum()


def test_the_shipped_models_settings_draw_no_enlargement_and_leave_the_seeds_draws_alone(
    anatomy,
) -> None:
    """Without enlarging lesions no random number is drawn for them: a pair of the shipped
    model's synthesis is the same pair of its seed as before enlarging lesions existed (the
    accuracy benchmark's present draw, the post-processing choice's redrawn pairs)."""
    from msnewlesions.model.synthesis.changes import grow_old_lesions

    rng = np.random.default_rng(3)
    box = brain_bounding_box(anatomy.brain_mask, 5.0)
    old = np.asarray(anatomy.old_lesions.array[box]) > 0
    brain = np.asarray(anatomy.brain_mask.array[box]) > 0
    white = template.mni_white_matter().array[box]
    image = np.asarray(anatomy.image.array[box])
    assert grow_old_lesions(old, brain, white, image, rng, SynthesisSettings()) == []
    assert rng.random() == np.random.default_rng(3).random()


def test_enlarging_lesions_are_drawn_but_not_labelled_under_the_new_only_convention(
    anatomy, library
) -> None:
    settings = replace(GROWING, label_enlarging=False)
    labelled = synthesis.synthesize_pair(
        anatomy, library, synthesis.pair_rng(0, 0, 5), GROWING, 2, misalignment=False
    )
    unlabelled = synthesis.synthesize_pair(
        anatomy, library, synthesis.pair_rng(0, 0, 5), settings, 2, misalignment=False
    )
    np.testing.assert_array_equal(labelled.followup.array, unlabelled.followup.array)
    new_only = sum(lesion["voxels"] for lesion in unlabelled.info["new_lesions"])
    assert unlabelled.new_lesions.array.sum() == new_only
    assert labelled.new_lesions.array.sum() > new_only


def test_a_tissue_contrast_change_scales_each_tissue_by_its_own_factor(anatomy, library) -> None:
    settings = replace(SAME_ACQUISITION, tissue_contrast=0.3)
    pair = synthesis.synthesize_pair(
        anatomy, library, synthesis.pair_rng(0, 0, 6), settings, 0, misalignment=False
    )
    factors = [
        pair.info[a]["tissue_factors"] for a in ("baseline_acquisition", "followup_acquisition")
    ]
    assert all(0.7 <= f <= 1.3 for fs in factors for f in fs) and factors[0] != factors[1]
    box = brain_bounding_box(anatomy.brain_mask, 5.0)
    white = template.mni_white_matter().array[box] > 0.95
    grey = template.mni_grey_matter().array[box] > 0.95
    source = np.asarray(anatomy.image.array[box])
    scan = np.divide(pair.followup_scan.array, source, out=np.zeros_like(source), where=source > 0)
    for tissue, factor in ((white, factors[1][0]), (grey, factors[1][1])):
        inside = tissue & (pair.brain_mask.array > 0) & (np.asarray(anatomy.image.array[box]) > 0.3)
        assert np.median(scan[inside]) == pytest.approx(factor, abs=0.03)


def test_csf_signal_brightens_dark_fluid_in_patches_and_leaves_tissue_and_label_alone(
    anatomy, library
) -> None:
    """A protocol that leaves signal in the CSF (here at both visits, each at its own level): the
    CSF-dark voxels gain (some as much as tissue, others nothing), tissue and the label stay as
    they were."""
    from msnewlesions.model.synthesis.acquisition import csf_signal

    box = brain_bounding_box(anatomy.brain_mask, 5.0)
    image = np.asarray(anatomy.image.array[box], dtype=np.float32)
    brain = np.asarray(anatomy.brain_mask.array[box]) > 0
    settings = replace(SAME_ACQUISITION, csf_signal=1.5)
    added, level = csf_signal(image, brain, np.random.default_rng(4), settings)
    assert 0.375 <= level <= 1.5
    dark = brain & (image < 0.5 * settings.csf_level)
    tissue = brain & (image >= settings.csf_level)
    assert not added[tissue].any() and not added[~brain].any()
    gain = added[dark]
    # Patchy: a tenth of the fluid gains little, another tenth more than half the level.
    assert np.percentile(gain, 10) < 0.15 * level < 0.5 * level < np.percentile(gain, 90)

    pairs = [
        synthesis.synthesize_pair(
            anatomy,
            library,
            synthesis.pair_rng(0, 0, 6),
            replace(settings, **extra),
            3,
            misalignment=False,
        )
        for extra in ({}, {"csf_signal_probability": 1.0})
    ]
    plain, bright = pairs
    assert "csf_signal" in bright.info["followup_acquisition"]
    assert "csf_signal" not in plain.info["followup_acquisition"]
    assert np.array_equal(plain.new_lesions.array, bright.new_lesions.array)
    source_dark = (image < 0.5 * settings.csf_level) & brain
    for visit in ("baseline", "followup"):
        gained = getattr(bright, f"{visit}_scan").array - getattr(plain, f"{visit}_scan").array
        # Darkness >= 0.5 there and the field's median about 0.5: about a quarter of the level.
        visit_level = bright.info[f"{visit}_acquisition"]["csf_signal"]
        assert np.median(gained[source_dark]) > 0.15 * visit_level
        assert np.abs(gained[tissue]).max() < 1e-5


def test_library_sampling_follows_the_librarys_own_sizes(library) -> None:
    """Ten small shapes for each large one: drawn as found, about 10 in 11 are small;
    log-uniformly, about half."""
    from msnewlesions.model.synthesis.new_lesions import _sample_shape

    skewed = [library[0]] * 10 + [library[3]]
    rng = np.random.default_rng(0)
    as_found = [_sample_shape(skewed, rng, "library").voxels for _ in range(2000)]
    log_uniform = [_sample_shape(skewed, rng, "log-uniform").voxels for _ in range(2000)]
    assert np.mean(np.array(as_found) == 7) == pytest.approx(10 / 11, abs=0.03)
    assert np.mean(np.array(log_uniform) == 7) == pytest.approx(0.5, abs=0.05)


def test_a_pair_depends_only_on_its_seed(anatomy, library) -> None:
    first = synthesis.synthesize_pair(anatomy, library, synthesis.pair_rng(7, 1, 2))
    again = synthesis.synthesize_pair(anatomy, library, synthesis.pair_rng(7, 1, 2))
    other = synthesis.synthesize_pair(anatomy, library, synthesis.pair_rng(7, 1, 3))
    np.testing.assert_array_equal(first.followup.array, again.followup.array)
    np.testing.assert_array_equal(first.new_lesions.array, again.new_lesions.array)
    assert first.info == again.info
    assert not np.array_equal(first.baseline.array, other.baseline.array)


def test_the_second_acquisition_differs_within_the_asked_limits(anatomy, library) -> None:
    settings = replace(SynthesisSettings(), reslice_probability=1.0)
    pair = synthesis.synthesize_pair(anatomy, library, synthesis.pair_rng(1, 0, 0), settings, 4)
    motion = pair.info["followup_motion"]
    assert motion["translation_mm"] <= 0.5
    assert max(abs(a) for a in motion["rotation_degrees"]) <= 0.5
    for acquisition in ("baseline_acquisition", "followup_acquisition"):
        assert 3.0 <= pair.info[acquisition]["reslice"]["thickness_mm"] <= 5.0
    # The motion moves the label with the image: it keeps its volume to within a few percent.
    assert pair.new_lesions.array.sum() == pytest.approx(
        sum(lesion["voxels"] for lesion in pair.info["new_lesions"]), rel=0.15
    )
    brain = pair.brain_mask.array > 0
    correlation = np.corrcoef(pair.baseline.array[brain], pair.followup.array[brain])[0, 1]
    assert 0.6 < correlation < 0.99


def test_reslicing_spreads_a_thin_slab_over_the_slice_thickness() -> None:
    image = np.zeros((8, 8, 60), dtype=np.float32)
    image[:, :, 30] = 1.0
    profile = reslice(image, axis=2, thickness_mm=4.0)[4, 4]
    assert profile.sum() == pytest.approx(1.0, abs=0.15)
    assert (profile > profile.max() / 2).sum() >= 3
    flat = reslice(np.ones((8, 8, 60), dtype=np.float32), axis=2, thickness_mm=4.0)
    np.testing.assert_allclose(flat[:, :, 8:-8], 1.0, atol=1e-3)


def test_the_dataset_is_written_resumably_with_a_hold_out_split(
    anatomy, library, tmp_path: Path
) -> None:
    folder = tmp_path / "Dataset599_MSNewLesions"
    other = replace(anatomy, name="other")
    arguments = ([(0, anatomy)], [(1, other)], library, 2, 1, 5)
    synthesis.write_synthetic_dataset(folder, *arguments)
    labels = sorted(p.name for p in (folder / "labelsTr").glob("*.nii.gz"))
    assert len(labels) == 3
    assert len(list((folder / "imagesTr").glob("*.nii.gz"))) == 6
    split = json.loads((folder / "splits_final.json").read_text())
    assert len(split) == 1
    assert split[0]["val"] == ["other-synthetic000"]
    assert len(split[0]["train"]) == 2
    first_write = (folder / "labelsTr" / labels[0]).stat().st_mtime_ns
    synthesis.write_synthetic_dataset(folder, *arguments)
    assert (folder / "labelsTr" / labels[0]).stat().st_mtime_ns == first_write


# About 40 s past the example's preprocessing: with the slow tests. The synthetic dataset's
# writing and resuming stay in the default run (test_the_dataset_is_written_resumably_...).
@pytest.mark.slow
def test_real_pairs_join_the_training_side_with_their_gaining_lesions(
    anatomy, library, tmp_path: Path, preprocess_once, monkeypatch: pytest.MonkeyPatch
) -> None:
    from msnewlesions.model import datasets, nnunet
    from msnewlesions.model.datasets import read_cases

    # The example pair test_segment.py preprocesses too: once per session (PreprocessOnce).
    monkeypatch.setattr(datasets, "preprocess_pair", preprocess_once)
    real = read_cases("bids", write_example_bids(tmp_path / "bids", seeds=[4]))
    folder = tmp_path / "raw" / "Dataset598_MSNewLesions"
    arguments = ([(0, anatomy)], [(1, replace(anatomy, name="other"))], library, 1, 1, 5)
    synthesis.write_synthetic_dataset(folder, *arguments, real_pairs=real)
    split = json.loads((folder / "splits_final.json").read_text())[0]
    assert split == {
        "train": ["example-synthetic000", "sub-01_ses-01_ses-02"],
        "val": ["other-synthetic000"],
    }
    records = json.loads((folder / "msnewlesions_cases.json").read_text())
    assert records["sub-01_ses-01_ses-02"]["role"] == "train"
    # The example's new lesions gain signal: all of the label stays, on the follow-up's tissue.
    label = read_volume(folder / "labelsTr" / "sub-01_ses-01_ses-02.nii.gz").array > 0
    followup = read_volume(folder / "imagesTr" / "sub-01_ses-01_ses-02_0001.nii.gz").array
    baseline = read_volume(folder / "imagesTr" / "sub-01_ses-01_ses-02_0000.nii.gz").array
    assert label.sum() > 100
    assert np.median(followup[label] - baseline[label]) > 0.5
    nnunet.verify_dataset(folder.parent, 598)
    # Weighted: named three times in the split (nnU-Net samples it three times as often), still
    # written once; the resumed run rewrites nothing else.
    first_write = (folder / "labelsTr" / "sub-01_ses-01_ses-02.nii.gz").stat().st_mtime_ns
    synthesis.write_synthetic_dataset(folder, *arguments, real_pairs=real, real_pair_copies=3)
    split = json.loads((folder / "splits_final.json").read_text())[0]
    assert split["train"] == ["example-synthetic000"] + ["sub-01_ses-01_ses-02"] * 3
    assert (folder / "labelsTr" / "sub-01_ses-01_ses-02.nii.gz").stat().st_mtime_ns == first_write
    assert len(list((folder / "labelsTr").glob("*.nii.gz"))) == 3
    nnunet.verify_dataset(folder.parent, 598)  # numTraining counts the cases, not the names


def test_leave_one_out_names_the_real_pair_that_joins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from msnewlesions.errors import MSNewLesionsError
    from msnewlesions.model.synthesis.dataset import chosen_real_pairs

    raw = tmp_path / "open_ms_data" / "longitudinal" / "raw"
    for patient in ("patient01", "patient02", "patient03"):
        (raw / patient).mkdir(parents=True)
        visits = ("study1",) if patient == "patient02" else ("study1", "study2")
        for name in (f"{visit}_FLAIR.nii.gz" for visit in visits):
            (raw / patient / name).write_bytes(b"")
    root = tmp_path / "open_ms_data"
    assert chosen_real_pairs(root, ()) == []
    assert [c.case_id for c in chosen_real_pairs(root, ("all",))] == ["patient01", "patient03"]
    assert [c.case_id for c in chosen_real_pairs(root, ("patient03",))] == ["patient03"]
    with pytest.raises(MSNewLesionsError, match="patient02: not a complete real pair"):
        chosen_real_pairs(root, ("patient02",))
    # Through the command: one sentence before anything is prepared, and the two ways of naming
    # real pairs are not mixed.
    out = tmp_path / "raw"
    command = ["synthesize", "--open-ms-data", str(root), "--out", str(out)]
    code, _, err = run_cli([*command, "--real-pair", "patient02"], capsys)
    assert code != 0
    assert "patient02: not a complete real pair" in err
    assert "those are patient01, patient03" in err
    assert not out.exists()
    code, _, err = run_cli([*command, "--real-pairs", "--real-pair", "patient03"], capsys)
    assert code == 2
    assert "not both" in err


@pytest.mark.real_data
def test_the_real_lesion_library_and_a_real_anatomy(open_ms_data: Path) -> None:
    sources, masks = synthesis.open_ms_data_sources(open_ms_data)
    assert len(sources) == 10
    assert len(masks) >= 29
    library = synthesis.lesion_library(masks[:5])
    volumes = np.array([shape.voxels for shape in library])
    assert volumes.min() >= 5
    assert volumes.max() <= 8000
    source = next(s for s in sources if s.in_mni)
    anatomy = synthesis.anatomy_from_mni_scan(source.name, source.flair, source.lesion_mask)
    assert 900_000 < anatomy.brain_mask.array.sum() < 1_600_000
    assert 1.2 < anatomy.lesion_ratio < 1.8
    pair = synthesis.synthesize_pair(anatomy, library, synthesis.pair_rng(0, 0, 0), None, 5)
    label = pair.new_lesions.array > 0
    assert label.any()
    assert (pair.brain_mask.array[label] > 0).all()
    # Real lesions are brighter than the brain at the follow-up (z-scores).
    assert np.median(pair.followup.array[label]) > np.median(pair.followup.array[~label]) + 0.5


@pytest.mark.slow  # a real preprocessing of synthetic native pairs: the default run's heaviest
def test_preprocessed_pairs_are_written_as_segment_gives_them_to_the_network(
    anatomy, library, tmp_path: Path
) -> None:
    """Drawn from a stream of their own, through registration, HD-BET, N4 and slice matching;
    the label follows the lesions onto the preprocessed grid."""
    folder = tmp_path / "Dataset597_MSNewLesions"
    synthesis.write_synthetic_dataset(
        folder, [(0, anatomy)], [], library, 0, 0, 5, preprocessed_pairs_per_anatomy=1
    )
    name = "example-preprocessed000"
    assert json.loads((folder / "splits_final.json").read_text())[0]["train"] == [name]
    record = json.loads((folder / "msnewlesions_cases.json").read_text())[name]
    assert record["seed"] == [5, 0, 0, synthesis.PREPROCESSED_STREAM]
    assert isinstance(record["through_preprocessing"]["slice_matches"], list)
    # The same draw, written directly, is another pair than the direct stream's first one.
    drawn = synthesis.synthesize_pair(anatomy, library, np.random.default_rng(record["seed"]))
    direct = synthesis.synthesize_pair(anatomy, library, synthesis.pair_rng(5, 0, 0))
    assert drawn.new_lesions.array.sum() > 0
    assert not np.array_equal(drawn.new_lesions.array, direct.new_lesions.array)

    label = read_volume(folder / "labelsTr" / f"{name}.nii.gz")
    baseline = read_volume(folder / "imagesTr" / f"{name}_0000.nii.gz")
    followup = read_volume(folder / "imagesTr" / f"{name}_0001.nii.gz")
    assert label.shape == baseline.shape == followup.shape
    np.testing.assert_allclose(label.affine, followup.affine, atol=1e-4)
    lesions = label.array > 0
    # Registration of a pair already on the template is near the identity: the volume is kept
    # (nearest-neighbour resampling, within 10 %), and the lesions are where the follow-up
    # gained signal: far brighter than at the baseline, unlike the rest of the brain.
    assert abs(lesions.sum() - drawn.new_lesions.array.sum()) <= 0.1 * drawn.new_lesions.array.sum()
    gain = followup.array - baseline.array
    brain = baseline.array != 0
    assert np.median(gain[lesions]) > 1.0
    assert abs(np.median(gain[brain & ~lesions])) < 0.2


def test_a_pair_that_preprocessing_refuses_is_skipped_and_stays_skipped(
    anatomy, library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """segment refuses scans its registration QC fails; such a pair is not training data."""
    from msnewlesions.errors import MSNewLesionsError

    def refuse(pair, options=None, match_slices=True):
        raise MSNewLesionsError("the baseline could not be aligned to the MNI template.")

    monkeypatch.setattr(synthesis.dataset, "as_segment_sees_it", refuse)
    folder = tmp_path / "Dataset596_MSNewLesions"
    arguments = ([(0, anatomy)], [], library, 1, 0, 5)
    synthesis.write_synthetic_dataset(folder, *arguments, preprocessed_pairs_per_anatomy=1)
    split = json.loads((folder / "splits_final.json").read_text())[0]
    assert split["train"] == ["example-synthetic000"]
    record = json.loads((folder / "msnewlesions_cases.json").read_text())["example-preprocessed000"]
    assert record["role"] == "skipped"
    assert "MNI template" in record["reason"]
    assert not (folder / "labelsTr" / "example-preprocessed000.nii.gz").exists()

    def must_not_run(pair, options=None, match_slices=True):
        raise AssertionError("a skipped pair is not tried again")

    monkeypatch.setattr(synthesis.dataset, "as_segment_sees_it", must_not_run)
    synthesis.write_synthetic_dataset(folder, *arguments, preprocessed_pairs_per_anatomy=1)
    assert json.loads((folder / "splits_final.json").read_text())[0] == split


@pytest.mark.slow  # segment's preprocessing of a synthetic native pair (about 35 s)
def test_a_native_acquisition_tilts_the_head_on_a_thick_sliced_grid_and_the_label_follows(
    anatomy, library
) -> None:
    """Each visit on a scanner's grid at its own pose (thick slices, in-plane 0.5-1 mm); through
    segment's preprocessing, the label lands where the follow-up gained signal."""
    settings = replace(
        SAME_ACQUISITION,
        native_acquisition=True,
        three_d_probability=0.0,
        slice_axis_probabilities=(0.0, 0.0, 1.0),
        noise_range=(0.02, 0.02),
    )
    pair = synthesis.synthesize_pair(
        anatomy, library, synthesis.pair_rng(0, 0, 7), settings, 4, native=True
    )
    native = pair.info["followup_acquisition"]["native"]
    scan = pair.followup_scan
    assert scan.spacing[2] == pytest.approx(native["slice_spacing_mm"])
    assert 3.0 <= scan.spacing[2] <= 6.0 and 0.5 <= scan.spacing[0] <= 1.0
    assert pair.followup_pose is not None
    assert pair.info["baseline_acquisition"]["native"] != native  # each visit its own
    baseline, followup, label, _ = synthesis.as_segment_sees_it(pair)
    assert label.array.sum() > 0.6 * pair.new_lesions.array.sum()
    difference = followup.array - baseline.array
    assert np.median(difference[label.array > 0]) > 0.8


def test_each_native_visit_keeps_the_pose_its_registration_should_find(anatomy, library) -> None:
    """The brain drawn through each visit's pose onto that visit's scan covers the scan's own
    (non-zero) brain: the poses are the truth benchmarks/registration.py --native scores against."""
    settings = replace(
        SAME_ACQUISITION, native_acquisition=True, three_d_probability=0.0, in_plane_mm=(1.0, 1.0)
    )
    pair = synthesis.synthesize_pair(
        anatomy, library, synthesis.pair_rng(0, 0, 3), settings, 2, native=True
    )
    poses = {"baseline": pair.baseline_pose, "followup": pair.followup_pose}
    assert poses["baseline"] is not None and poses["followup"] is not None
    for visit, scan in (("baseline", pair.baseline_scan), ("followup", pair.followup_scan)):
        drawn = registration.resample(pair.brain_mask, scan, poses[visit], "nearest").array > 0
        own = scan.array > 0
        dice = 2 * (drawn & own).sum() / (drawn.sum() + own.sum())
        assert dice > 0.9, (visit, dice)
    # The other visit's pose puts the brain elsewhere (each visit has a head pose of its own).
    other = (
        registration.resample(
            pair.brain_mask, pair.baseline_scan, poses["followup"], "nearest"
        ).array
        > 0
    )
    own = pair.baseline_scan.array > 0
    assert 2 * (other & own).sum() / (other.sum() + own.sum()) < 0.9


@pytest.mark.real_data
def test_real_change_masks_become_shapes_of_their_own_volume_in_the_template_brain(
    open_ms_data: Path,
) -> None:
    """Two of the 13 change masks without scans: carried onto the template grid through their
    brain masks, their components keep their volume (to 20 %) and lie in the template's brain."""
    masks = synthesis.open_ms_data_change_masks(open_ms_data)
    assert len(masks) == 13
    assert all("patient01" not in str(m) and "patient03" not in str(m) for m, _ in masks)
    shapes = synthesis.change_library(masks[:2], min_voxels=1)
    native_mm3 = sum(
        float((read_volume(m).array > 0).sum() * read_volume(m).voxel_volume_mm3)
        for m, _ in masks[:2]
    )
    assert sum(s.voxels for s in shapes) == pytest.approx(native_mm3, rel=0.2)
    brain = ndimage.binary_dilation(template.mni_brain_mask().array > 0, iterations=3)
    for shape in shapes:
        box = tuple(slice(c, c + n) for c, n in zip(shape.corner, shape.mask.shape, strict=True))
        assert brain[box][shape.mask].mean() > 0.9
