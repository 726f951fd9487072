"""One pair of a cohort: how it is segmented (:class:`SegmentSettings`), into a private folder
then published whole, under a lock so that drivers sharing an output folder never write the same
pair twice, and what became of it (:class:`PairOutcome`): every failure becomes a recorded
outcome, never a raise that would stop the cohort.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from msnewlesions.cohort.outputs import (
    PairOutputs,
    clear_failure,
    record_failure,
    work_folder,
)
from msnewlesions.cohort.pairs import Pair
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.resources import SEGMENT_MEMORY_GB
from msnewlesions.segment import LesionPredictor, SegmentOptions

logger = logging.getLogger(__name__)

Status = Literal["done", "skipped", "failed"]


@dataclass(frozen=True)
class SegmentSettings:
    """How every pair is segmented: ``segment``'s model and options.

    ``segmenter`` writes ``segment --out``'s files for a pair into a folder; None is ``segment``
    itself (:func:`segment_into`). Another one (an importable function, as workers must import
    it) replaces it: for tests of the engine.
    """

    model: Path | None = None
    options: SegmentOptions = field(default_factory=SegmentOptions)
    device: str = "cpu"
    test_time_augmentation: bool = False
    segmenter: Callable[[Pair, Path, SegmentSettings], None] | None = None
    #: ``AET@HOST:PORT``: each pair's DICOM SEG and SR are stored there (DICOM follow-ups).
    send_to: str | None = None

    def record(self) -> dict[str, Any]:
        """What the results depend on (a rerun into the same folder must agree)."""
        from importlib.metadata import version

        preprocess = self.options.preprocess
        return {
            "version": version("msnewlesions"),
            "model": str(self.model) if self.model is not None else "shipped default model",
            "threshold": self.options.threshold,
            "min_lesion_mm3": self.options.min_lesion_mm3,
            "min_depth_mm": self.options.min_depth_mm,
            "match_slices": self.options.match_slices,
            "skull_stripped": preprocess.skull_stripped,
            "skullstrip_mode": preprocess.skullstrip_mode,
            "test_time_augmentation": self.test_time_augmentation,
            **({"segmenter": _name(self.segmenter)} if self.segmenter else {}),
        }


def _name(function: Callable[..., Any]) -> str:
    return f"{function.__module__}.{function.__qualname__}"


@dataclass(frozen=True)
class PairOutcome:
    """What became of a pair; ``worker_peak_mb``: the peak memory of the process that ran it,
    so far (0 when unknown)."""

    key: str
    status: Status
    reason: str = ""
    seconds: float = 0.0
    worker_peak_mb: float = 0.0


def peak_memory_mb() -> float:
    """This process's peak resident memory so far."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_PREDICTORS: dict[tuple[Any, ...], LesionPredictor] = {}


def _predictor(settings: SegmentSettings) -> LesionPredictor:
    """The network of ``settings``, loaded once per worker process."""
    from msnewlesions.commands import segment

    key = (
        settings.model,
        settings.device,
        settings.test_time_augmentation,
        settings.options.preprocess.precision,
        settings.options.preprocess.engine,
    )
    if key not in _PREDICTORS:
        _PREDICTORS[key], _ = segment.load_predictor(*key)
    return _PREDICTORS[key]


def segment_into(pair: Pair, folder: Path, settings: SegmentSettings) -> None:
    """``segment --out folder`` on the pair, with the network loaded once per process."""
    from msnewlesions.commands.segment import segment_files
    from msnewlesions.model.default import default_model

    segment_files(
        pair.baseline.path,
        pair.followup.path,
        folder,
        settings.model or default_model(),
        settings.options,
        settings.device,
        settings.test_time_augmentation,
        predictor=_predictor(settings),
        send_to=settings.send_to,
    )


def check_dask_worker_memory() -> None:
    """On a Dask worker whose memory limit is below one pair's need, fail the pair in one line
    (Dask would otherwise pause, spill and finally kill the worker in the middle of it)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):  # not on a Dask worker
        return
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if limit and limit / 1024**3 < SEGMENT_MEMORY_GB:
        raise MSNewLesionsError(
            f"this Dask worker may use {limit / 1024**3:.1f} GB and one pair needs about "
            f"{SEGMENT_MEMORY_GB:.1f} GB; start the workers with a memory limit of "
            f"{int(SEGMENT_MEMORY_GB + 1)} GB or more (--memory-limit)."
        )


def one_line(error: BaseException) -> str:
    """An error as one line: the message of an error the user can act on, else its type too."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, MSNewLesionsError):
        return text
    return f"{type(error).__name__}: {text} (unexpected; please report it)"


BUSY = "another msnewlesions run is segmenting this pair now; run again once it has ended"


@contextmanager
def pair_lock(outputs: PairOutputs) -> Iterator[bool]:
    """Hold the pair's lock (``OUTPUT/.work/<key>.lock``) if no other process does: yields
    whether it was taken. The system releases it when its holder dies, kill -9 included.

    Taken, the pair's leftovers from killed runs (``.work/<key>.*``) are removed.
    """
    import fcntl

    work = work_folder(outputs.root)
    work.mkdir(parents=True, exist_ok=True)
    key = outputs.pair.key
    with (work / f"{key}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            for leftover in work.glob(f"{key}.*"):
                if leftover.name != f"{key}.lock":
                    shutil.rmtree(leftover, ignore_errors=True)
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def process_pair(outputs: PairOutputs, settings: SegmentSettings) -> PairOutcome:
    """Segment one pair into ``outputs``; every failure becomes a failed outcome, never a raise.

    One process at a time per pair (:func:`pair_lock`), so that drivers sharing an output
    folder (a job array over subjects) never write the same pair twice.
    """
    pair = outputs.pair
    try:
        with pair_lock(outputs) as taken:
            if not taken:
                return PairOutcome(pair.key, "failed", BUSY)
            if outputs.is_complete():  # another run finished it since this one looked
                return PairOutcome(pair.key, "skipped")
            return _segment_and_publish(outputs, settings)
    except OSError as error:
        reason = f"cannot write into {outputs.root}: {error.strerror or error}"
        return PairOutcome(pair.key, "failed", reason)


def _segment_and_publish(outputs: PairOutputs, settings: SegmentSettings) -> PairOutcome:
    pair = outputs.pair
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f"{pair.key}.", dir=work_folder(outputs.root)))
    try:
        check_dask_worker_memory()
        (settings.segmenter or segment_into)(pair, staging / "result", settings)
        outputs.publish(staging / "result")
        clear_failure(outputs.root, pair.key)
        seconds = round(time.perf_counter() - start, 1)
        return PairOutcome(pair.key, "done", "", seconds, peak_memory_mb())
    except Exception as error:  # one pair's failure, whatever it is, must not stop the cohort
        reason = one_line(error)
        if not isinstance(error, MSNewLesionsError):
            logger.exception("%s: unexpected error", pair.key)
        _record(outputs, reason)
        seconds = round(time.perf_counter() - start, 1)
        return PairOutcome(pair.key, "failed", reason, seconds, peak_memory_mb())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _record(outputs: PairOutputs, reason: str) -> None:
    """The pair's failure record; a folder that cannot take it leaves the reason in the log."""
    try:
        record_failure(outputs.root, outputs.pair.key, reason)
    except OSError as error:
        logger.error("%s: could not record the failure: %s", outputs.pair.key, error)


def record_lost(outputs: PairOutputs, reason: str) -> PairOutcome:
    """A pair lost with its worker: failed, with its record."""
    _record(outputs, reason)
    return PairOutcome(outputs.pair.key, "failed", reason)
