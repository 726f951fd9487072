"""Time ``evaluate`` over many MNI-sized cases (the issue's goal: 200 cases of 182x218x182 < 60 s).

Writes synthetic reference and predicted masks (0-10 ball-shaped lesions each, a few of the
references empty; predictions shifted, partly missed, with false positives) into a temporary
folder, then times the evaluation with 1 and with all CPU workers. File writing is not timed.

    python benchmarks/evaluate_speed.py [--cases 200]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from msnewlesions.evaluation import evaluate

SHAPE = (182, 218, 182)
AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])


def _balls(rng: np.random.Generator, count: int) -> list[tuple[np.ndarray, float]]:
    centres = rng.integers([40, 40, 40], [142, 178, 142], size=(count, 3))
    return [(centre, float(rng.uniform(1.0, 6.0))) for centre in centres]


def _draw(mask: np.ndarray, balls: list[tuple[np.ndarray, float]]) -> None:
    for centre, radius in balls:
        r = int(np.ceil(radius))
        box = tuple(slice(c - r, c + r + 1) for c in centre)
        grid = np.indices((2 * r + 1,) * 3) - r
        mask[box] |= (grid**2).sum(0) <= radius**2


def write_cases(folder: Path, count: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    prediction_dir, reference_dir = folder / "pred", folder / "ref"
    prediction_dir.mkdir()
    reference_dir.mkdir()
    for index in range(count):
        reference = np.zeros(SHAPE, bool)
        prediction = np.zeros(SHAPE, bool)
        balls = _balls(rng, int(rng.integers(0, 11)) if index % 5 else 0)
        _draw(reference, balls)
        kept = [(c + rng.integers(-1, 2, 3), r) for c, r in balls if rng.random() < 0.8]
        _draw(prediction, kept + _balls(rng, int(rng.integers(0, 3))))
        for mask, target in ((reference, reference_dir), (prediction, prediction_dir)):
            image = nib.Nifti1Image(mask.astype(np.uint8), AFFINE)
            nib.save(image, target / f"case{index:03d}.nii.gz")
    return prediction_dir, reference_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        prediction_dir, reference_dir = write_cases(Path(folder), args.cases)
        print(f"wrote {args.cases} case pairs in {time.perf_counter() - start:.1f} s (not timed)")
        for jobs in sorted({1, os.cpu_count() or 1}):
            start = time.perf_counter()
            result = evaluate(prediction_dir, reference_dir, jobs=jobs)
            seconds = time.perf_counter() - start
            summary = result["summary"]
            print(
                f"jobs={jobs}: {args.cases} cases of {'x'.join(map(str, SHAPE))} in {seconds:.1f} s"
                f" ({1000 * seconds / args.cases:.0f} ms/case); mean Dice "
                f"{summary['dice_mean']:.3f}, mean lesion F1 {summary['lesion_f1_mean']:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
