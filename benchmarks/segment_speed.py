"""``msnewlesions segment`` as it was (a reference commit, PyTorch passes) against the current
default, in one run on this machine: seconds per step, peak memory, the ratio, and whether the
masks are the same.

For each pair (open_ms_data's patient01 and patient03 when ../shared is present, and the example
pair) the reference runs from a git worktree of ``--reference`` (default e0bee69, PyTorch) and
the current code with its defaults (``--engine auto``), alternately, each in its own process.
The networks' graphs are exported into a cache folder first, as the first run on a machine does
once. Masks are compared on the follow-up's grid: Dice between the two and the lesion counts.

``--isa avx2`` caps oneDNN and PyTorch's kernels at AVX2 (``ONEDNN_MAX_CPU_ISA``,
``ATEN_CPU_CAPABILITY``) to stand in for a CPU without AVX-512; both then run float32, as they
do on such a CPU. ``native`` runs each with its own defaults on this CPU (bfloat16 where it has
it).

    python benchmarks/segment_speed.py [--reference e0bee69] [--isa native|avx2]
        [--data ../shared/data/open_ms_data] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from msnewlesions.example import write_example_pair
from msnewlesions.io import read_volume
from msnewlesions.lesions import components
from msnewlesions.validation import open_ms_pairs

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPOSITORY.parent / "shared/data/open_ms_data"
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def reference_source(commit: str, work: Path) -> Path:
    """The ``src`` folder of a worktree of ``commit`` (made once)."""
    tree = work / f"reference-{commit}"
    if not (tree / "src").is_dir():
        subprocess.run(
            ["git", "-C", str(REPOSITORY), "worktree", "add", "--detach", str(tree), commit],
            check=True,
            capture_output=True,
        )
    return tree / "src"


def segment(argv: list[str], env: dict[str, str], out: Path) -> dict:
    """One ``segment --out`` in a child process: wall seconds, peak memory, summary.json."""
    start = time.perf_counter()
    pid = subprocess.Popen(
        [sys.executable, "-m", "msnewlesions.cli", "segment", *argv], env=env
    ).pid
    _, status, usage = os.wait4(pid, 0)
    if status != 0:
        raise SystemExit(f"segment failed: {' '.join(argv)}")
    return {
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),  # KiB on Linux
        "summary": json.loads((out / "summary.json").read_text()),
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default="e0bee69")
    parser.add_argument("--isa", choices=("native", "avx2"), default="native")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("benchmark_output/segment_speed"))
    args = parser.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MSNEWLESIONS_ENGINE_CACHE": str(work / "engine-cache")}
    env["PYTHONPATH"] = str(REPOSITORY / "src")  # the current code: this script's own tree
    extra = []
    if args.isa == "avx2":
        env.update(AVX2)
        extra = ["--precision", "float32"]
    reference_env = {**env, "PYTHONPATH": str(reference_source(args.reference, work))}
    cases = [(p.patient, p.baseline, p.followup) for p in open_ms_pairs(args.data)]
    cases = [case for case in cases if case[0] in ("patient01", "patient03")]
    example = write_example_pair(work / "example_input")
    cases.append(("example", Path(example["baseline"]), Path(example["followup"])))
    subprocess.run(
        [sys.executable, "-m", "msnewlesions.cli", "model", "prepare", "-q"],
        env=env,
        check=True,
    )
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), ISA {args.isa}; "
        f"reference {args.reference} (PyTorch) against the current default"
    )
    results: dict[str, dict] = {}
    for name, baseline, followup in cases:
        runs = {}
        for label, run_env in (("reference", reference_env), ("current", env)):
            out = work / label / name
            argv_ = ["-q", "--overwrite", *extra, "--baseline", str(baseline)]
            argv_ += ["--followup", str(followup), "--out", str(out)]
            runs[label] = segment(argv_, run_env, out)
        masks = [read_volume(work / k / name / "new_lesions.nii.gz").array > 0 for k in runs]
        counts = [components(mask)[1] for mask in masks]
        ratio = runs["current"]["wall_s"] / runs["reference"]["wall_s"]
        results[name] = {
            **{
                k: {**v, "summary": None, "seconds": v["summary"]["seconds"]}
                for k, v in runs.items()
            },
            "engines": runs["current"]["summary"].get("engines"),
            "ratio": round(ratio, 3),
            "dice": round(dice(*masks), 4),
            "lesions": counts,
        }
        print(
            f"\n{name}: ratio {ratio:.2f}, Dice {dice(*masks):.4f}, "
            f"lesions {counts[0]} (reference) and {counts[1]} (current)"
        )
        for label, run in runs.items():
            seconds = run["summary"]["seconds"]
            print(
                f"  {label:9s} {run['wall_s']:6.1f} s in all, peak {run['peak_rss_gb']:.2f} GB; "
                f"preprocessing {seconds['preprocessing']:.1f} s, prediction "
                f"{seconds['prediction']:.1f} s, postprocessing {seconds['postprocessing']:.1f} s"
            )
            for step, value in seconds["preprocessing_steps"].items():
                print(f"      {value:6.1f} s  {step}")
    real = [r["ratio"] for k, r in results.items() if k != "example"]
    if real:
        print(f"\nratio on the real pairs: {', '.join(f'{r:.2f}' for r in real)}")
    (work / f"segment_speed-{args.isa}.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
