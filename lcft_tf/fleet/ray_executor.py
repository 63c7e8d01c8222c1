"""The fleet's executor on Ray: a pool of device-worker actors (docs/scaling.md).

Each actor runs the executor's ``initializer`` once when it starts (for the
fleet: load the ``.tflite``, save the cloud state, memory-map the dataset)
and then ``fn`` on one task at a time; :class:`ray.util.ActorPool` hands the
next task to whichever actor is free and yields results as they finish, so
the parent records chunks in the manifest exactly as with the process pool
(docs/pipeline.md).

What travels: the initializer's arguments (paths and the config, a few
hundred bytes) are put in the object store once and every actor receives
that reference; tasks are ``(start, stop)`` user ranges. The model file and
the dataset are read by path where the actor runs, so the paths must be on a
file system every node sees (the chunks are written there too).

A worker that dies (killed, out of memory, node lost) is restarted by Ray
(``max_restarts``), which runs the initializer again, and the task it was
running is resubmitted (``max_task_retries``). A chunk is written atomically
and only counts once the parent lists it, so a retried chunk is simply
written again with the same bytes. Errors raised by the task itself (a
``ValueError`` on bad data) are not retried: they reach the caller.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterator

from lcft_tf.fleet.lifecycle import WorkerLostError, exit_with_parent

log = logging.getLogger(__name__)


class _DeviceWorker:
    """One actor: ``initializer(*initargs)`` once, then ``fn(task)`` per call."""

    def __init__(self, setup: tuple[Callable[..., None], tuple, Callable[[Any], Any]]):
        initializer, initargs, self._fn = setup
        exit_with_parent(os.getppid())  # the raylet that started this actor
        initializer(*initargs)

    def run(self, task: Any) -> Any:
        return self._fn(task)

    def pid(self) -> int:
        return os.getpid()


class RayExecutor:
    """``map_unordered`` on a Ray actor pool of ``workers`` actors (one CPU
    each; 0: every CPU Ray has). ``address`` None starts a local Ray with
    ``workers`` CPUs (or uses the one this process already started);
    ``"auto"`` or ``"ray://host:port"`` joins a cluster. A Ray started here is
    shut down by :meth:`close`."""

    def __init__(self, workers: int = 0, address: str | None = None, max_restarts: int = 3, max_task_retries: int = 3):
        if workers < 0 or max_restarts < 0 or max_task_retries < 0:
            raise ValueError("workers, max_restarts and max_task_retries must be >= 0")
        self.workers = workers
        self.address = address
        self.max_restarts = max_restarts
        self.max_task_retries = max_task_retries
        self.actors: list[Any] = []  # the current pool (tests kill one)
        self._started_ray = False

    def _connect(self):
        try:
            import ray
        except ImportError:
            raise ValueError("executor 'ray' needs Ray: pip install 'lcft-tf[ray]'") from None
        if not ray.is_initialized():
            if self.address not in (None, "auto", "local"):
                check_reachable(self.address)
            if self.address is None:
                cpus = self.workers or os.cpu_count() or 1
                ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING,
                         runtime_env=_worker_env())
            else:
                ray.init(address=self.address, logging_level=logging.WARNING, runtime_env=_worker_env())
            self._started_ray = True
        return ray

    def start(self) -> None:
        """Connect to (or start) Ray now rather than at the first task
        (benchmarks time the work without Ray's start-up)."""
        self._connect()

    def map_unordered(self, initializer, initargs, fn, tasks) -> Iterator[Any]:
        """See :meth:`lcft_tf.fleet.executors.Executor.map_unordered`: one actor
        per worker (at most one per task), killed when the call ends."""
        if not tasks:
            return
        ray = self._connect()
        from ray.util import ActorPool

        cpus = max(int(ray.cluster_resources().get("CPU", 1)), 1)
        if self.workers > cpus:  # an actor that can never be placed would hold its task forever
            log.warning("Ray has %d CPUs: using %d workers, not %d", cpus, cpus, self.workers)
        workers = min(self.workers or cpus, cpus)
        setup = ray.put((initializer, initargs, fn))  # once in the object store, read once per node
        actor = ray.remote(_DeviceWorker).options(
            num_cpus=1, max_restarts=self.max_restarts, max_task_retries=self.max_task_retries
        )
        self.actors = [actor.remote(setup) for _ in range(min(workers, len(tasks)))]
        try:
            pool = ActorPool(self.actors)
            yield from pool.map_unordered(lambda a, task: a.run.remote(task), tasks)
        except ray.exceptions.RayTaskError as err:  # the task's own error, as the process pool reports it
            raise err.cause from None
        except ray.exceptions.RayActorError as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise WorkerLostError(f"a Ray worker died and its restarts ({self.max_restarts}) are used up: "
                                  f"{_plain(reason)}") from None
        finally:
            for a in self.actors:
                ray.kill(a, no_restart=True)
            self.actors = []

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False


CONNECT_TIMEOUT_SECONDS = 10.0


def _plain(text: str) -> str:
    """``text`` without terminal colour codes (Ray colours its messages)."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Raise ``ValueError`` in one line unless ``address`` (``host:port`` or
    ``ray://host:port``) accepts a TCP connection within ``timeout`` seconds:
    ``ray.init`` itself retries an unreachable address for many minutes."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"Ray address {address!r} must be auto, host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ValueError(f"cannot reach Ray at {address} ({err.strerror or err}); start it "
                         "(ray start --head) or fix --ray_address") from None


def _worker_env() -> dict[str, Any]:
    """Actors import this package the way the driver does (a source checkout
    on PYTHONPATH included), and start TensorFlow quietly."""
    import lcft_tf

    root = os.path.dirname(os.path.dirname(os.path.abspath(lcft_tf.__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return {"env_vars": {"PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}}
