"""Seconds per step and peak memory of ``msnewlesions segment`` on each real pair, here.

Runs the command in a child process per pair (the open_ms_data pairs when ../shared is present,
else the example pair) with the shipped model, TTA off, and prints the per-step seconds from
its summary.json and the child's peak resident memory. Every fold of the model is averaged, with
the sliding-window step its folder sets (``inference.json``, else nnU-Net's 0.5), and the
network passes in ``--precision`` (auto: bfloat16 where the CPU has it).

    python benchmarks/segment_speed.py [--data ../shared/data/open_ms_data] [--model DIR]
        [--work DIR] [--precision auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from msnewlesions.example import write_example_pair
from msnewlesions.model.default import DEFAULT_MODEL
from msnewlesions.model.nnunet.prediction import model_tile_step_size
from msnewlesions.precision import PRECISIONS, resolve_precision
from msnewlesions.validation import open_ms_pairs

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/open_ms_data"


def run(baseline: Path, followup: Path, out: Path, model: Path | None, precision: str) -> dict:
    argv = [sys.executable, "-m", "msnewlesions.cli", "segment", "-q", "--overwrite"]
    argv += ["--precision", precision]
    argv += ["--baseline", str(baseline), "--followup", str(followup), "--out", str(out)]
    if model is not None:
        argv += ["--model", str(model)]
    start = time.perf_counter()
    pid = subprocess.Popen(argv).pid
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"segment failed on {baseline}")
    summary = json.loads((out / "summary.json").read_text())
    return {
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),  # ru_maxrss is in KiB on Linux
        "steps_s": summary["seconds"],
        "new_lesions": summary["new_lesion_count"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--work", type=Path, default=Path("benchmark_output/segment_speed"))
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="auto", help="segment --precision (auto)"
    )
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cases = [(p.patient, p.baseline, p.followup) for p in open_ms_pairs(args.data)]
    if not cases:
        example = write_example_pair(args.work / "example_input")
        cases = [("example", Path(example["baseline"]), Path(example["followup"]))]
    model = args.model or DEFAULT_MODEL
    folds = len(list(Path(model).glob("fold_*"))) if Path(model).is_dir() else "?"
    step = model_tile_step_size(model) if Path(model).is_dir() else "?"
    precision = resolve_precision(args.precision)
    print(
        f"{os.cpu_count()} CPU(s); segment with TTA off, {folds} fold(s), tile step {step}, "
        f"network passes in {precision}"
    )
    results = {}
    for name, baseline, followup in cases:
        result = run(baseline, followup, args.work / name, args.model, args.precision)
        results[name] = result
        steps = result["steps_s"]
        print(
            f"{name}: {result['wall_s']} s in all (process start, reading and writing included), "
            f"peak memory {result['peak_rss_gb']} GB, {result['new_lesions']} new lesion(s)"
        )
        for step, seconds in steps.get("preprocessing_steps", {}).items():
            print(f"    {seconds:7.1f} s  {step}")
        for step in ("prediction", "postprocessing"):
            print(f"    {steps.get(step, float('nan')):7.1f} s  {step}")
    (args.work / "segment_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
