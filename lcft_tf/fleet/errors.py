"""Errors every executor raises alike, so callers need not know which ran."""


class WorkerLostError(RuntimeError):
    """A worker process or actor died (killed, out of memory, Ray's restart
    limit reached): finished chunks are kept, so the run can be resumed."""
