"""Seconds per training iteration and per inference case of the nnU-Net configurations, here.

Uses the open_ms_data pairs when ../shared is present (else three synthetic example pairs), builds
the dataset, plans and preprocesses, trains one short epoch per setting and predicts one case.

    python benchmarks/model_speed.py [--data ../shared/data/open_ms_data] [--iterations 20]
        [--paper]   # also time nnU-Net's default 3d_fullres network (slow on a CPU)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

from msnewlesions.commands.predict import predict_files
from msnewlesions.example import write_example_bids
from msnewlesions.model import nnunet
from msnewlesions.model.datasets import DatasetOptions, build_dataset

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/open_ms_data"


def seconds_per_iteration(fold: Path) -> float:
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    logging_state = checkpoint["logging"]
    start = logging_state["epoch_start_timestamps"][-1]
    end = logging_state["epoch_end_timestamps"][-1]
    schedule = json.loads((fold / "msnewlesions_schedule.json").read_text())
    validation = schedule["num_val_iterations_per_epoch"] or 0
    return (end - start) / (schedule["num_iterations_per_epoch"] + 0.5 * validation)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--paper", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        if (args.data / "longitudinal").is_dir():
            source, layout = args.data, "open_ms_data"
        else:
            source, layout = write_example_bids(root / "bids"), "bids"
        start = time.perf_counter()
        dataset = build_dataset(layout, source, root / "raw", DatasetOptions(dataset_id=503))
        print(f"dataset ({layout}): {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        nnunet.plan_and_preprocess(root / "raw", root / "pre", 503)
        print(f"nnU-Net plan and preprocess: {time.perf_counter() - start:.0f} s")
        settings = [("cpu", 0), ("cpu", 1)] + ([("paper", 1)] if args.paper else [])
        for config, workers in settings:
            iterations = args.iterations if config == "cpu" else 3
            fold = nnunet.train(
                root / "pre",
                root / f"results_{config}_{workers}",
                503,
                0,
                config,
                schedule=nnunet.TrainingSchedule(1, iterations, 2),
                data_workers=workers,
                validate=False,
            )
            print(
                f"train {config:<5} data workers {workers}: "
                f"{seconds_per_iteration(fold):.2f} s per iteration ({iterations} iterations)"
            )
        case = json.loads((dataset / "splits_final.json").read_text())[0]["val"][0]
        inputs = root / "inputs"
        inputs.mkdir()
        for channel in ("0000", "0001"):
            (inputs / f"{case}_{channel}.nii.gz").symlink_to(
                dataset / "imagesTr" / f"{case}_{channel}.nii.gz"
            )
        for tta in (False, True):
            start = time.perf_counter()
            predict_files(
                nnunet.model_folder(root / "results_cpu_1", 503, "cpu"),
                inputs,
                root / f"pred_{tta}",
                test_time_augmentation=tta,
            )
            print(f"predict one case, cpu, TTA {tta}: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
