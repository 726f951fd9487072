"""A stand-in for the network: a probability map with cubes of known size at known MNI points."""

from __future__ import annotations

from dataclasses import dataclass, field

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
