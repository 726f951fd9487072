"""Faults in a cohort: a Dask worker killed in the middle of a pair (a real local cluster), and a
batch run killed with SIGKILL and run again. Nothing half-written is ever taken for a result, and
the group table is complete after a rerun."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msnewlesions.cohort.group import group_rows
from msnewlesions.cohort.pair_job import SegmentSettings
from msnewlesions.commands.cohort import batch, bids_group, bids_participant
from tests.test_cohort import FAKE, A, _resolving_segmenter, flair, scan


def test_a_dask_worker_killed_in_a_pair_loses_only_that_pair_and_a_rerun_completes(
    tmp_path: Path,
) -> None:
    """A real local cluster whose worker process is killed (SIGKILL) in the middle of a pair:
    Dask runs the pair again on a fresh worker; a pair that kills every worker it meets is
    reported failed with its reason; nothing half-written is taken for a result, and a rerun,
    the pair fixed, does only the pairs left and completes the group table."""
    distributed = pytest.importorskip("distributed")
    root = tmp_path / "bids"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.10.0"}')
    for subject in ("01", "02", "03"):
        flair(root, subject, "01", [])
        flair(root, subject, "02", [A])
    victim = root / "sub-02" / "ses-02" / "anat" / "sub-02_ses-02_FLAIR.nii.gz"
    killer = victim.with_name("sub-02_ses-02_FLAIR.kill-me.nii.gz")
    victim.rename(killer)
    victim.symlink_to(killer.name)
    settings = SegmentSettings(segmenter=_resolving_segmenter)
    out = tmp_path / "out"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        run = bids_participant(root, out, settings, scheduler=cluster.scheduler_address)
        status = {o.key: (o.status, o.reason) for o in run.outcomes}
        lost, reason = status.pop("sub-02_ses-02_desc-since01")
        assert lost == "failed" and "on the Dask cluster" in reason, reason
        # A pair that shared a dying worker with it may be lost too (Dask counts the deaths
        # of every task in flight there): then it is reported failed with the reason as well.
        # One finished on a worker that died before saying so is run again by Dask and found
        # complete: skipped, not done twice.
        for other, other_reason in status.values():
            assert other in ("done", "skipped") or "on the Dask cluster" in other_reason, (
                other_reason
            )
        anat = out / "sub-02" / "ses-02" / "anat"
        assert not anat.exists() or not list(anat.iterdir())  # nothing half-written
        # The scan fixed (the real file, not the killing one): the rerun does that pair only.
        victim.unlink()
        killer.rename(victim)
        again = bids_participant(root, out, settings, scheduler=cluster.scheduler_address)
    expected = {
        key: "skipped" if s in ("done", "skipped") else "done" for key, (s, _) in status.items()
    }
    expected["sub-02_ses-02_desc-since01"] = "done"
    assert {o.key: o.status for o in again.outcomes} == expected
    rows = group_rows(bids_group(root, out).pairs, out)
    assert [row.status for row in rows] == ["done"] * 3


def test_a_batch_run_killed_with_sigkill_and_run_again_completes(tmp_path: Path) -> None:
    rows = ["id,baseline,followup"]
    for number in range(1, 4):
        baseline = scan(tmp_path / "scans" / f"p{number}_slow_b.nii.gz", [])
        followup = scan(tmp_path / "scans" / f"p{number}_slow_f.nii.gz", [A])
        rows.append(f"p{number},{baseline},{followup}")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    script = (
        "import sys; sys.path.insert(0, sys.argv[3])\n"
        "from msnewlesions.cohort.pair_job import SegmentSettings\n"
        "from msnewlesions.commands.cohort import batch\n"
        "from tests.fakes import threshold_segmenter\n"
        "batch(sys.argv[1], sys.argv[2], SegmentSettings(segmenter=threshold_segmenter), jobs=1)\n"
    )
    repository = str(Path(__file__).resolve().parents[2])
    driver = subprocess.Popen([sys.executable, "-c", script, str(manifest), str(out), repository])
    deadline = time.monotonic() + 120
    while not list(out.glob("p*/summary.json")) and time.monotonic() < deadline:
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done_before = sorted(p.parent.name for p in out.glob("p*/summary.json"))
    assert 1 <= len(done_before) < 3
    rerun = batch(manifest, out, FAKE, jobs=1)
    statuses = {o.key: o.status for o in rerun.outcomes}
    assert [k for k, v in statuses.items() if v == "skipped"] == done_before
    assert "failed" not in statuses.values()
    assert sorted(p.parent.name for p in out.glob("p*/summary.json")) == ["p1", "p2", "p3"]
    with (out / "group" / "new_lesions.tsv").open() as handle:
        assert [r["status"] for r in csv.DictReader(handle, delimiter="\t")] == ["done"] * 3
