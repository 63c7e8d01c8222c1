"""What the suites measure with: latency statistics, interleaved timing,
timed calls, summed signature time, an interpreter's memory measured in a
fresh process, and the config fields that set them (``warmup``,
``repeats``, ``measure_memory``).

Times are taken with :func:`time.perf_counter` (wall clock, seconds) and
reported in milliseconds (``*_ms``) or seconds (``*_seconds``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def warmup_field(default: int) -> Any:
    """A suite config's ``warmup`` field (int, calls), its CLI help in the metadata."""
    return dataclasses.field(default=default, metadata={"help": "untimed calls of each step before timing."})


def repeats_field(default: int, steps: str = "each step") -> Any:
    """A suite config's ``repeats`` field (int, timed calls of ``steps``), its CLI help in the metadata."""
    return dataclasses.field(default=default, metadata={"help": f"timed calls of {steps}."})


def measure_memory_field() -> Any:
    """A suite config's ``measure_memory`` field (bool, default True), its CLI help in the metadata."""
    return dataclasses.field(
        default=True, metadata={"help": "measure the interpreter's memory (MiB) in a fresh process."})


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """Mean, median and 99th percentile of call times.

    ``seconds``: a non-empty sequence of durations in seconds. Returns
    ``{"mean_ms", "p50_ms", "p99_ms"}`` as floats in milliseconds
    (percentiles interpolated linearly). An empty sequence gives NaN (NumPy
    warns) for the mean and raises ``IndexError`` for the percentiles.
    """
    ms = np.asarray(seconds) * 1e3
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def interleaved(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Time several zero-argument callables in alternation, so that drift in
    the machine's load hits all of them alike.

    Each callable first runs ``warmup`` times untimed; then ``repeats``
    rounds call each once, in the dict's order. Returns, per key, the
    ``repeats`` call times in seconds. Raises what a callable raises.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            out[k].append(time.perf_counter() - start)
    return out


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T, float]:
    """``(fn(*args, **kwargs), wall seconds it took)``; raises what ``fn`` raises."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


class CallTimer:
    """Sums the wall time (``seconds``, float) spent inside the callables it
    wrapped; meant for :meth:`lcft_tf.device.model.OnDeviceModel.wrap_signatures`."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` called with keyword arguments only (a signature runner's
        ``**inputs``), adding each call's time to :attr:`seconds`."""

        def timed_call(**inputs: Any) -> T:
            start = time.perf_counter()
            try:
                return fn(**inputs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed_call


_MEMORY_PROBE = r"""
import json, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter

def status_mb(key):  # VmHWM is this process's own peak (ru_maxrss survives exec)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key)) / 1024

rss_mb = lambda: status_mb("VmRSS")

before = rss_mb()
it = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]))
inputs = json.loads(sys.argv[3])
for key in ("train", "infer"):
    runner = it.get_signature_runner(key)
    feed = {n: np.zeros(s, d) for n, (s, d) in inputs[key].items()}
    for _ in range(3):
        runner(**feed)
print(json.dumps({"peak_rss_mb": status_mb("VmHWM"),
                  "interpreter_rss_mb": rss_mb() - before}))
"""


def interpreter_memory(path: Path, threads: int, metadata: dict[str, Any]) -> dict[str, float]:
    """Memory of a fresh Python process that loads only LiteRT and runs the
    ``train`` and ``infer`` signatures of ``path`` three times on zeros.

    ``threads``: interpreter threads; ``metadata``: the file's JSON metadata
    (its ``signatures`` give the input shapes and dtypes). Returns
    ``{"peak_rss_mb": the process's peak resident memory, "interpreter_rss_mb":
    the resident memory the interpreter added (model, arena, variables)}`` in
    MiB. Needs Linux's ``/proc``; raises ``subprocess.CalledProcessError`` if
    the probe fails.
    """
    inputs = {
        key: {t["name"]: (t["shape"], t["dtype"]) for t in metadata["signatures"][key]["inputs"]}
        for key in ("train", "infer")
    }
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(path), str(threads), json.dumps(inputs)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])
