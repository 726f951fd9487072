"""Hostile scans that read fine but are not a usable FLAIR pair: the wrong contrast, a field of
view that misses most of the brain, two different people. Refused by the preprocessing right
after its first registrations (before skull stripping), in one line that says what to do.

The scans are the example pair's (the template's tissue maps moved by a known rigid transform,
resliced to 3 mm), given another contrast or cut; the thresholds they meet were measured on the
real scans here (benchmarks/input_checks.py, quoted in ``preprocessing.quality``).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from msnewlesions import example, template
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume, write_volume
from msnewlesions.preprocessing.pipeline import preprocess_pair
from tests.conftest import run_cli


def contrast_pair(white: float, grey: float, csf: float) -> tuple[Volume, Volume]:
    """The example pair with the tissues' intensities replaced (as its FLAIR is made)."""

    def like(seed: int = 0) -> Volume:
        from scipy import ndimage

        rng = np.random.default_rng(seed)
        brain = template.mni_brain_mask().array > 0
        maps = template.mni_white_matter().array, template.mni_grey_matter().array
        rest = np.clip(brain - maps[0] - maps[1], 0, 1)
        image = ndimage.gaussian_filter(white * maps[0] + grey * maps[1] + csf * rest, 0.7)
        image += rng.normal(0, 15, image.shape)
        image[~ndimage.binary_dilation(brain, iterations=3)] = 0
        return template.mni_t1().with_array(np.clip(image, 0, None).astype(np.float32))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(example, "flair_like", like)
        pair = example.make_example_pair(seed=4)
    return pair.baseline, pair.followup


@pytest.mark.parametrize(
    ("intensities", "message"),
    [
        ((700.0, 450.0, 150.0), "white matter is brighter than its grey matter"),  # T1-weighted
        pytest.param(
            (450.0, 600.0, 1000.0),
            "its CSF is brighter than its white matter",
            marks=pytest.mark.slow,
        ),  # T2-weighted
    ],
    ids=["T1-weighted", "T2-weighted"],
)
def test_a_scan_that_is_not_a_flair_is_refused(
    intensities: tuple[float, float, float], message: str
) -> None:
    baseline, followup = contrast_pair(*intensities)
    with pytest.raises(MSNewLesionsError, match=message) as raised:
        preprocess_pair(baseline, followup)
    assert "give the FLAIR series" in str(raised.value)
    assert str(raised.value).startswith("the baseline does not look like a FLAIR")


@pytest.mark.slow
def test_a_scan_showing_less_than_half_the_brain_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The follow-up cut to its top 40 % of slices: through segment, one line and nothing
    written."""
    pair = example.make_example_pair(seed=4)
    followup = pair.followup
    keep = int(followup.shape[2] * 0.6)
    affine = followup.affine.copy()
    affine[:3, 3] = followup.affine[:3, :3] @ [0, 0, keep] + followup.affine[:3, 3]
    cut = Volume(followup.array[:, :, keep:], affine)
    write_volume(pair.baseline, tmp_path / "baseline.nii.gz")
    write_volume(cut, tmp_path / "followup.nii.gz")
    out = tmp_path / "result"
    code, _, err = run_cli(
        ["segment", "--baseline", str(tmp_path / "baseline.nii.gz"),
         "--followup", str(tmp_path / "followup.nii.gz"), "--out", str(out)],
        capsys,
    )  # fmt: skip
    assert code == 1 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0]  # after the progress
    named = f"the follow-up ({tmp_path / 'followup.nii.gz'}) shows only"
    assert named in err and "give a scan of the whole brain" in err
    assert not out.exists()
    assert nib.load(tmp_path / "followup.nii.gz").shape == cut.shape  # the input untouched


@pytest.mark.slow
def test_two_peoples_scans_are_refused_as_one_pair(
    open_ms_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """patient01's baseline with patient03's follow-up (real scans, ../shared): refused by the
    registration check, in one line, nothing written."""
    raw = open_ms_data / "longitudinal" / "raw"
    out = tmp_path / "result"
    code, _, err = run_cli(
        ["segment", "--baseline", str(raw / "patient01" / "study1_FLAIR.nii.gz"),
         "--followup", str(raw / "patient03" / "study2_FLAIR.nii.gz"), "--out", str(out)],
        capsys,
    )  # fmt: skip
    assert code == 1 and "Traceback" not in err, err
    assert "do not look like scans of one person" in err or "correlate" in err
    assert not out.exists()
