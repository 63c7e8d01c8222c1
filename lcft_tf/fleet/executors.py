"""Where fleet tasks run: serial, a local process pool, or Ray (docs/scaling.md).

Every executor offers ``map_unordered(initializer, initargs, fn, tasks)``:
each worker runs ``initializer(*initargs)`` once, then ``fn(task)`` per task,
and results are yielded as they finish. ``close()`` releases what the
executor started (a local Ray).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Protocol

from lcft_tf.fleet.lifecycle import WorkerLostError, exit_with_parent


class Executor(Protocol):
    """What the fleet and the hard-table search run their tasks on."""

    def map_unordered(
        self, initializer: Callable[..., None], initargs: tuple, fn: Callable[[Any], Any], tasks: list
    ) -> Iterator[Any]:
        """Every worker runs ``initializer(*initargs)`` once, then ``fn(task)``
        per task; results are yielded as they finish (any order). A task's
        exception reaches the caller."""
        ...

    def start(self) -> None:
        """Connect to what the executor needs (a Ray cluster) now, so that a bad
        address fails before a run writes anything; raises ``ValueError``."""
        ...

    def close(self) -> None:
        """Release what the executor started (idempotent)."""
        ...


def _start_child(parent: int, initializer: Callable[..., None], initargs: tuple) -> None:
    # A terminal's Ctrl-C reaches the whole process group: the parent handles
    # it (one line, the pool shut down); a worker ends with its parent instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)
    initializer(*initargs)


class SerialExecutor:
    """Runs every task in this process (tests, debugging, one core)."""

    def start(self) -> None:
        """Nothing to connect to."""

    def close(self) -> None:
        """Nothing to release."""

    def map_unordered(self, initializer, initargs, fn, tasks):
        """See :meth:`Executor.map_unordered`; results come in task order."""
        initializer(*initargs)
        for task in tasks:
            yield fn(task)


class ProcessExecutor:
    """A local pool of ``workers`` spawned processes (0: one per CPU core;
    no fork: the parent may hold TensorFlow)."""

    def __init__(self, workers: int = 0):
        self.workers = workers or os.cpu_count() or 1

    def start(self) -> None:
        """Nothing to connect to: each call starts its own pool."""

    def close(self) -> None:
        """Nothing to release: each call's pool is shut down when it ends."""

    def map_unordered(self, initializer, initargs, fn, tasks):
        """See :meth:`Executor.map_unordered`; one pool per call, at most one
        process per task; pending tasks are cancelled when one fails."""
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(self.workers, max(len(tasks), 1)),
            mp_context=context,
            initializer=_start_child,
            initargs=(os.getpid(), initializer, initargs),
        ) as pool:
            futures = [pool.submit(fn, task) for task in tasks]
            try:
                for future in concurrent.futures.as_completed(futures):
                    yield future.result()
            except BrokenProcessPool as err:
                for future in futures:
                    future.cancel()
                raise WorkerLostError(f"a worker process died ({err})") from None
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def _ray(workers: int, address: str | None) -> Executor:
    from lcft_tf.fleet.ray_executor import RayExecutor  # Ray is optional: imported only when asked for

    return RayExecutor(workers, address)


# name -> factory(workers, ray_address); "auto" is resolved by make_executor.
EXECUTORS: dict[str, Callable[[int, str | None], Executor]] = {
    "serial": lambda workers, address: SerialExecutor(),
    "process": lambda workers, address: ProcessExecutor(workers),
    "ray": _ray,
}


def make_executor(name: str = "auto", workers: int = 0, ray_address: str | None = None) -> Executor:
    """The executor ``name`` (``auto``: serial for one worker, else the
    process pool); ``close()`` it when done. Raises ``ValueError`` for an
    unknown name, or for ``ray`` when Ray is not installed."""
    if name == "auto":
        name = "serial" if (workers or os.cpu_count() or 1) == 1 else "process"
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose from {['auto', *EXECUTORS]}")
    return EXECUTORS[name](workers, ray_address)


def is_in_process(executor: Executor) -> bool:
    """True if ``executor`` runs tasks in this process (no pickling, no child)."""
    return isinstance(executor, SerialExecutor)
