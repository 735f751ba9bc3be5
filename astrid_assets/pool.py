"""The frames of a nightly step in parallel: one pool, a ``concurrent.futures``-like interface, three engines.

A frame is seconds of work, too small to be a Dagster step of its own; a step hands its frames to the
pool that the deployment chose (``ASTRID_POOL``, :mod:`astrid_assets.settings`):

``serial``
    in the step's own process, one frame after another (the tests).
``processes`` (default)
    ``ASTRID_WORKERS`` worker processes (default: the cores the container may use), started with
    ``spawn``; each caps the numerical libraries at one thread (OpenMP, MKL, OpenBLAS through the
    environment and threadpoolctl, torch), so that N workers use N cores and nothing oversubscribes.
    The workers are replaced by fresh ones once they have run ``ASTRID_WORKER_MAX_TASKS`` frames each
    on average, between two batches of frames, which bounds what their heaps can grow to. (Not with
    ``ProcessPoolExecutor(max_tasks_per_child=…)``: on Python 3.11 an executor whose last worker retires
    that way while tasks wait starts no replacement and hangs.)
``dask``
    an existing Dask cluster (``ASTRID_DASK_ADDRESS``, a ``distributed.Client`` address), which a site
    may run on Slurm (dask-jobqueue) or Kubernetes (dask-kubernetes); its workers' memory is bounded by
    their ``--memory-limit`` (the nanny restarts a worker past 95 % of it).

A task is a picklable top-level function and small arguments: object-store keys and the store's URL,
never pixel arrays; it returns a small row table. :meth:`FramePool.run_frames` runs one task per frame
and returns the outcomes in the order of the tasks, whatever order they finished in, so every engine
gives the same rows. A task that raises (a worker killed for memory, a lost connection, a bug) is retried
once; if it fails again its outcome carries the error and the step writes that frame's failed row — one
frame never sinks the night. This module has no Dagster import; the resource is
:class:`astrid_assets.resources.pool.FramePoolResource`.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from astrid_assets import settings

__all__ = ["DaskPool", "FrameOutcome", "FramePool", "ProcessPool", "SerialPool", "limit_threads", "open_pool"]

#: Environment variables that cap the thread pools of numerical libraries (read when each library loads).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

_threads_limited = False


def limit_threads() -> None:
    """Cap this worker process at one thread per numerical library (environment, threadpoolctl, torch, scipy.fft).

    The environment covers libraries loaded later; threadpoolctl those already loaded (BLAS, OpenMP).
    """
    global _threads_limited
    for variable in THREAD_VARIABLES:
        os.environ[variable] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # threadpoolctl is optional
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    from astrid_assets.science.subtraction.fft_backends import limit_fft_threads

    limit_fft_threads(1)  # scipy.fft's thread pool: neither the environment nor threadpoolctl reaches it
    _threads_limited = True


def in_worker(task: Callable, *args, **kwargs):
    """Run ``task`` in a worker process, its threads capped first (once per process)."""
    if not _threads_limited:
        limit_threads()
    elif "torch" in sys.modules and sys.modules["torch"].get_num_threads() > 1:  # torch imported by a task
        sys.modules["torch"].set_num_threads(1)
    return task(*args, **kwargs)


@dataclass
class FrameOutcome:
    """What one frame's task gave: its ``value``, or the ``error`` of its last attempt."""

    label: str  #: the frame (or field) it was run for, for messages
    value: Any = None
    error: str | None = None  #: ``"<ExceptionType>: <message>"`` when every attempt failed
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


class FramePool(ABC):
    """Runs tasks for a nightly step; ``submit`` as :class:`concurrent.futures.Executor` does.

    Use as a context manager, or call :meth:`shutdown`.
    """

    kind: str
    workers: int

    @abstractmethod
    def submit(self, task: Callable, /, *args, **kwargs):
        """Schedule ``task(*args, **kwargs)``; returns a future whose ``result()`` gives its value or raises."""

    def map(self, task: Callable, *iterables) -> Iterator:
        """``task`` over ``iterables`` in order, as :meth:`concurrent.futures.Executor.map` (no retry)."""
        futures = [self.submit(task, *args) for args in zip(*iterables, strict=True)]
        return (future.result() for future in futures)

    def recover(self, errors: Sequence[BaseException]) -> None:
        """Make the pool usable again after ``errors`` (a process pool broken by a dead worker is replaced)."""
        return None

    def before_batch(self) -> None:
        """Called by :meth:`run_frames` before it submits a batch, when none of its tasks is in flight."""
        return None

    def run_frames(self, task: Callable, arguments: Sequence[tuple], labels: Sequence[str],
                   retries: int = 1) -> list[FrameOutcome]:
        """``task(*args)`` for each tuple of ``arguments``, in parallel; the outcomes in the same order.

        A task that raises is run again, up to ``retries`` more times (all the failed ones of a round
        together); its outcome then carries the error of its last attempt rather than raising.
        """
        outcomes = [FrameOutcome(label) for label in labels]
        pending = list(range(len(arguments)))
        for attempt in range(1, retries + 2):
            self.before_batch()
            errors: dict[int, BaseException] = {}
            futures = {}
            for index in pending:
                try:
                    futures[index] = self.submit(task, *arguments[index])
                except Exception as error:  # a pool that cannot take work (broken, disconnected)
                    errors[index] = error
            for index, future in futures.items():
                try:
                    outcomes[index].value = future.result()
                    outcomes[index].error = None
                except Exception as error:
                    errors[index] = error
                outcomes[index].attempts = attempt
            for index, error in errors.items():
                outcomes[index].error = f"{type(error).__name__}: {error}"
                outcomes[index].attempts = attempt
            pending = sorted(errors)
            if not pending:
                break
            self.recover(list(errors.values()))
        return outcomes

    def shutdown(self) -> None:
        """Release the workers (a Dask cluster itself keeps running)."""
        return None

    def __enter__(self) -> FramePool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(workers={self.workers})"


class SerialPool(FramePool):
    """Every task in the calling process, when it is submitted."""

    kind = "serial"

    def __init__(self):
        self.workers = 1

    def submit(self, task: Callable, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(task(*args, **kwargs))
        except Exception as error:
            future.set_exception(error)
        return future


class ProcessPool(FramePool):
    """``workers`` spawned processes, one thread each; all replaced, between batches, once they have run
    ``max_tasks_per_child`` tasks each on average (None: never)."""

    kind = "processes"

    def __init__(self, workers: int, max_tasks_per_child: int | None = None):
        self.workers = workers
        self.max_tasks_per_child = max_tasks_per_child
        self.generation = 0  #: how many times the workers were started
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        self.generation += 1
        self._submitted = 0
        # spawn: a fresh interpreter, not a fork of a run process that holds threads and connections
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=limit_threads)

    def submit(self, task: Callable, /, *args, **kwargs) -> Future:
        self._submitted += 1
        return self._executor.submit(task, *args, **kwargs)

    def before_batch(self) -> None:
        if self.max_tasks_per_child and self._submitted >= self.max_tasks_per_child * self.workers:
            self._executor.shutdown(wait=True)
            self._executor = self._start()

    def recover(self, errors: Sequence[BaseException]) -> None:
        if any(isinstance(error, BrokenProcessPool) for error in errors):
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._start()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class DaskPool(FramePool):
    """The workers of an existing Dask cluster at ``address``; each task capped at one thread per library."""

    kind = "dask"

    def __init__(self, address: str, timeout: float = 30):
        from distributed import Client

        self.address = address
        self.client = Client(address, timeout=timeout, set_as_default=False)
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        self.workers = max(1, sum(int(worker.get("nthreads", 1)) for worker in workers.values()))

    def submit(self, task: Callable, /, *args, **kwargs):
        return self.client.submit(in_worker, task, *args, pure=False, **kwargs)

    def shutdown(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"DaskPool({self.address!r}, workers={self.workers})"


def open_pool(kind: str | None = None) -> FramePool:
    """The pool the deployment configured (``kind`` overrides ``ASTRID_POOL``); see the module docstring."""
    kind = kind or settings.pool_kind()
    if kind == "serial":
        return SerialPool()
    if kind == "processes":
        return ProcessPool(settings.pool_workers(), settings.worker_max_tasks())
    if kind == "dask":
        address = settings.dask_address()
        if not address:
            raise settings.DeploymentError("ASTRID_POOL=dask needs ASTRID_DASK_ADDRESS, the scheduler of the cluster")
        return DaskPool(address)
    raise ValueError(f"unknown frame pool {kind!r}: one of {', '.join(settings.POOL_KINDS)}")
