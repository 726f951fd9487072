"""The real T1- and T2-weighted scans of open_ms_data given as a FLAIR, as either visit: refused
by the preprocessing's first steps (about 12 s each), in one line naming the visit and the
weighting it looks like; every real FLAIR still reads as one, without a warning. A T2-weighted
baseline runs by default (through ``preprocess``; test_scans.py refuses a T1-weighted scan there);
every other scan, and ``segment``, ``bids`` and ``batch``, with the slow tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import read_volume
from msnewlesions.preprocessing.pipeline import preprocess_pair
from tests.conftest import run_cli

pytestmark = pytest.mark.real_data

OTHER_CONTRASTS = [
    ("patient01", "study1_T1W", "T1-weighted"),
    ("patient01", "study2_T1W", "T1-weighted"),
    ("patient03", "study2_T1W", "T1-weighted"),
    ("patient04", "study1_T1W", "T1-weighted"),
    ("patient01", "study1_T2W", "T2- or PD-weighted"),
    ("patient01", "study2_T2W", "T2- or PD-weighted"),
    ("patient03", "study1_T2W", "T2- or PD-weighted"),
    ("patient03", "study2_T2W", "T2- or PD-weighted"),
    ("patient04", "study1_T2W", "T2- or PD-weighted"),
]


def _flair_of(raw: Path, patient: str, scan: str) -> Path:
    study = scan.split("_")[0]
    same = raw / patient / f"{study}_FLAIR.nii.gz"
    return same if same.exists() else next(sorted((raw / patient).glob("study*_FLAIR.nii.gz")))


@pytest.mark.slow  # test_scans.py refuses a T1-weighted scan by the same rule, faster
def test_a_t1_weighted_follow_up_is_refused_by_segment(
    open_ms_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = open_ms_data / "longitudinal" / "raw"
    t1 = raw / "patient01" / "study1_T1W.nii.gz"
    argv = ["segment", "--baseline", str(raw / "patient01" / "study1_FLAIR.nii.gz"),
            "--followup", str(t1), "--out", str(tmp_path / "out")]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and not (tmp_path / "out").exists()
    line = err.strip().splitlines()[-1]
    assert f"the follow-up ({t1}) does not look like a FLAIR but T1-weighted" in line, line


def test_a_t2_weighted_baseline_is_refused_by_preprocess(
    open_ms_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = open_ms_data / "longitudinal" / "raw"
    t2 = raw / "patient03" / "study1_T2W.nii.gz"
    argv = ["preprocess", "--baseline", str(t2),
            "--followup", str(raw / "patient03" / "study2_FLAIR.nii.gz"),
            "--out", str(tmp_path / "out")]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and not (tmp_path / "out").exists()
    assert f"the baseline ({t2}) does not look like a FLAIR but T2- or PD-weighted" in err


@pytest.mark.slow
@pytest.mark.parametrize(("patient", "scan", "kind"), OTHER_CONTRASTS)
@pytest.mark.parametrize("role", ["baseline", "follow-up"])
def test_every_real_non_flair_is_refused_as_either_visit(
    open_ms_data: Path, patient: str, scan: str, kind: str, role: str
) -> None:
    raw = open_ms_data / "longitudinal" / "raw"
    other = read_volume(raw / patient / f"{scan}.nii.gz")
    flair = read_volume(_flair_of(raw, patient, scan))
    pair = (other, flair) if role == "baseline" else (flair, other)
    with pytest.raises(MSNewLesionsError) as raised:
        preprocess_pair(*pair)
    named = f"the {role} ({raw / patient / scan}.nii.gz)"
    assert str(raised.value).startswith(f"{named} does not look like a FLAIR but {kind}")


@pytest.mark.slow
def test_every_real_flair_reads_as_a_flair_without_a_warning(open_ms_data: Path) -> None:
    from msnewlesions import template
    from msnewlesions.preprocessing import quality, registration

    flairs = sorted((open_ms_data / "longitudinal" / "raw").glob("patient*/study*_FLAIR.nii.gz"))
    flairs += sorted((open_ms_data / "cross_sectional" / "MNI").glob("patient*/FLAIR*.nii.gz"))
    assert len(flairs) == 10
    import SimpleITK as sitk

    for path in flairs:
        scan = read_volume(path)
        moving = sitk.Cast(scan.to_sitk(), sitk.sitkFloat32)
        fit = registration.register_rigid(
            template.mni_t1().to_sitk(), moving, registration.HEAD_SETTINGS
        )
        head = registration.resample(scan, template.mni_t1(), fit.transform)
        coverage = quality.field_of_view_coverage(scan, fit.transform)
        _, warnings = quality.check_scan_on_template(head, coverage, path.name)
        assert warnings == [], (path, warnings)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["bids", "batch"])
def test_a_cohort_reports_the_pair_with_a_t1_weighted_follow_up_as_failed(
    open_ms_data: Path, tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = open_ms_data / "longitudinal" / "raw"
    flair, t1 = raw / "patient01" / "study1_FLAIR.nii.gz", raw / "patient01" / "study2_T1W.nii.gz"
    out = tmp_path / "out"
    given = t1
    if command == "bids":
        root = tmp_path / "bids"
        for session, source in (("01", flair), ("02", t1)):
            target = (
                root / "sub-01" / f"ses-{session}" / "anat" / f"sub-01_ses-{session}_FLAIR.nii.gz"
            )
            target.parent.mkdir(parents=True)
            os.symlink(source, target)
            given = target
        (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
        argv = ["bids", str(root), str(out), "participant", "-q"]
    else:
        manifest = tmp_path / "pairs.csv"
        manifest.write_text(f"id,baseline,followup\np1,{flair},{t1}\n")
        argv = ["batch", str(manifest), str(out), "-q"]
    code, _, _ = run_cli(argv, capsys)
    assert code != 0
    failures = list((out / "logs").glob("*_failure.json"))
    assert len(failures) == 1
    reason = json.loads(failures[0].read_text())["reason"]
    assert f"the follow-up ({given}) does not look like a FLAIR but T1-weighted" in reason
