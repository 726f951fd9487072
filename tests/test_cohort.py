"""Cohorts (``msnewlesions bids`` and ``batch``): discovery, pairs, derivative names, resumption,
failures, a local pool against a Dask cluster, and the group table.

The engine's tests run a quick stand-in for ``segment`` (tests/fakes.threshold_segmenter) on
small scans whose new lesions are known: bright cubes present at the follow-up only. One test runs
the real ``segment`` (with the stand-in network) through the same publishing.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from msnewlesions.cohort import engine, pair_job
from msnewlesions.cohort.bids import discover_bids
from msnewlesions.cohort.manifest import read_manifest
from msnewlesions.cohort.outputs import BidsPairOutputs, failure_path
from msnewlesions.cohort.pair_job import SegmentSettings, pair_lock
from msnewlesions.cohort.pairs import Visit, pair_visits
from msnewlesions.commands.cohort import (
    BidsSelection,
    batch,
    bids_group,
    bids_pairs,
    bids_participant,
)
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.io import Volume, write_volume
from tests.conftest import run_cli
from tests.fakes import threshold_segmenter

FAKE = SegmentSettings(segmenter=threshold_segmenter)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def scan(path: Path, cubes: list[tuple[int, int, int]], brightest: float = 200.0) -> Path:
    """A 16^3 scan of 2 mm voxels: 50 everywhere, ``brightest`` in 2^3 cubes at ``cubes``."""
    array = np.full((16, 16, 16), 50.0, np.float32)
    for x, y, z in cubes:
        array[x : x + 2, y : y + 2, z : z + 2] = brightest
    path.parent.mkdir(parents=True, exist_ok=True)
    write_volume(Volume(array, AFFINE), path, np.float32)
    return path


def flair(root: Path, subject: str, session: str, cubes: list, **kw: float) -> Path:
    name = f"sub-{subject}_ses-{session}_FLAIR.nii.gz"
    return scan(root / f"sub-{subject}" / f"ses-{session}" / "anat" / name, cubes, **kw)


A, B, C = (2, 2, 2), (8, 8, 8), (2, 10, 4)


@pytest.fixture()
def cohort(tmp_path: Path) -> Path:
    """sub-01: three sessions (1 new cube, then 1 more); sub-02: two (2 new cubes); sub-03:
    sessions "b" then "a" in time (sessions.tsv), 1 new cube at "a"."""
    root = tmp_path / "bids"
    flair(root, "01", "01", [])
    flair(root, "01", "02", [A])
    flair(root, "01", "03", [A, B])
    flair(root, "02", "01", [])
    flair(root, "02", "02", [A, C])
    flair(root, "03", "a", [C])
    flair(root, "03", "b", [])
    (root / "sub-03" / "sub-03_sessions.tsv").write_text(
        "session_id\tacq_time\nses-a\t2023-06-01T10:00:00\nses-b\t2023-01-01T10:00:00\n"
    )
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    return root


EXPECTED_PAIRS = {
    "sub-01_ses-02_desc-since01": 1,
    "sub-01_ses-03_desc-since02": 1,
    "sub-02_ses-02_desc-since01": 2,
    "sub-03_ses-a_desc-sinceb": 1,
}


def mask_array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


# ---------------------------------------------------------------------------------- pairs


def test_sessions_pair_in_time_order_consecutively_or_against_the_first() -> None:
    t = [np.datetime64(d).astype(object) for d in ("2020-01-01", "2020-06-01", "2021-01-01")]
    visits = [
        Visit("1", "10", Path("c"), None),
        Visit("1", "2", Path("b"), None),
        Visit("1", "1", Path("a"), None),
        Visit("2", "late", Path("z"), t[2]),
        Visit("2", "early", Path("x"), t[0]),
        Visit("2", "middle", Path("y"), t[1]),
    ]
    consecutive = [(p.baseline.session, p.followup.session) for p in pair_visits(visits)]
    assert consecutive == [("1", "2"), ("2", "10"), ("early", "middle"), ("middle", "late")]
    first = [(p.baseline.session, p.followup.session) for p in pair_visits(visits, "first")]
    assert first == [("1", "2"), ("1", "10"), ("early", "middle"), ("early", "late")]
    days = [p.days_apart for p in pair_visits(visits)]
    assert days == [None, None, 152.0, 214.0]


def test_discovery_handles_runs_acquisitions_filters_and_lone_sessions(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    (root).mkdir()
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    for relative in (
        "sub-01/ses-01/anat/sub-01_ses-01_FLAIR.nii.gz",
        "sub-01/ses-02/anat/sub-01_ses-02_run-1_FLAIR.nii.gz",
        "sub-01/ses-02/anat/sub-01_ses-02_run-2_FLAIR.nii.gz",
        "sub-02/ses-01/anat/sub-02_ses-01_acq-2D_FLAIR.nii.gz",
        "sub-02/ses-01/anat/sub-02_ses-01_acq-3D_FLAIR.nii.gz",
        "sub-02/ses-02/anat/sub-02_ses-02_acq-3D_FLAIR.nii",
        "sub-03/anat/sub-03_FLAIR.nii.gz",
        "sub-04/ses-01/anat/sub-04_ses-01_FLAIR.nii.gz",
        "sub-04/ses-01/anat/sub-04_ses-01_T1w.nii.gz",
        "derivatives/x/sub-04/ses-02/anat/sub-04_ses-02_FLAIR.nii.gz",
        "sourcedata/sub-04/ses-03/anat/sub-04_ses-03_FLAIR.nii.gz",
    ):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"")
    found = discover_bids(root)
    chosen = {(v.subject, v.session): v.path.name for v in found.visits}
    assert chosen == {
        ("01", "01"): "sub-01_ses-01_FLAIR.nii.gz",
        ("01", "02"): "sub-01_ses-02_run-2_FLAIR.nii.gz",  # the last run
        ("02", "02"): "sub-02_ses-02_acq-3D_FLAIR.nii",
        ("04", "01"): "sub-04_ses-01_FLAIR.nii.gz",  # derivatives and sourcedata not searched
    }
    notes = "\n".join(found.notes)
    assert "sub-01 ses-02: several runs" in notes and "took sub-01_ses-02_run-2" in notes
    assert "sub-02 ses-01: several FLAIRs" in notes and "--acquisition" in notes
    assert "sub-03: a FLAIR without a session" in notes
    assert "sub-04: one session with a FLAIR" in notes
    with_acquisition = discover_bids(root, acquisition="3D")
    assert {(v.subject, v.session) for v in with_acquisition.visits} >= {("02", "01"), ("02", "02")}
    only = discover_bids(root, participant_labels=["sub-01", "09"], session_labels=["02"])
    assert [(v.subject, v.session) for v in only.visits] == [("01", "02")]
    assert "sub-09: no FLAIR found" in only.notes


def test_the_bids_apps_label_lists_are_read_as_repeated_options() -> None:
    from msnewlesions.cli.cohort_commands import expand_label_lists

    argv = ["bids", "in", "out", "participant", "--participant_label", "01", "02", "-q"]
    assert expand_label_lists(argv) == [
        "bids", "in", "out", "participant",
        "--participant_label", "01", "--participant_label", "02", "-q",
    ]  # fmt: skip
    # Before the positional arguments, a label list is one label: they are not swallowed.
    early = ["bids", "--session-label", "01", "in", "out", "group"]
    assert expand_label_lists(early) == early
    assert expand_label_lists(["segment", "--participant_label", "a", "b"])[-1] == "b"


def test_a_dataset_that_is_not_a_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MSNewLesionsError, match="is not a folder"):
        discover_bids(tmp_path / "missing")


# ------------------------------------------------------------------------ participant level


def test_a_cohort_gives_its_pairs_with_bids_derivative_names(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "derivatives"
    run = bids_participant(cohort, out, FAKE, jobs=2)
    assert [o.key for o in run.outcomes] == list(EXPECTED_PAIRS)
    assert {o.status for o in run.outcomes} == {"done"}
    anat = out / "sub-01" / "ses-03" / "anat"
    orig = "sub-01_ses-03_space-orig_label-newlesion_desc-since02"
    assert sorted(p.name for p in anat.iterdir()) == sorted(
        [
            f"{orig}_mask.nii.gz",
            f"{orig}_mask.json",
            f"{orig}_lesions.tsv",
            "sub-01_ses-03_space-MNI152NLin2009aSym_label-newlesion_desc-since02_mask.nii.gz",
            "sub-01_ses-03_desc-since02_report.html",
            "sub-01_ses-03_from-orig_to-MNI152NLin2009aSym_mode-image_desc-since02_xfm.tfm",
        ]
    )
    # The new cube of ses-03 (B) alone, on the follow-up's grid.
    mask = mask_array(anat / f"{orig}_mask.nii.gz")
    assert mask.sum() == 8 and mask[8:10, 8:10, 8:10].all()
    sidecar = json.loads((anat / f"{orig}_mask.json").read_text())
    assert sidecar["Type"] == "Lesion"
    assert sidecar["Sources"] == [
        "bids:raw:sub-01/ses-02/anat/sub-01_ses-02_FLAIR.nii.gz",
        "bids:raw:sub-01/ses-03/anat/sub-01_ses-03_FLAIR.nii.gz",
    ]
    for key, count in EXPECTED_PAIRS.items():
        subject, session, desc = key.split("_")
        found = out / subject / session / "anat"
        stem = f"{subject}_{session}_space-orig_label-newlesion_{desc}"
        assert json.loads((found / f"{stem}_mask.json").read_text())["new_lesion_count"] == count
        table = (found / f"{stem}_lesions.tsv").read_text().splitlines()
        assert table[0] == "lesion_id\tvolume_mm3" and len(table) == 1 + count
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "msnewlesions"
    assert description["DatasetLinks"]["raw"] == cohort.absolute().as_uri()
    assert all(p.suffix == ".lock" for p in (out / ".work").iterdir())  # no work left behind


def test_a_rerun_does_nothing(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "derivatives"
    bids_participant(cohort, out, FAKE, jobs=1)
    files = {
        p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "lock" not in p.name
    }
    again = bids_participant(cohort, out, FAKE, jobs=1)
    assert {o.status for o in again.outcomes} == {"skipped"}
    assert {p: p.stat().st_mtime_ns for p in files} == files


@pytest.fixture()
def quick_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line's pairs segmented by the stand-in."""
    from msnewlesions.cli import cohort_commands

    monkeypatch.setattr(cohort_commands, "_settings", lambda *args: FAKE)


def test_a_failing_pair_is_reported_and_the_others_complete(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], quick_cli: None
) -> None:
    broken = cohort / "sub-02" / "ses-02" / "anat" / "sub-02_ses-02_FLAIR.nii.gz"
    content = broken.read_bytes()
    broken.write_bytes(content[: len(content) // 2])  # a truncated download
    out = tmp_path / "derivatives"
    run = bids_participant(cohort, out, FAKE, jobs=2)
    status = {o.key: o.status for o in run.outcomes}
    assert status.pop("sub-02_ses-02_desc-since01") == "failed"
    assert set(status.values()) == {"done"}
    failed = next(o for o in run.outcomes if o.status == "failed")
    assert str(broken) in failed.reason and "\n" not in failed.reason
    assert not (out / "sub-02" / "ses-02").exists()  # nothing partial
    assert failure_path(out, failed.key).is_file()
    # The command line: the same through a rerun, one line per failure and exit status 1.
    code, _, stderr = run_cli(
        ["bids", str(cohort), str(out), "participant", "--jobs", "1", "-q"], capsys
    )
    assert code == 1
    assert f"failed: {failed.key}: " in stderr and "1 of 4 pair(s) failed" in stderr
    assert "Traceback" not in stderr
    # Repaired, a rerun does that pair only and forgets the failure.
    broken.write_bytes(content)
    fixed = bids_participant(cohort, out, FAKE, jobs=1)
    assert [o.status for o in fixed.outcomes].count("done") == 1
    assert not failure_path(out, failed.key).exists()


def test_a_killed_worker_loses_only_its_pair(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    for subject in ("01", "02", "03"):
        flair(root, subject, "01", [])
        flair(root, subject, "02", [A])
    victim = flair(root, "02", "02", [A])
    victim_copy = victim.with_name("sub-02_ses-02_FLAIR.kill-me.nii.gz")
    victim.rename(victim_copy)
    victim.symlink_to(victim_copy.name)
    # The stand-in kills its own worker process when the follow-up's real name says so.
    settings = SegmentSettings(segmenter=_resolving_segmenter)
    run = bids_participant(root, tmp_path / "out", settings, jobs=1)
    status = {o.key: (o.status, o.reason) for o in run.outcomes}
    assert status["sub-02_ses-02_desc-since01"] == ("failed", engine.WORKER_DIED)
    assert status["sub-01_ses-02_desc-since01"][0] == "done"
    assert status["sub-03_ses-02_desc-since01"][0] == "done"


def _resolving_segmenter(pair: object, folder: Path, settings: object) -> None:
    from dataclasses import replace

    followup = replace(pair.followup, path=pair.followup.path.resolve())  # type: ignore[attr-defined]
    threshold_segmenter(replace(pair, followup=followup), folder, settings)  # type: ignore[type-var]


def test_a_killed_driver_loses_the_pairs_in_flight_and_a_rerun_finishes(
    cohort: Path, tmp_path: Path
) -> None:
    for path in cohort.rglob("*_FLAIR.nii.gz"):  # each pair takes 2 s more
        path.rename(path.with_name(path.name.replace("_FLAIR", "_acq-slow_FLAIR")))
    out = tmp_path / "derivatives"
    script = (
        "import sys; sys.path.insert(0, sys.argv[3])\n"
        "from msnewlesions.cohort.pair_job import SegmentSettings\n"
        "from msnewlesions.commands.cohort import bids_participant\n"
        "from tests.fakes import threshold_segmenter\n"
        "bids_participant(sys.argv[1], sys.argv[2], SegmentSettings("
        "segmenter=threshold_segmenter), jobs=1)\n"
    )
    repository = str(Path(__file__).resolve().parents[1])
    driver = subprocess.Popen([sys.executable, "-c", script, str(cohort), str(out), repository])
    first = out / "sub-01" / "ses-02" / "anat"
    deadline = time.monotonic() + 120
    while not list(first.glob("*_mask.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done_before = {p for p in out.rglob("*_mask.json")}
    assert 1 <= len(done_before) < 4
    rerun = bids_participant(cohort, out, FAKE, jobs=1)
    statuses = [o.status for o in rerun.outcomes]
    assert statuses.count("skipped") == len(done_before) and "failed" not in statuses
    assert len(list(out.rglob("*_mask.json"))) == 4
    # Every file of a complete pair is whole; the killed worker's work folder is gone.
    for sidecar in out.rglob("*_mask.json"):
        json.loads(sidecar.read_text())
    assert all(p.name.endswith(".lock") and p.is_file() for p in (out / ".work").iterdir())


def test_drivers_sharing_an_output_folder_never_write_the_same_pair(
    cohort: Path, tmp_path: Path
) -> None:
    """A job array runs a driver per subject into one folder: each pair is one process's."""
    out = tmp_path / "derivatives"
    pairs = bids_pairs(cohort, out, BidsSelection(["01"])).pairs
    with pair_lock(pairs[0]) as taken:  # another run holds sub-01's first pair
        assert taken
        run = bids_participant(cohort, out, FAKE, BidsSelection(["01"]), jobs=1)
    assert [(o.status, o.reason) for o in run.outcomes] == [
        ("failed", pair_job.BUSY),
        ("done", ""),
    ]
    assert not failure_path(out, pairs[0].pair.key).exists()  # not the pair's own failure
    again = bids_participant(cohort, out, FAKE, BidsSelection(["01"]), jobs=1)
    assert [o.status for o in again.outcomes] == ["done", "skipped"]


def test_results_of_other_settings_are_not_mixed(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "derivatives"
    bids_participant(cohort, out, FAKE, BidsSelection(["01"]), jobs=1)
    other = SegmentSettings(model=Path("another-model"), segmenter=threshold_segmenter)
    with pytest.raises(MSNewLesionsError, match=r"other settings \(model\)"):
        bids_participant(cohort, out, other, jobs=1)


def test_a_dask_cluster_gives_the_same_outputs_as_the_local_pool(
    cohort: Path, tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    local, on_dask = tmp_path / "local", tmp_path / "dask"
    bids_participant(cohort, local, FAKE, jobs=2)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        run = bids_participant(cohort, on_dask, FAKE, scheduler=cluster.scheduler_address)
    assert [o.status for o in run.outcomes] == ["done"] * 4
    files = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(on_dask) for p in on_dask.rglob("*") if p.is_file())
    for relative in files:
        if relative.name.endswith(".nii.gz"):
            assert np.array_equal(mask_array(local / relative), mask_array(on_dask / relative))
        elif relative.name != "dataset_description.json":
            assert (local / relative).read_bytes() == (on_dask / relative).read_bytes(), relative


def test_an_unreachable_dask_scheduler_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(engine, "DASK_CONNECT_TIMEOUT", "2s")
    with pytest.raises(MSNewLesionsError, match="cannot reach the Dask scheduler"):
        engine._run_on_dask([], FAKE, "tcp://127.0.0.1:9", engine.Progress(0))


# ------------------------------------------------------------------------------ group level


def test_the_group_table_matches_the_per_pair_summaries(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "derivatives"
    flair(cohort, "02", "02", [A, C], brightest=2000.0)  # its summary carries a QC warning
    bids_participant(cohort, out, FAKE, jobs=2)
    code, stdout, _ = run_cli(["bids", str(cohort), str(out), "group", "-q"], capsys)
    assert code == 0 and "group table" in stdout
    with (out / "group" / "new_lesions.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["pair"] for r in rows] == list(EXPECTED_PAIRS)
    for row in rows:
        pair = next(p for p in bids_group(cohort, out).pairs if p.pair.key == row["pair"])
        summary = pair.summary()
        assert summary is not None and row["status"] == "done"
        assert int(row["new_lesion_count"]) == summary["new_lesion_count"]
        assert float(row["new_lesion_volume_mm3"]) == pytest.approx(
            summary["new_lesion_volume_mm3"]
        )
        assert (out / "group" / row["report"]).resolve() == pair.report().resolve()
    by_pair = {r["pair"]: r for r in rows}
    assert by_pair["sub-03_ses-a_desc-sinceb"]["days_apart"] == "151"
    assert by_pair["sub-01_ses-02_desc-since01"]["days_apart"] == "n/a"
    assert by_pair["sub-02_ses-02_desc-since01"]["qc_warnings"] == "follow-up brighter than 1000"
    page = (out / "group" / "report.html").read_text("utf-8")
    assert "4 pair(s) of 3 subject(s): 4 done, 0 failed" in page
    # Every pair has new lesions: each is linked from "need a look" and from "every pair".
    assert page.count('_report.html">report</a>') == 2 * 4
    assert 'href="../sub-01/ses-03/anat/sub-01_ses-03_desc-since02_report.html"' in page


def test_group_level_before_participant_level_says_what_to_do(cohort: Path, tmp_path: Path) -> None:
    with pytest.raises(MSNewLesionsError, match="run the participant level first"):
        bids_group(cohort, tmp_path / "nothing")


# ------------------------------------------------------------------------------------ batch


def test_a_manifest_runs_through_the_same_engine(tmp_path: Path) -> None:
    data = tmp_path / "data"
    scan(data / "a_base.nii.gz", [])
    scan(data / "a_follow.nii.gz", [A, B])
    scan(data / "b base.nii.gz", [C])  # a space in the name
    scan(data / "b_follow.nii.gz", [C])
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "id,baseline,followup,subject,baseline_date,followup_date\n"
        "a,data/a_base.nii.gz,data/a_follow.nii.gz,p1,2020-01-01,2020-03-01\n"
        f"b,{data / 'b base.nii.gz'},data/b_follow.nii.gz,,,\n"
    )
    out = tmp_path / "out"
    run = batch(manifest, out, FAKE, jobs=2)
    assert [(o.key, o.status) for o in run.outcomes] == [("a", "done"), ("b", "done")]
    assert json.loads((out / "a" / "summary.json").read_text())["new_lesion_count"] == 2
    assert json.loads((out / "b" / "summary.json").read_text())["new_lesion_count"] == 0
    rows = (out / "group" / "new_lesions.tsv").read_text().splitlines()
    assert rows[1].split("\t")[:7] == ["a", "p1", "baseline", "a", "60", "2", "128"]
    assert {o.status for o in batch(manifest, out, FAKE, jobs=1).outcomes} == {"skipped"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,baseline\nx,a.nii.gz\n", "missing: followup"),
        ("id,baseline,followup\n", "it has no row"),
        ("id,baseline,followup\nx/y,a,b\n", "line 2: id 'x/y'"),
        ("id,baseline,followup\nx,a,b\nx,c,d\n", "line 3: id 'x' appears twice"),
        ("id,baseline,followup\nx,,b\n", "line 2: no baseline path"),
    ],
)
def test_a_bad_manifest_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(text)
    with pytest.raises(MSNewLesionsError, match=message.replace("(", r"\(")):
        read_manifest(manifest)


# ------------------------------------------------------------------- the real segment inside


def test_the_real_segment_publishes_into_bids_names(
    tmp_path: Path, preprocess_once: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """segment's own outputs (the example pair, the stand-in network) reach their BIDS names."""
    from msnewlesions.commands import segment as segment_command
    from msnewlesions.example import write_example_pair
    from msnewlesions.preprocessing import model_inputs
    from tests.fakes import CubesPredictor
    from tests.test_segment import CUBES

    monkeypatch.setattr(model_inputs, "preprocess_pair", preprocess_once)
    monkeypatch.setattr(segment_command, "load_predictor", lambda *a: (CubesPredictor(CUBES), None))
    monkeypatch.setattr(pair_job, "_PREDICTORS", {})
    example = write_example_pair(tmp_path / "example", seed=4)
    root = tmp_path / "bids"
    for session, role in (("01", "baseline"), ("02", "followup")):
        target = root / "sub-01" / f"ses-{session}" / "anat" / f"sub-01_ses-{session}_FLAIR.nii.gz"
        target.parent.mkdir(parents=True)
        os.link(example[role], target)
    pair = pair_visits(discover_bids(root).visits)[0]
    outputs = BidsPairOutputs(tmp_path / "out", pair)
    outcome = pair_job.process_pair(outputs, SegmentSettings(model=Path("cubes")))
    assert outcome.status == "done", outcome.reason
    assert outputs.is_complete()
    summary = outputs.summary()
    assert summary is not None and summary["new_lesion_count"] == 2  # the 1-voxel cube is dropped
    table = outputs.files()["lesions.csv"].read_text().splitlines()
    assert table[0].split("\t")[:3] == ["lesion_id", "voxels_mni", "volume_mm3"]
    assert len(table) == 3
    native = nib.load(outputs.files()["new_lesions.nii.gz"])
    assert np.allclose(native.affine, nib.load(example["followup"]).affine, atol=1e-4)
    # A review of its report (lesion 1 confirmed, lesion 2 rejected) is its own derivative,
    # desc-since01reviewed, and the group table gains the reviewed count.
    from msnewlesions.cli import main
    from msnewlesions.cohort.group import GroupRow

    mni = nib.load(outputs.files()["new_lesions_mni.nii.gz"])
    review = {
        "format": "msnewlesions-review",
        "version": 1,
        "inputs": summary["inputs"],
        "grid": {"shape": list(mni.shape), "affine": mni.affine.tolist()},
        "lesions": [{"id": 1, "decision": "confirmed"}, {"id": 2, "decision": "rejected"}],
        "added": [],
        "erased": [],
        "note": "",
    }
    (tmp_path / "review.json").write_text(json.dumps(review))
    assert main(["review", "apply", str(outputs.report()), str(tmp_path / "review.json")]) == 0
    reviewed = outputs.reviewed_files()
    assert reviewed["new_lesions_reviewed.nii.gz"].name == (
        "sub-01_ses-02_space-orig_label-newlesion_desc-since01reviewed_mask.nii.gz"
    )
    rows = [line.split("\t") for line in table[1:]]
    mask = np.asarray(nib.load(reviewed["new_lesions_reviewed.nii.gz"]).dataobj)
    assert int(mask.sum()) == int(rows[0][table[0].split("\t").index("voxels_native")])
    assert not (mask > np.asarray(native.dataobj)).any()  # only lesion 1's own voxels
    sidecar = json.loads(reviewed["review.json"].read_text())
    assert sidecar["applied"]["lesions_after"] == 1
    row = GroupRow.of(outputs, tmp_path / "out" / "group")
    assert (row.new_lesion_count, row.reviewed_lesion_count) == (2, 1)
    # The reviewed derivatives are what finetune takes, as a manifest would give them.
    from msnewlesions.finetuning import read_reviewed_pairs

    (found,) = read_reviewed_pairs(tmp_path / "out")
    assert (found.pair_id, found.patient) == ("sub-01_ses-02_desc-since01", "01")
    assert found.followup == root / "sub-01" / "ses-02" / "anat" / "sub-01_ses-02_FLAIR.nii.gz"
    assert found.new_lesions == reviewed["new_lesions_reviewed.nii.gz"]


def test_the_example_cohorts_later_visit_keeps_the_earlier_lesions_and_adds_its_own() -> None:
    from scipy import ndimage

    from msnewlesions.example import make_example_visits
    from msnewlesions.preprocessing import registration

    first, second = make_example_visits(0, (4, 2))
    assert ndimage.label(first.new_lesions.array)[1] == 4
    assert ndimage.label(second.new_lesions.array)[1] == 2
    # On the second follow-up's grid, the first visit's lesions are bright too (not new).
    earlier = (
        registration.resample(
            first.followup.with_array(first.new_lesions.array.astype(np.float32)),
            second.followup,
            registration.compose(
                registration.invert(first.baseline_to_followup), second.baseline_to_followup
            ),
            "linear",
        ).array
        > 0.5
    )
    assert not (earlier & (second.new_lesions.array > 0)).any()
    assert np.median(second.followup.array[earlier]) > 1000


@pytest.mark.slow  # about 6 minutes on 2 cores: 4 real segment runs with the shipped model
def test_the_example_cohort_end_to_end_with_the_shipped_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the README shows: the example cohort, participant then group level, then a rerun."""
    from msnewlesions.example import write_example_cohort
    from msnewlesions.metrics import dice

    bids_dir, out = write_example_cohort(tmp_path / "bids"), tmp_path / "derivatives"
    participant = ["bids", str(bids_dir), str(out), "participant", "-q"]
    code, stdout, stderr = run_cli(participant, capsys)
    assert code == 0, stderr
    assert "4 pair(s): 4 segmented" in stdout
    assert run_cli(["bids", str(bids_dir), str(out), "group", "-q"], capsys)[0] == 0
    with (out / "group" / "new_lesions.tsv").open() as handle:
        rows = {r["pair"]: r for r in csv.DictReader(handle, delimiter="\t")}
    assert list(rows) == [
        "sub-01_ses-02_desc-since01",
        "sub-01_ses-03_desc-since02",
        "sub-02_ses-02_desc-since01",
        "sub-03_ses-02_desc-since01",
    ]
    # sessions.tsv: 2024-01-15T09:30, 2024-07-22T10:05, 2025-01-20T08:45.
    assert rows["sub-01_ses-02_desc-since01"]["days_apart"] == "189.02"
    assert rows["sub-01_ses-03_desc-since02"]["days_apart"] == "181.94"
    for key, row in rows.items():
        subject, session, desc = key.split("_")
        truth = mask_array(
            bids_dir
            / "derivatives"
            / "truth"
            / subject
            / session
            / "anat"
            / f"{subject}_{session}_desc-newlesions_mask.nii.gz"
        )
        found = mask_array(
            out
            / subject
            / session
            / "anat"
            / f"{subject}_{session}_space-orig_label-newlesion_{desc}_mask.nii.gz"
        )
        assert row["status"] == "done"
        if truth.any():
            assert dice(found > 0, truth > 0) > 0.7, key
        else:
            assert row["new_lesion_count"] == "0", key
    code, stdout, _ = run_cli(participant, capsys)
    assert code == 0 and "0 segmented, 4 already complete" in stdout
