"""Stand-ins: a network with a known probability map, and a quick segment for cohort tests."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msnewlesions.io import Volume
from msnewlesions.lesions import PostprocessingSettings


@dataclass
class CubesPredictor:
    """Probability ``value`` in an axis-aligned cube of ``side`` voxels whose centre is the voxel
    nearest each MNI point (RAS mm), zero elsewhere. Satisfies ``segment.LesionPredictor``."""

    cubes: list[tuple[tuple[float, float, float], int]]
    settings: PostprocessingSettings = field(default_factory=PostprocessingSettings)
    value: float = 0.9
    calls: int = 0

    @property
    def postprocessing(self) -> PostprocessingSettings:
        return self.settings

    def probability(self, baseline: Volume, followup: Volume) -> Volume:
        assert baseline.same_grid(followup)
        self.calls += 1
        probability = np.zeros(baseline.shape, np.float32)
        for centre, side in self.cubes:
            start = np.round(baseline.world_to_index(np.array([centre]))[0]).astype(int) - side // 2
            box = tuple(slice(s, s + side) for s in start)
            probability[box] = self.value
        return baseline.with_array(probability)

    def cube_centre_mm(self, grid: Volume, index: int) -> np.ndarray:
        """Where cube ``index`` is centred on ``grid`` (RAS mm)."""
        centre, side = self.cubes[index]
        start = np.round(grid.world_to_index(np.array([centre]))[0]) - side // 2
        return grid.index_to_world(start + (side - 1) / 2)[0]


def threshold_segmenter(pair: Any, folder: Path, settings: Any) -> None:
    """A stand-in for ``segment --out`` on small test scans that share a grid: the new lesions
    are the voxels above 150 in the follow-up and not in the baseline. Writes segment's files
    (the report and transform as placeholders); a scan that cannot be read fails as segment
    does. Importable, so that pool and Dask workers can run it."""
    import csv
    import json

    from scipy import ndimage

    from msnewlesions.io import read_volume, write_volume

    baseline, followup = read_volume(pair.baseline.path), read_volume(pair.followup.path)
    if "kill-me" in pair.followup.path.name:
        os.kill(os.getpid(), signal.SIGKILL)
    if "slow" in pair.followup.path.name:
        time.sleep(2)
    new = (followup.array > 150) & (baseline.array <= 150)
    labels, count = ndimage.label(new)
    folder.mkdir(parents=True)
    write_volume(followup.with_array(new.astype(np.uint8)), folder / "new_lesions.nii.gz")
    write_volume(followup.with_array(new.astype(np.uint8)), folder / "new_lesions_mni.nii.gz")
    volume = float(new.sum() * followup.voxel_volume_mm3)
    with (folder / "lesions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["lesion_id", "volume_mm3"])
        for number in range(1, count + 1):
            voxels = int((labels == number).sum())
            writer.writerow([number, voxels * followup.voxel_volume_mm3])
    warnings = ["follow-up brighter than 1000"] if followup.array.max() > 1000 else []
    summary = {"new_lesion_count": count, "new_lesion_volume_mm3": volume, "warnings": warnings}
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "report.html").write_text(f"<html>{count} new lesion(s)</html>")
    (folder / "followup_to_mni.tfm").write_text("#Insight Transform File V1.0\n")
    (folder / "baseline_to_mni.tfm").write_text("#Insight Transform File V1.0\n")
