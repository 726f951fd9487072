"""What the network is given: a preprocessed pair, its slices matched where asked.

``segment`` calls it before its network; the synthesis of training pairs "as segment sees them"
and the benchmarks call the same function, so the network trains on and is scored on exactly
what it meets in use.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from msnewlesions.io import Volume
from msnewlesions.preprocessing.pipeline import PreprocessedPair, PreprocessOptions, preprocess_pair
from msnewlesions.preprocessing.resolution import SliceMatch, match_resolution

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputOptions:
    """How two scans become the network's inputs.

    ``match_slices``: see the two scans through the same slices before the network compares them
    (:mod:`~msnewlesions.preprocessing.resolution`).
    """

    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)
    match_slices: bool = True


@dataclass
class ModelInputs:
    """The preprocessed pair and the two volumes the network is given (slice-matched or not)."""

    preprocessed: PreprocessedPair
    baseline: Volume
    followup: Volume
    #: Axes along which one scan was resliced like the other, if any.
    slice_matches: list[SliceMatch]
    seconds: dict[str, float]

    def slice_matches_as_dicts(self) -> list[dict[str, Any]]:
        return [match.as_dict() for match in self.slice_matches]


def model_inputs(
    baseline: Volume, followup: Volume, options: InputOptions | None = None
) -> ModelInputs:
    """Preprocess two native scans and match their slices (``options.match_slices``)."""
    options = options or InputOptions()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    preprocessed = preprocess_pair(baseline, followup, options.preprocess)
    seconds["preprocessing"] = round(time.perf_counter() - start, 2)
    model_baseline, model_followup = preprocessed.baseline, preprocessed.followup
    matches: list[SliceMatch] = []
    if options.match_slices:
        start = time.perf_counter()
        model_baseline, model_followup, matches = match_resolution(
            preprocessed.baseline, preprocessed.followup, preprocessed.brain_mask
        )
        seconds["slice_matching"] = round(time.perf_counter() - start, 2)
        for match in matches:
            logger.info(
                "slices differ along axis %d: %s resliced through %.2f mm slices",
                match.axis,
                match.resliced,
                match.thickness_mm,
            )
    return ModelInputs(preprocessed, model_baseline, model_followup, matches, seconds)
