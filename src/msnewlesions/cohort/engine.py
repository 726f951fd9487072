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
import time
from collections.abc import Sequence

from msnewlesions.cohort.outputs import (
    PairOutputs,
)
from msnewlesions.cohort.pair_job import (
    PairOutcome,
    SegmentSettings,
    one_line,
    process_pair,
    record_lost,
)
from msnewlesions.errors import MSNewLesionsError
from msnewlesions.resources import SEGMENT_MEMORY_GB, available_memory_gb

logger = logging.getLogger(__name__)

#: What one ``segment`` needs at its peak (measured on real pairs; benchmarks/cohort.py).
MEMORY_PER_JOB_GB = SEGMENT_MEMORY_GB

#: How long to try reaching a Dask scheduler before giving up.
DASK_CONNECT_TIMEOUT = "30s"

WORKER_DIED = "the worker process died while segmenting this pair (killed, or out of memory)"


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
