"""Interpreter suite: LiteRT signatures vs the same step in TF, side by side.

For each model, batch size and thread count: conversion time, file size,
latency (mean / p50 / p99) of ``train``, ``infer``, ``save`` and ``restore``
in LiteRT, the TF ``tf.function`` train / infer step on the same batch and
their ratio, the Python wrapper's overhead over the bare signature runner,
and the interpreter's peak resident memory (measured in a fresh process that
loads only LiteRT). All ratios come from measurements taken in one run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lcft_tf.benchmarks.timing import (interleaved, interpreter_memory, latency_stats, measure_memory_field,
                                       repeats_field, timed, warmup_field)
from lcft_tf.checks import positive

log = logging.getLogger(__name__)

# The timed steps, in the order they alternate; the first six are reported.
STEPS = ("train", "tf_train", "infer", "tf_infer", "save", "restore", "bare_train_x", "wrapper_train_x")


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """What the interpreter suite exports and times.

    Raises ``ValueError`` on construction for an unknown model, a batch
    size, thread count, repeat count or ``wrapper_batches`` below 1, or a
    negative ``warmup``.
    """

    models: tuple[str, ...] = dataclasses.field(
        default=("lr", "wide_deep", "deepfm", "pnn", "din", "edgerec"), metadata={"help": "registry models, or 'all'."})
    batch_sizes: tuple[int, ...] = dataclasses.field(
        default=(32,), metadata={"help": "static batch sizes to export and time (samples per step)."})
    threads: tuple[int, ...] = dataclasses.field(default=(1,), metadata={"help": "interpreter thread counts."})
    warmup: int = warmup_field(10)
    repeats: int = repeats_field(100)
    wrapper_batches: int = dataclasses.field(
        default=10, metadata={"help": "batches per wrapper call when measuring its overhead."})
    measure_memory: bool = measure_memory_field()
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the synthetic data and the initial weights."})

    def __post_init__(self) -> None:
        from lcft_tf.models import check_names  # TensorFlow: imported on use
        check_names(self.models)
        positive("batch_sizes", *self.batch_sizes)
        positive("threads", *self.threads)
        positive("repeats", self.repeats)
        positive("wrapper_batches", self.wrapper_batches)
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


def _samples(data, n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The first ``n`` train rows of ``data`` (repeated when it has fewer):
    features by name, and float32 labels ``[n]``."""
    features, labels = data.train_rows()
    reps = -(-n // len(labels))
    features = {k: np.concatenate([v] * reps)[:n] for k, v in features.items()}
    return features, np.concatenate([labels] * reps)[:n].astype(np.float32)


def _tf_steps(model, export, batch: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Callable[[], Any]]:
    """The TF ``tf.function`` train and infer steps on ``batch`` (the same
    module the export converts), keyed ``tf_train`` / ``tf_infer``."""
    import tensorflow as tf

    from lcft_tf.cloud.export import TrainableModule

    module = TrainableModule(model, export)
    tf_train, tf_infer = tf.function(module.train), tf.function(module.infer)
    tf_batch = {k: tf.constant(v) for k, v in batch.items()}
    size = len(labels)
    tf_label, tf_weight, tf_lr = tf.constant(labels), tf.ones(size), tf.constant(0.01)
    return {
        "tf_train": lambda: tf_train(**tf_batch, label=tf_label, sample_weight=tf_weight, learning_rate=tf_lr),
        "tf_infer": lambda: tf_infer(**tf_batch),
    }


def _litert_steps(device, features: dict[str, np.ndarray], labels: np.ndarray, batch_size: int) -> dict[str, Callable[[], Any]]:
    """The LiteRT steps on ``device``: one signature call each of train /
    infer / save / restore on the first batch, and ``len(labels)`` samples
    trained by the wrapper and by a hand-written loop of bare signature calls."""
    batch = {k: v[:batch_size] for k, v in features.items()}
    n = len(labels)
    train_inputs = {**batch, "label": labels[:batch_size], "sample_weight": np.ones(batch_size, np.float32),
                    "learning_rate": np.float32(0.01)}
    state = device.save()
    bare_inputs = {**features, "label": labels, "sample_weight": np.ones(n, np.float32)}

    def bare_train():  # the hand-written loop the wrapper replaces
        for i in range(0, n, batch_size):
            device.run_signature(
                "train", {**{k: v[i : i + batch_size] for k, v in bare_inputs.items()}, "learning_rate": np.float32(0.01)}
            )

    return {
        "train": lambda: device.run_signature("train", train_inputs),
        "infer": lambda: device.run_signature("infer", batch),
        "save": device.save,
        "restore": lambda: device.restore(state),
        "bare_train_x": bare_train,
        "wrapper_train_x": lambda: device.train(features, labels),
    }


def _row(stats: dict[str, dict[str, float]], per_step: int) -> dict[str, Any]:
    """The reported latencies (ms) and the ratios between them; the wrapper
    steps time ``per_step`` batches per call."""
    return {
        **{k: stats[k] for k in STEPS[:6]},
        "train_ratio_litert_over_tf": stats["train"]["mean_ms"] / stats["tf_train"]["mean_ms"],
        "infer_ratio_litert_over_tf": stats["infer"]["mean_ms"] / stats["tf_infer"]["mean_ms"],
        "wrapper_step_ms": stats["wrapper_train_x"]["mean_ms"] / per_step,
        "bare_step_ms": stats["bare_train_x"]["mean_ms"] / per_step,
        "wrapper_overhead": stats["wrapper_train_x"]["mean_ms"] / stats["bare_train_x"]["mean_ms"] - 1.0,
    }


def benchmark_model(name: str, batch_size: int, threads: Sequence[int], config: BenchmarkConfig, workdir: Path) -> list[dict]:
    """One model exported at ``batch_size`` into ``workdir`` and timed at each
    thread count; returns one row per thread count.

    A row has ``model``, ``batch_size``, ``threads``, ``tflite_kib``,
    ``conversion_s`` (seconds), ``num_state_tensors``, the
    :func:`~lcft_tf.benchmarks.timing.latency_stats` (ms) of ``train``,
    ``tf_train``, ``infer``, ``tf_infer``, ``save`` and ``restore``, the
    LiteRT/TF ratios, ``wrapper_step_ms``, ``bare_step_ms``,
    ``wrapper_overhead`` (a fraction) and, with ``measure_memory``, the
    :func:`~lcft_tf.benchmarks.timing.interpreter_memory` keys (MiB). Raises
    what the export raises (``FlexOpsError`` for a model needing Flex ops).
    """
    from lcft_tf import models
    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.data.synthetic import SyntheticConfig, generate
    from lcft_tf.device.model import OnDeviceModel

    data = generate(SyntheticConfig(num_users=50, seed=config.seed))
    features, labels = _samples(data, batch_size * config.wrapper_batches)
    model = models.build(name, data.spec, seed=config.seed)
    export = ExportConfig(batch_size=batch_size, learning_rate=0.01, global_ctr=data.global_ctr)
    path = workdir / f"{name}_b{batch_size}.tflite"
    metadata, conversion = timed(export_tflite, model, path, export)
    tf_steps = _tf_steps(model, export, {k: v[:batch_size] for k, v in features.items()}, labels[:batch_size])
    rows = []
    for t in threads:
        steps = {**_litert_steps(OnDeviceModel(path, num_threads=t), features, labels, batch_size), **tf_steps}
        timings = interleaved({k: steps[k] for k in STEPS}, config.warmup, config.repeats)
        stats = {k: latency_stats(v) for k, v in timings.items()}
        row = {
            "model": name,
            "batch_size": batch_size,
            "threads": t,
            "tflite_kib": round(path.stat().st_size / 1024, 1),
            "conversion_s": round(conversion, 2),
            "num_state_tensors": len(metadata["checkpoint"]["tensors"]),
            **_row(stats, config.wrapper_batches),
        }
        if config.measure_memory:
            row.update(interpreter_memory(path, t, metadata))
        rows.append(row)
        log.info("%s b=%d t=%d: train %.3f ms (TF %.3f ms)", name, batch_size, t,
                 stats["train"]["mean_ms"], stats["tf_train"]["mean_ms"])
    return rows


def run_benchmark(config: BenchmarkConfig) -> list[dict]:
    """Every model at every batch size (:func:`benchmark_model`, files in a
    temporary folder); returns their rows, models outermost."""
    from tqdm.auto import tqdm

    rows: list[dict] = []
    jobs = [(m, b) for m in config.models for b in config.batch_sizes]
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch_size in tqdm(jobs, desc="benchmark", unit="model", disable=None):
            rows += benchmark_model(name, batch_size, config.threads, config, Path(tmp))
    return rows


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`run_benchmark` as a Markdown table (ms, KiB, MiB;
    NaN where memory was not measured); raises ``KeyError`` on other rows."""
    header = (
        "| model | batch | threads | KiB | convert s | train ms (p50/p99) | TF train ms | LiteRT/TF train "
        "| infer ms | TF infer ms | LiteRT/TF infer | save ms | restore ms | wrapper overhead | interpreter MB | process peak MB |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['threads']} | {r['tflite_kib']:.0f} | {r['conversion_s']:.1f} "
            f"| {r['train']['mean_ms']:.3f} ({r['train']['p50_ms']:.3f}/{r['train']['p99_ms']:.3f}) "
            f"| {r['tf_train']['mean_ms']:.3f} | {r['train_ratio_litert_over_tf']:.2f}x "
            f"| {r['infer']['mean_ms']:.3f} | {r['tf_infer']['mean_ms']:.3f} | {r['infer_ratio_litert_over_tf']:.2f}x "
            f"| {r['save']['mean_ms']:.3f} | {r['restore']['mean_ms']:.3f} | {100 * r['wrapper_overhead']:+.1f}% "
            f"| {r.get('interpreter_rss_mb', float('nan')):.1f} | {r.get('peak_rss_mb', float('nan')):.0f} |"
        )
    return "\n".join(lines)


def plot_latency(rows: list[dict], path: str | os.PathLike) -> None:
    """Draw mean train / infer latency (ms, log scale) vs batch size (log 2)
    to the PNG ``path``: LiteRT solid, TF dotted, one line per model and
    thread count. Raises ``OSError`` if ``path`` cannot be written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key in zip(axes, ("train", "infer")):
        for model in sorted({r["model"] for r in rows}):
            for t in sorted({r["threads"] for r in rows}):
                sel = sorted((r for r in rows if r["model"] == model and r["threads"] == t), key=lambda r: r["batch_size"])
                if sel:
                    ax.plot([r["batch_size"] for r in sel], [r[key]["mean_ms"] for r in sel], marker="o",
                            label=f"{model} ({t} thr)")
                    ax.plot([r["batch_size"] for r in sel], [r[f"tf_{key}"]["mean_ms"] for r in sel], ls=":", alpha=0.5,
                            color=ax.lines[-1].get_color())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("mean latency (ms)")
        ax.set_title(f"{key}: LiteRT (solid) vs TF tf.function (dotted)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def save_json(rows: list[dict], config: BenchmarkConfig, path: str | os.PathLike) -> None:
    """Write ``{"config", "package_version", "results": rows}`` as JSON to
    ``path`` atomically; raises ``OSError`` if it cannot be written."""
    from lcft_tf import __version__
    from lcft_tf._io import atomic_write

    payload = {"config": dataclasses.asdict(config), "package_version": __version__, "results": rows}
    atomic_write(path, json.dumps(payload, indent=2).encode())
