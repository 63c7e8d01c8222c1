"""A worker process's life: it ends with its parent, and its death is one
error that every executor raises alike (docs/scaling.md)."""

from __future__ import annotations

import os
import threading
import time


class WorkerLostError(RuntimeError):
    """A worker process or actor died (killed, out of memory, Ray's restart
    limit reached): finished chunks are kept, so the run can be resumed."""


PARENT_POLL_SECONDS = 0.5


def exit_with_parent(parent: int, poll_seconds: float = PARENT_POLL_SECONDS) -> None:
    """Start a daemon thread that ends this worker process as soon as its
    parent ``parent`` (a pid) is gone, so a killed run leaves no orphans. The
    pid comes from the parent itself: a worker still starting when the
    parent is killed is already reparented, and must exit too."""

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(poll_seconds)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
