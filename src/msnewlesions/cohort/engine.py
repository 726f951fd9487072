"""Run many pairs: a local process pool, or an existing Dask cluster; resumable, fault-tolerant.

* A pair whose outputs are complete is skipped (a rerun does only what is left).
* A pair runs ``segment`` into a private folder under ``OUTPUT/.work`` and is then published
  whole (:mod:`~msnewlesions.cohort.outputs`); a pair that fails records its one-line reason and
  the others go on.
* A worker that dies (kill -9, out of memory) loses the pairs in flight: they are recorded as
  failed, a fresh pool takes the rest. A driver that dies loses the pairs in flight (local
  workers die with it); a rerun finishes the rest.
* One process at a time per pair (a lock in ``OUTPUT/.work``), so that several drivers may
  share an output folder (a job array over subjects); leftovers of a killed run are removed by
  the next one to take the pair.
* Progress (pairs done / total, time left) is logged after each pair.

Local workers are spawned processes; each loads the network once and uses
``cores // jobs`` threads. On Dask, each worker process loads the network once as well.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
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
from msnewlesions.resources import SEGMENT_MEMORY_GB, available_memory_gb
from msnewlesions.segment import LesionPredictor, SegmentOptions

logger = logging.getLogger(__name__)

#: What one ``segment`` needs at its peak (measured on real pairs; benchmarks/cohort.py).
MEMORY_PER_JOB_GB = SEGMENT_MEMORY_GB

#: How long to try reaching a Dask scheduler before giving up.
DASK_CONNECT_TIMEOUT = "30s"

Status = Literal["done", "skipped", "failed"]
WORKER_DIED = "the worker process died while segmenting this pair (killed, or out of memory)"


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


def default_jobs(cores: int | None = None, memory_gb: float | None = None) -> int:
    """Pairs at once on this machine: one per core, as many as the memory holds (at least 1)."""
    cores = cores or usable_cores()
    if memory_gb is None:
        memory_gb = available_memory_gb()
    return max(1, min(cores, int(memory_gb // MEMORY_PER_JOB_GB)))


def fitting_jobs(jobs: int | None) -> int:
    """``jobs`` (default: :func:`default_jobs`), lowered to as many pairs as the memory this run
    may use holds at once, with a warning: too many at once would end with the OOM killer."""
    if jobs is None:
        return default_jobs()
    free = available_memory_gb()
    fit = max(1, int(free // MEMORY_PER_JOB_GB))
    if jobs > fit:
        logger.warning(
            "--jobs %d: the memory here (%.1f GB free) holds %d pair(s) at once at %.1f GB "
            "each; running %d",
            jobs,
            free,
            fit,
            MEMORY_PER_JOB_GB,
            fit,
        )
        return fit
    return jobs


def usable_cores() -> int:
    """The cores this process may run on (its affinity, else the machine's)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# ----------------------------------------------------------------------------------- one pair

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
    if limit and limit / 1024**3 < MEMORY_PER_JOB_GB:
        raise MSNewLesionsError(
            f"this Dask worker may use {limit / 1024**3:.1f} GB and one pair needs about "
            f"{MEMORY_PER_JOB_GB:.1f} GB; start the workers with a memory limit of "
            f"{int(MEMORY_PER_JOB_GB + 1)} GB or more (--memory-limit)."
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


# ------------------------------------------------------------------------------ the driver


class Progress:
    """Pairs done / total and the time left, logged after each pair."""

    def __init__(self, total: int) -> None:
        self.total, self.finished, self.failed = total, 0, 0
        self.start = time.monotonic()

    def update(self, outcome: PairOutcome) -> None:
        self.finished += 1
        self.failed += outcome.status == "failed"
        elapsed = time.monotonic() - self.start
        left = self.total - self.finished
        eta = f", about {_duration(elapsed / self.finished * left)} left" if left else ""
        detail = f" ({outcome.reason})" if outcome.reason else f" in {outcome.seconds:.0f} s"
        logger.info(
            "[%d/%d] %s: %s%s%s",
            self.finished,
            self.total,
            outcome.key,
            outcome.status,
            detail,
            eta,
        )


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return (
        f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"
    )


def run_pairs(
    pairs: Sequence[PairOutputs],
    settings: SegmentSettings,
    jobs: int | None = None,
    scheduler: str | None = None,
) -> list[PairOutcome]:
    """Every pair not yet complete, on ``jobs`` local processes or the Dask cluster at
    ``scheduler``; one outcome per pair, in the order given."""
    outcomes: dict[str, PairOutcome] = {}
    todo = []
    for outputs in pairs:
        if outputs.is_complete():
            outcomes[outputs.pair.key] = PairOutcome(outputs.pair.key, "skipped")
        else:
            todo.append(outputs)
    if len(outcomes):
        logger.info("%d of %d pair(s) already complete, skipped", len(outcomes), len(pairs))
    if todo:
        progress = Progress(len(todo))
        if scheduler is not None:
            results = _run_on_dask(todo, settings, scheduler, progress)
        else:
            results = _run_locally(todo, settings, fitting_jobs(jobs), progress)
        outcomes.update((outcome.key, outcome) for outcome in results)
    return [outcomes[outputs.pair.key] for outputs in pairs]


def _worker_start(threads: int) -> None:
    """A local worker: its share of the cores, and death with the driver (Linux).

    Set before torch and ITK start their thread pools (they read these at import).
    """
    import signal
    import warnings

    # As the command line does: a deprecation raised inside torch is not the user's business.
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.interface` is deprecated", category=FutureWarning
    )
    for variable in (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
    ):
        os.environ[variable] = str(threads)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_locally(
    todo: Sequence[PairOutputs], settings: SegmentSettings, jobs: int, progress: Progress
) -> list[PairOutcome]:
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, usable_cores() // jobs)
    logger.info("%d pair(s) to segment, %d at a time, %d thread(s) each", len(todo), jobs, threads)
    context = multiprocessing.get_context("spawn")
    waiting = list(reversed(todo))
    results: list[PairOutcome] = []
    while waiting:
        pool = ProcessPoolExecutor(jobs, context, initializer=_worker_start, initargs=(threads,))
        in_flight: dict[Future[PairOutcome], PairOutputs] = {}
        broken = False
        try:
            while waiting or in_flight:
                while waiting and len(in_flight) < jobs and not broken:
                    outputs = waiting.pop()
                    in_flight[pool.submit(process_pair, outputs, settings)] = outputs
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    outputs = in_flight.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        broken = True
                        outcome = record_lost(outputs, WORKER_DIED)
                    results.append(outcome)
                    progress.update(outcome)
                if broken:
                    for outputs in list(in_flight.values()):
                        outcome = record_lost(outputs, WORKER_DIED)
                        results.append(outcome)
                        progress.update(outcome)
                    in_flight.clear()
                    logger.warning("a worker died; starting a fresh pool for the other pairs")
                    break
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)
    return results


def _run_on_dask(
    todo: Sequence[PairOutputs], settings: SegmentSettings, scheduler: str, progress: Progress
) -> list[PairOutcome]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise MSNewLesionsError(
            "--dask-scheduler needs the 'distributed' package; pip install distributed."
        ) from None
    try:
        client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise MSNewLesionsError(
            f"cannot reach the Dask scheduler at {scheduler} ({one_line(error)}); check the "
            "address and that the scheduler is running."
        ) from None
    results = []
    with client:
        workers = len(client.scheduler_info().get("workers", {}))
        logger.info(
            "%d pair(s) to segment on the Dask cluster at %s (%d worker(s) now)",
            len(todo),
            scheduler,
            workers,
        )
        futures = {
            client.submit(
                process_pair,
                outputs,
                settings,
                pure=False,
                key=f"msnewlesions-{outputs.pair.key}-{os.getpid()}-{time.time_ns()}",
            ): outputs
            for outputs in todo
        }
        for future in as_completed(list(futures), loop=client.loop):
            outputs = futures[future]
            try:
                outcome = future.result()
            except Exception as error:  # KilledWorker, a worker without the package, ...
                outcome = record_lost(outputs, f"on the Dask cluster: {one_line(error)}")
            results.append(outcome)
            progress.update(outcome)
    return results
