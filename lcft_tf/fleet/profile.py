"""Where a fleet worker's time goes: wall seconds per phase and inside the
LiteRT signature calls (docs/scaling.md, "Where a worker's time goes").

A :class:`PhaseClock` is cheap enough to stay on (a ``perf_counter`` pair
per phase and per signature call). Its numbers travel beside a chunk's
result, never inside the chunk file or the manifest: they change from run to
run, and nothing hashed may.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator, Mapping

# Phases of the per-user work, in the order a user goes through them.
# pack: cutting the chunk's packs and remapping its ids (submodel users);
# coda: a CoDA method's matching and fine-tune, whole; write: encoding and
# writing the chunk file; other: what no phase covers (slicing users,
# bookkeeping), the chunk's wall time minus the phases.
PHASES = ("pack", "restore", "correct", "train", "infer", "coda", "write", "other")


class PhaseClock:
    """Seconds per phase (:data:`PHASES`) and per signature (``restore``,
    ``train``, ``infer``, ...: the runner call, i.e. LiteRT copying the
    inputs in, invoking and copying the outputs out)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.signatures: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add the block's wall time to phase ``name``; phases must not nest
        (the time would count twice)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] += time.perf_counter() - start

    def wrap(self, key: str, runner: Callable[..., Any]) -> Callable[..., Any]:
        """``runner`` (a signature runner, called with keyword arrays), adding
        each call's time to signature ``key``; for
        :meth:`lcft_tf.device.model.OnDeviceModel.wrap_signatures`."""
        self.signatures.setdefault(key, 0.0)
        self.calls.setdefault(key, 0)

        def timed(**inputs: Any) -> Any:
            start = time.perf_counter()
            try:
                return runner(**inputs)
            finally:
                self.signatures[key] += time.perf_counter() - start
                self.calls[key] += 1

        return timed

    def take(self, wall_seconds: float) -> dict[str, Any]:
        """This clock's numbers for a chunk that took ``wall_seconds``
        (``other`` filled in), then zeroed: ``{"worker_seconds",
        "phases": {phase: s}, "signatures": {key: s}, "signature_calls":
        {key: n}}``."""
        phases = dict(self.phases)
        phases["other"] = max(wall_seconds - sum(v for k, v in phases.items() if k != "other"), 0.0)
        out = {"worker_seconds": wall_seconds, "phases": phases, "signatures": dict(self.signatures),
               "signature_calls": dict(self.calls)}
        self.phases = dict.fromkeys(PHASES, 0.0)
        self.signatures = dict.fromkeys(self.signatures, 0.0)
        self.calls = dict.fromkeys(self.calls, 0)
        return out


def summarize(total: Mapping[str, Any]) -> dict[str, Any]:
    """Chunk profiles summed (:func:`lcft_tf.artifacts.fleet_chunks.add_stats`)
    as shares: adds ``signature_seconds`` (every signature call) and
    ``signature_share`` (of ``worker_seconds``, None when 0) and
    ``phase_shares`` (phase -> share of ``worker_seconds``)."""
    if not total:
        return {}
    wall = float(total.get("worker_seconds", 0.0))
    signature = float(sum(total.get("signatures", {}).values()))
    share = lambda s: s / wall if wall > 0 else None
    return {**total, "signature_seconds": signature, "signature_share": share(signature),
            "phase_shares": {k: share(v) for k, v in total.get("phases", {}).items()}}


def format_profile(summary: Mapping[str, Any]) -> str:
    """One line: the interpreter share and each phase's share of worker time
    (``-`` for an empty profile)."""
    if not summary or summary.get("signature_share") is None:
        return "worker profile -"
    phases = " ".join(f"{k} {100 * v:.0f}%" for k, v in summary["phase_shares"].items() if v)
    return f"worker time {summary['worker_seconds']:.1f} s: interpreter {100 * summary['signature_share']:.0f}%; {phases}"
