"""Memory as a resource: a run that would need more than it may use says so in one line, before
it starts; --jobs is lowered to what the memory holds; a Dask worker with too small a memory
limit fails its pair with the reason instead of being killed in the middle of it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from msnewlesions import resources
from msnewlesions.cohort import engine, pair_job
from tests.conftest import run_cli


def test_segment_that_needs_more_memory_than_it_may_use_is_refused_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from msnewlesions.example import write_example_pair

    pair = write_example_pair(tmp_path / "example", seed=4)
    monkeypatch.setattr(resources, "available_memory_gb", lambda: 1.2)
    argv = ["segment", "--baseline", pair["baseline"], "--followup", pair["followup"],
            "--out", str(tmp_path / "out")]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and not (tmp_path / "out").exists()
    line = err.strip().splitlines()[-1]
    assert "needs about 3." in line and "1.2 GB are free" in line, line


def test_jobs_are_lowered_to_what_the_memory_holds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engine, "available_memory_gb", lambda: 8.0)
    with caplog.at_level(logging.WARNING, logger="msnewlesions.cohort.engine"):
        assert engine.fitting_jobs(6) == 2  # 8 GB at 3.5 GB a pair
    assert "holds 2 pair(s) at once" in caplog.text
    assert engine.fitting_jobs(1) == 1
    assert engine.default_jobs(cores=4, memory_gb=8.0) == 2


def test_the_memory_this_process_may_use_takes_its_control_groups_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unlimited, limited = tmp_path / "unlimited", tmp_path / "limited"
    unlimited.mkdir()
    (unlimited / "memory.max").write_text("max\n")
    limited.mkdir()
    (limited / "memory.max").write_text(f"{3 * 1024**3}\n")
    (limited / "memory.current").write_text(f"{1024**3}\n")
    assert resources.cgroup_room_gb([unlimited]) is None
    assert resources.cgroup_room_gb([unlimited, limited]) == pytest.approx(2.0)
    monkeypatch.setattr(resources, "cgroup_roots", lambda: [limited])
    assert resources.available_memory_gb() <= 2.0


def test_a_dask_worker_below_one_pairs_need_fails_the_pair_with_the_reason(
    tmp_path: Path,
) -> None:
    distributed = pytest.importorskip("distributed")
    from msnewlesions.commands.cohort import batch
    from tests.fakes import threshold_segmenter
    from tests.test_cohort import A, scan

    baseline = scan(tmp_path / "b.nii.gz", [])
    followup = scan(tmp_path / "f.nii.gz", [A])
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(f"id,baseline,followup\np1,{baseline},{followup}\n")
    settings = pair_job.SegmentSettings(segmenter=threshold_segmenter)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, memory_limit="1GB",
        dashboard_address=None,
    ) as cluster:  # fmt: skip
        run = batch(manifest, tmp_path / "out", settings, scheduler=cluster.scheduler_address)
    (outcome,) = run.outcomes
    assert outcome.status == "failed"
    assert "this Dask worker may use 0.9 GB" in outcome.reason or "may use 1.0 GB" in outcome.reason
    assert not (tmp_path / "out" / "p1").exists()
