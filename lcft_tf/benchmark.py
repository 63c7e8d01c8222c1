"""Interpreter benchmark: LiteRT signatures vs the same step in TF, side by side.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lcft_tf.checks import check_models, positive

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    models: tuple[str, ...] = ("lr", "wide_deep", "deepfm", "pnn", "din", "edgerec")
    batch_sizes: tuple[int, ...] = (32,)
    threads: tuple[int, ...] = (1,)
    warmup: int = 10
    repeats: int = 100
    wrapper_batches: int = 10  # batches per wrapper call when measuring its overhead
    measure_memory: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        check_models(self.models)
        positive("batch_sizes", *self.batch_sizes)
        positive("threads", *self.threads)
        positive("repeats", self.repeats)
        positive("wrapper_batches", self.wrapper_batches)
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """Mean / p50 / p99 in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    return {"mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def _interleaved(fns: dict[str, Callable[[], Any]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Time several callables in alternation so drift in machine load hits all alike."""
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
    """Memory of a fresh process that loads only LiteRT and runs train/infer:
    its peak RSS, and the RSS the interpreter added (model, arena, variables)."""
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


def benchmark_model(name: str, batch_size: int, threads: Sequence[int], config: BenchmarkConfig, workdir: Path) -> list[dict]:
    import tensorflow as tf

    from lcft_tf import models
    from lcft_tf.cloud.export import ExportConfig, TrainableModule, export_tflite
    from lcft_tf.data.synthetic import SyntheticConfig, generate
    from lcft_tf.device.model import OnDeviceModel

    data = generate(SyntheticConfig(num_users=50, seed=config.seed))
    features, labels = data.train_rows()
    n = batch_size * config.wrapper_batches
    reps = -(-n // len(labels))
    features = {k: np.concatenate([v] * reps)[:n] for k, v in features.items()}
    labels = np.concatenate([labels] * reps)[:n].astype(np.float32)
    batch = {k: v[:batch_size] for k, v in features.items()}

    model = models.build(name, data.spec, seed=config.seed)
    export = ExportConfig(batch_size=batch_size, learning_rate=0.01, global_ctr=data.global_ctr)
    path = workdir / f"{name}_b{batch_size}.tflite"
    start = time.perf_counter()
    metadata = export_tflite(model, path, export)
    conversion = time.perf_counter() - start

    module = TrainableModule(model, export)
    tf_train = tf.function(module.train)
    tf_infer = tf.function(module.infer)
    tf_batch = {k: tf.constant(v) for k, v in batch.items()}
    tf_label, tf_weight, tf_lr = tf.constant(labels[:batch_size]), tf.ones(batch_size), tf.constant(0.01)

    rows = []
    for t in threads:
        device = OnDeviceModel(path, num_threads=t)
        train_inputs = {**batch, "label": labels[:batch_size], "sample_weight": np.ones(batch_size, np.float32),
                        "learning_rate": np.float32(0.01)}
        state = device.save()
        bare_inputs = {**features, "label": labels, "sample_weight": np.ones(n, np.float32)}

        def bare_train():  # the hand-written loop the wrapper replaces
            for i in range(0, n, batch_size):
                device.run_signature(
                    "train", {**{k: v[i : i + batch_size] for k, v in bare_inputs.items()}, "learning_rate": np.float32(0.01)}
                )

        timings = _interleaved(
            {
                "train": lambda: device.run_signature("train", train_inputs),
                "tf_train": lambda: tf_train(**tf_batch, label=tf_label, sample_weight=tf_weight, learning_rate=tf_lr),
                "infer": lambda: device.run_signature("infer", batch),
                "tf_infer": lambda: tf_infer(**tf_batch),
                "save": device.save,
                "restore": lambda: device.restore(state),
                "bare_train_x": bare_train,
                "wrapper_train_x": lambda: device.train(features, labels),
            },
            config.warmup,
            config.repeats,
        )
        stats = {k: latency_stats(v) for k, v in timings.items()}
        per_step = config.wrapper_batches
        row = {
            "model": name,
            "batch_size": batch_size,
            "threads": t,
            "tflite_kib": round(path.stat().st_size / 1024, 1),
            "conversion_s": round(conversion, 2),
            "num_state_tensors": len(metadata["checkpoint"]["tensors"]),
            **{k: stats[k] for k in ("train", "tf_train", "infer", "tf_infer", "save", "restore")},
            "train_ratio_litert_over_tf": stats["train"]["mean_ms"] / stats["tf_train"]["mean_ms"],
            "infer_ratio_litert_over_tf": stats["infer"]["mean_ms"] / stats["tf_infer"]["mean_ms"],
            "wrapper_step_ms": stats["wrapper_train_x"]["mean_ms"] / per_step,
            "bare_step_ms": stats["bare_train_x"]["mean_ms"] / per_step,
            "wrapper_overhead": stats["wrapper_train_x"]["mean_ms"] / stats["bare_train_x"]["mean_ms"] - 1.0,
        }
        if config.measure_memory:
            row.update(interpreter_memory(path, t, metadata))
        rows.append(row)
        log.info("%s b=%d t=%d: train %.3f ms (TF %.3f ms)", name, batch_size, t,
                 stats["train"]["mean_ms"], stats["tf_train"]["mean_ms"])
    return rows


def run_benchmark(config: BenchmarkConfig) -> list[dict]:
    from tqdm.auto import tqdm

    rows: list[dict] = []
    jobs = [(m, b) for m in config.models for b in config.batch_sizes]
    with tempfile.TemporaryDirectory() as tmp:
        for name, batch_size in tqdm(jobs, desc="benchmark", unit="model", disable=None):
            rows += benchmark_model(name, batch_size, config.threads, config, Path(tmp))
    return rows


def format_table(rows: list[dict]) -> str:
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
    """Train / infer latency vs batch size, one line per model and thread count."""
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
    from lcft_tf import __version__
    from lcft_tf._io import atomic_write

    payload = {"config": dataclasses.asdict(config), "package_version": __version__, "results": rows}
    atomic_write(path, json.dumps(payload, indent=2).encode())


# -- fleet scale and the naive baseline ------------------------------------------
@dataclasses.dataclass(frozen=True)
class FleetBenchmarkConfig:
    model: str = "din"
    num_users: int = 5700
    samples_per_user: float = 570.0
    num_items: int = 20000
    methods: tuple[str, ...] = ("cloud", "local", "soft1", "soft2")
    naive_users: int = 200
    naive_methods: tuple[str, ...] = ("local", "soft1")
    cloud_epochs: int = 1
    cloud_batch_size: int = 1024
    device_lr: float = 0.01
    workers: int = 0
    executor: str = "process"  # the fleet's executor: serial, process or ray (docs/scaling.md)
    seed: int = 0

    def __post_init__(self) -> None:
        check_models((self.model,))
        if self.executor not in ("serial", "process", "ray"):
            raise ValueError(f"unknown executor {self.executor!r}; choose from ['serial', 'process', 'ray']")
        positive("num_users", self.num_users)
        positive("samples_per_user", self.samples_per_user)
        positive("num_items", self.num_items)
        positive("cloud_batch_size", self.cloud_batch_size)
        if self.workers < 0 or self.naive_users < 0 or self.cloud_epochs < 0:
            raise ValueError("workers, naive_users and cloud_epochs must be >= 0")


def naive_fine_tune(model, cloud_weights, view, method: str, global_ctr: float, lr: float, batch_size: int):
    """The naive way: rebuild the Keras model from the cloud weights and
    ``model.fit`` the user's samples (what the fleet replaces)."""
    from lcft_tf import models
    from lcft_tf.cloud.train import compile_cloud_model
    from lcft_tf.correction import correct_labels

    fresh = models.build(model.model_name, model.spec, **{k: v for k, v in model.get_config().items()
                                                            if k not in ("spec", "name")})
    fresh.set_weights(cloud_weights)
    compile_cloud_model(fresh, lr)
    labels = correct_labels(view.train_labels, {"local": "none"}.get(method, method), global_ctr)
    fresh.fit(view.train_features, labels, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return fresh.predict_proba(view.test_features)


def _timed(runners: dict[str, Callable], spent: list[float]) -> dict[str, Callable]:
    """The signature runners, each adding its call's wall time to ``spent[0]``."""

    def wrap(fn):
        def timed(**inputs):
            start = time.perf_counter()
            out = fn(**inputs)
            spent[0] += time.perf_counter() - start
            return out

        return timed

    return {k: wrap(fn) for k, fn in runners.items()}


def _profile_worker(path: Path, dataset_dir: Path, config, users: int, chunk_dir: Path, runners=None) -> dict[str, Any]:
    """One fleet worker in this process (the fleet's public
    :class:`~lcft_tf.fleet.worker.DeviceWorker`) over users ``[0, users)``:
    its wall time, and the time spent inside the signature calls (LiteRT's
    runner: copy in, invoke, copy out). ``runners`` replaces the
    interpreter's signatures (the TF baseline)."""
    from lcft_tf.fleet.worker import DeviceWorker, WorkerSetup

    chunk_dir.mkdir(parents=True, exist_ok=True)
    worker = DeviceWorker(WorkerSetup(str(path), str(dataset_dir), config, str(chunk_dir), in_child=False))
    device = worker.device
    spent = [0.0]
    device._runners = _timed(runners or device._runners, spent)
    start = time.perf_counter()
    for a in range(0, users, config.users_per_chunk):
        worker.run_chunk((a, min(a + config.users_per_chunk, users)))
    wall = time.perf_counter() - start
    return {"seconds": wall, "signature_seconds": spent[0], "signature_share": spent[0] / wall if wall else None}


def _tf_runners(model, export) -> dict[str, Callable]:
    """The exported module's five signatures as TF concrete functions (one
    traced graph each, weights re-assigned by ``restore``, nothing rebuilt)."""
    from lcft_tf.cloud.export import TrainableModule

    functions = TrainableModule(model, export).concrete_functions()
    return {k: (lambda fn: lambda **inputs: {n: t.numpy() for n, t in fn(**inputs).items()})(fn)
            for k, fn in functions.items()}


def _chunk_predictions(chunk_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    parts = [load_file(str(p)) for p in sorted(chunk_dir.glob("*.safetensors"))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k.startswith("pred.")}


def _timed_fleets(config: FleetBenchmarkConfig, fleet_config, executor, path: Path, workdir: Path, n: int) -> dict[str, Any]:
    """The full fleet and the naive comparison's small one on ``executor``;
    Ray's start-up (if it starts here) is timed apart from the fleets."""
    from lcft_tf.fleet.simulate import simulate

    start = time.perf_counter()
    if hasattr(executor, "start"):
        executor.start()
    out: dict[str, Any] = {"executor": config.executor, "executor_start_seconds": time.perf_counter() - start}
    out["_fleet"] = simulate(path, workdir / "dataset", workdir / "fleet", fleet_config, executor=executor)
    # Naive vs fleet on the same users, measured one after the other in this run.
    out["_small"] = simulate(path, workdir / "dataset", workdir / "fleet_small",
                             dataclasses.replace(fleet_config, methods=config.naive_methods), users=(0, n),
                             executor=executor)
    return out


def run_fleet_benchmark(config: FleetBenchmarkConfig, workdir: Path) -> dict[str, Any]:
    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.cloud.train import CloudConfig, train_cloud
    from lcft_tf.data.synthetic import SyntheticConfig, generate
    from lcft_tf.fleet.config import FleetConfig
    from lcft_tf.fleet.executors import make_executor
    from lcft_tf.evaluation.metrics import user_weighted_auc

    out: dict[str, Any] = {"config": dataclasses.asdict(config)}
    start = time.perf_counter()
    data = generate(SyntheticConfig(num_users=config.num_users, mean_samples_per_user=config.samples_per_user,
                                    num_items=config.num_items, seed=config.seed))
    out["generation_seconds"] = time.perf_counter() - start
    out["dataset"] = data.summary()
    out["generation_samples_per_second"] = data.num_samples / out["generation_seconds"]
    data.save(workdir / "dataset")

    start = time.perf_counter()
    model = train_cloud(config.model, data, CloudConfig(epochs=config.cloud_epochs, batch_size=config.cloud_batch_size,
                                                        seed=config.seed))
    out["cloud_seconds"] = time.perf_counter() - start
    path = workdir / f"{config.model}.tflite"
    export = ExportConfig(learning_rate=config.device_lr, global_ctr=data.global_ctr)
    export_tflite(model, path, export)

    fleet_config = FleetConfig(methods=config.methods, learning_rate=config.device_lr, workers=config.workers,
                               executor=config.executor)
    n = min(config.naive_users, data.num_users)
    executor = make_executor(fleet_config.executor, fleet_config.workers, fleet_config.ray_address)  # one for both fleets below
    try:
        out.update(_timed_fleets(config, fleet_config, executor, path, workdir, n))
    finally:
        executor.close()
    fleet, small = out.pop("_fleet"), out.pop("_small")
    out["fleet"] = fleet.stats
    index = np.repeat(np.arange(len(fleet.users)), fleet.num_test)
    out["fleet_auc"] = {m: user_weighted_auc(index, fleet.labels, p).value for m, p in fleet.predictions.items()}

    weights = model.get_weights()
    start = time.perf_counter()
    naive = {m: [] for m in config.naive_methods}
    for u in range(n):
        view = data.user(u)
        if len(view.test_labels) == 0:
            continue
        for m in config.naive_methods:
            naive[m].append(naive_fine_tune(model, weights, view, m, data.global_ctr, config.device_lr, 32))
    naive_seconds = time.perf_counter() - start
    index = np.repeat(np.arange(len(small.users)), small.num_test)
    comparison = {}
    for m in config.naive_methods:
        naive_pred = np.concatenate(naive[m])
        comparison[m] = {
            "fleet_auc": user_weighted_auc(index, small.labels, small.predictions[m]).value,
            "naive_auc": user_weighted_auc(index, small.labels, naive_pred).value,
            "max_abs_prediction_diff": float(np.abs(naive_pred - small.predictions[m]).max()),
        }
    out["naive"] = {
        "users": n,
        "methods": list(config.naive_methods),
        "naive_seconds": naive_seconds,
        "fleet_seconds": small.stats["seconds"],
        "speedup": naive_seconds / small.stats["seconds"],
        "per_method": comparison,
    }

    # One worker, same users and methods: LiteRT vs the same signatures as
    # tuned TF graphs, and LiteRT's share of the worker's time.
    # The full model on both sides (the TF baseline replaces its signatures;
    # a submodel would run outside them).
    one = dataclasses.replace(fleet_config, methods=config.naive_methods, workers=1, executor="serial", submodel="off")
    litert = _profile_worker(path, workdir / "dataset", one, n, workdir / "profile_litert")
    tuned = _profile_worker(path, workdir / "dataset", one, n, workdir / "profile_tf", _tf_runners(model, export))
    model.set_weights(weights)  # the TF restore assigned users' weights to the model's variables
    a, b = _chunk_predictions(workdir / "profile_litert"), _chunk_predictions(workdir / "profile_tf")
    out["one_worker"] = {
        "users": n,
        "methods": list(config.naive_methods),
        "litert_seconds": litert["seconds"],
        "tuned_tf_seconds": tuned["seconds"],
        "litert_speedup_over_tuned_tf": tuned["seconds"] / litert["seconds"],
        "naive_seconds_per_worker": naive_seconds,
        "litert_signature_share": litert["signature_share"],
        "tuned_tf_signature_share": tuned["signature_share"],
        "max_abs_prediction_diff_tf_vs_litert": max(float(np.abs(a[k] - b[k]).max()) for k in a),
    }
    return out


# -- CoDA: retrieval cost, fleet cost, the classifier in LiteRT ------------------
@dataclasses.dataclass(frozen=True)
class CodaBenchmarkConfig:
    model: str = "din"
    num_users: int = 5700  # the MovieLens-20M size
    samples_per_user: float = 570.0
    num_items: int = 20000
    k: int = 100
    index: str = "flat"
    fleet_users: int = 300  # users the two fleets (Local alone; Local + CoDA) are timed on
    cloud_epochs: int = 1
    cloud_batch_size: int = 1024
    device_lr: float = 0.01
    workers: int = 0
    repeats: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        check_models((self.model,))
        positive("num_users", self.num_users)
        positive("fleet_users", self.fleet_users)
        positive("repeats", self.repeats)
        if self.k < 0 or self.workers < 0:
            raise ValueError("k and workers must be >= 0")


def run_coda_benchmark(config: CodaBenchmarkConfig, workdir: Path) -> dict[str, Any]:
    """Retrieval for every user (seconds, peak memory), the fleet with CoDA
    vs Local alone on the same users, and the sample classifier's file size
    and step times in LiteRT, all measured in this run."""
    from lcft_tf.cloud.coda_prepare import CLASSIFIER, prepare_coda
    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.cloud.retrieval import RetrievalConfig
    from lcft_tf.cloud.train import CloudConfig, train_cloud
    from lcft_tf.data.synthetic import SyntheticConfig, generate
    from lcft_tf.fleet.config import FleetConfig
    from lcft_tf.fleet.simulate import simulate
    from lcft_tf.device.model import OnDeviceModel

    out: dict[str, Any] = {"config": dataclasses.asdict(config)}
    data = generate(SyntheticConfig(num_users=config.num_users, mean_samples_per_user=config.samples_per_user,
                                    num_items=config.num_items, seed=config.seed))
    out["dataset"] = data.summary()
    data.save(workdir / "dataset")
    model = train_cloud(config.model, data, CloudConfig(epochs=config.cloud_epochs, batch_size=config.cloud_batch_size,
                                                        seed=config.seed))
    path = workdir / f"{config.model}.tflite"
    export_tflite(model, path, ExportConfig(learning_rate=config.device_lr, global_ctr=data.global_ctr))
    out["cloud_side"] = prepare_coda(model, data, workdir / "coda",
                                     RetrievalConfig(k=config.k, index=config.index), seed=config.seed)

    users = (0, min(config.fleet_users, data.num_users))
    fleet = FleetConfig(methods=("local",), learning_rate=config.device_lr, workers=config.workers)
    local = simulate(path, workdir / "dataset", workdir / "local", fleet, users=users)
    coda = simulate(path, workdir / "dataset", workdir / "coda_fleet",
                    dataclasses.replace(fleet, methods=("local", "coda", "coda_lcft")), users=users,
                    coda_dir=workdir / "coda")
    out["fleet"] = {
        "users": users[1] - users[0],
        "local_seconds": local.stats["seconds"],
        "local_plus_coda_seconds": coda.stats["seconds"],
        "ratio": coda.stats["seconds"] / local.stats["seconds"],
        "mean_kept": coda.stats.get("coda_mean_kept"),
    }

    classifier = OnDeviceModel(workdir / "coda" / CLASSIFIER)
    dim = classifier.spec.dense[0].dim
    x = {classifier.spec.names[0]: np.random.default_rng(config.seed).random((classifier.batch_size, dim), np.float32)}
    y = np.zeros(classifier.batch_size, np.float32)
    times = _interleaved({"train": lambda: classifier.train(x, y), "infer": lambda: classifier.infer(x)},
                         warmup=10, repeats=config.repeats)
    out["classifier"] = {
        "tflite_bytes": (workdir / "coda" / CLASSIFIER).stat().st_size,
        "batch_size": classifier.batch_size,
        "train": latency_stats(times["train"]),
        "infer": latency_stats(times["infer"]),
    }
    return out


# -- vocabulary suite: full model vs per-device submodel (docs/submodels.md) -----------
@dataclasses.dataclass(frozen=True)
class VocabBenchmarkConfig:
    models: tuple[str, ...] = ("din", "wide_deep")
    vocab_sizes: tuple[int, ...] = (300, 20_000, 200_000, 1_000_000)
    capacity: int = 4096  # submodel rows per table
    batch_size: int = 32
    runtimes: tuple[str, ...] = ("interpreter", "compiled")
    user_items: int = 200  # distinct items in the benchmarked user's pack
    warmup: int = 3
    repeats: int = 30
    fleet_users: int = 256  # users of the fleet comparison (0: skip it); worker start-up is in its time
    fleet_vocab_sizes: tuple[int, ...] = (300, 200_000)  # the full model at 1M items takes minutes per 100 users
    fleet_samples_per_user: float = 40.0
    measure_memory: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        from lcft_tf.device.model import RUNTIMES

        check_models(self.models)
        positive("vocab_sizes", *self.vocab_sizes)
        positive("capacity", self.capacity)
        positive("batch_size", self.batch_size)
        positive("repeats", self.repeats)
        positive("user_items", self.user_items)
        if self.user_items + 1 > self.capacity:
            raise ValueError(f"user_items ({self.user_items}) + the padding row must fit capacity {self.capacity}")
        if not self.runtimes or any(r not in RUNTIMES for r in self.runtimes):
            raise ValueError(f"runtimes must be some of {RUNTIMES}, got {list(self.runtimes)}")
        if self.warmup < 0 or self.fleet_users < 0:
            raise ValueError("warmup and fleet_users must be >= 0")
        positive("fleet_vocab_sizes", *self.fleet_vocab_sizes)


def _vocab_user(spec, n: int, items: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` samples of one user whose ids come from ``items``."""
    out = {}
    for f in spec.sparse:
        out[f.name] = (rng.choice(items, n) if f.table == "item_id" else rng.integers(1, f.vocab_size, n)).astype(np.int32)
    for f in spec.sequences:
        out[f.name] = rng.choice(items, (n, f.length)).astype(np.int32)
    for f in spec.dense:
        out[f.name] = rng.random((n, f.dim)).astype(np.float32)
    return out


def benchmark_vocab(name: str, vocab: int, config: VocabBenchmarkConfig, workdir: Path) -> list[dict]:
    """Rows for one model at one item vocabulary: the full model and the
    submodel, per runtime (step, infer at batch B and 1, per-user restore)."""
    from lcft_tf import models
    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.device.submodel import SubmodelDevice
    from lcft_tf.artifacts.pack import make_pack
    from lcft_tf.artifacts.tflite import submodel_path
    from lcft_tf.data.synthetic import SyntheticConfig, synthetic_spec
    from lcft_tf.device.model import OnDeviceModel

    spec = synthetic_spec(SyntheticConfig(num_items=vocab, seed=config.seed))
    model = models.build(name, spec, seed=config.seed)
    path = workdir / f"{name}_{vocab}.tflite"
    export = ExportConfig(batch_size=config.batch_size, submodel_capacity=config.capacity)
    start = time.perf_counter()
    metadata = export_tflite(model, path, export)
    conversion = time.perf_counter() - start
    rng = np.random.default_rng(config.seed)
    items = rng.choice(np.arange(1, spec["item_id"].vocab_size), min(config.user_items, vocab), replace=False)
    batch = _vocab_user(spec, config.batch_size, items, rng)
    labels = (rng.random(config.batch_size) < 0.5).astype(np.float32)
    train_extra = {"label": labels, "sample_weight": np.ones(config.batch_size, np.float32),
                   "learning_rate": np.float32(0.01)}
    rows = []
    for runtime in config.runtimes:
        full = OnDeviceModel(path, runtime=runtime)
        state = full.save()
        variants = {"full": (full, batch, lambda: full.restore(state), None)}
        sub_file = submodel_path(path)
        if metadata["submodel"]:
            sub = SubmodelDevice(path, state, runtime=runtime)
            pack = sub.pack(batch)
            # a user's restore = cutting the pack from the global state + restoring it
            restore = lambda sub=sub: sub.device.restore(make_pack(sub.layout, sub.global_state, batch).state)
            variants["submodel"] = (sub.device, pack.remap(batch), restore, len(pack.to_bytes()))
        for variant, (device, feed, restore, pack_bytes) in variants.items():
            one = {k: v[:1] for k, v in feed.items()}
            fns = {
                "train": lambda d=device, f=feed: d.run_signature("train", {**f, **train_extra}),
                "infer": lambda d=device, f=feed: d.run_signature("infer", f),
                "infer_one": lambda d=device, f=one: d.run_signature("infer_one", f),
                "restore": restore,
            }
            times = _interleaved(fns, config.warmup, config.repeats)
            file = sub_file if variant == "submodel" else path
            row = {"model": name, "vocab": vocab, "variant": variant, "runtime": runtime,
                   "file_mib": file.stat().st_size / 2**20, "conversion_s": conversion,
                   "pack_kib": None if pack_bytes is None else pack_bytes / 1024,
                   **{f"{k}_ms": latency_stats(v)["p50_ms"] for k, v in times.items()}}
            if config.measure_memory and runtime == "interpreter":
                meta = json.loads(file.with_suffix(".json").read_text())
                row["rss_mb"] = interpreter_memory(file, 1, meta)["interpreter_rss_mb"]
            rows.append(row)
    return rows


def vocab_fleet(name: str, vocab: int, config: VocabBenchmarkConfig, workdir: Path) -> dict[str, Any]:
    """Fleet users/s at one vocabulary with the full model and with submodels
    (an untrained model: the timing does not depend on the weights)."""
    from lcft_tf import models
    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.data.synthetic import SyntheticConfig, generate
    from lcft_tf.fleet.config import FleetConfig

    from lcft_tf.fleet.executors import SerialExecutor

    from lcft_tf.fleet.simulate import simulate

    data = generate(SyntheticConfig(num_users=config.fleet_users, num_items=vocab, seed=config.seed,
                                    mean_samples_per_user=config.fleet_samples_per_user))
    data.save(workdir / f"data_{vocab}")
    path = workdir / f"fleet_{name}_{vocab}.tflite"
    export_tflite(models.build(name, data.spec, seed=config.seed), path,
                  ExportConfig(batch_size=config.batch_size, global_ctr=data.global_ctr, submodel_capacity=config.capacity))
    out = {"model": name, "vocab": vocab}
    for mode in ("off", "auto"):
        fleet = simulate(path, workdir / f"data_{vocab}", workdir / f"fleet_{name}_{vocab}_{mode}",
                         FleetConfig(methods=("cloud", "local"), workers=1, submodel=mode), executor=SerialExecutor())
        out[f"users_per_s_{'full' if mode == 'off' else 'submodel'}"] = fleet.stats["users_per_second"]
        out[f"submodel_stats_{mode}"] = fleet.stats["submodel"]
    return out


def run_vocab_benchmark(config: VocabBenchmarkConfig, workdir: Path) -> dict[str, Any]:
    rows, fleets = [], []
    for name in config.models:
        for vocab in config.vocab_sizes:
            log.info("vocab benchmark: %s at %d items", name, vocab)
            rows += benchmark_vocab(name, vocab, config, workdir)
        for vocab in config.fleet_vocab_sizes if config.fleet_users else ():
            fleets.append(vocab_fleet(name, vocab, config, workdir))
    return {"config": dataclasses.asdict(config), "rows": rows, "fleet": fleets, "goals": vocab_goals(rows, fleets)}


def vocab_goals(rows: list[dict], fleets: list[dict]) -> dict[str, Any]:
    """The issue's targets as measured ratios (no pass/fail: timings are
    machine-dependent): submodel step at the largest vocabulary over the full
    step at the smallest, the slowest per-user submodel restore, and fleet
    users/s of submodels over the full model and over the smallest vocabulary."""
    out: dict[str, Any] = {}
    pick = lambda **kw: [r for r in rows if all(r[k] == v for k, v in kw.items())]
    for model in sorted({r["model"] for r in rows}):
        for runtime in sorted({r["runtime"] for r in rows}):
            vocabs = sorted({r["vocab"] for r in pick(model=model, runtime=runtime)})
            small = pick(model=model, runtime=runtime, vocab=vocabs[0], variant="full")
            big = pick(model=model, runtime=runtime, vocab=vocabs[-1], variant="submodel")
            subs = pick(model=model, runtime=runtime, variant="submodel")
            out[f"{model}/{runtime}"] = {
                f"submodel_step_at_{vocabs[-1]}_over_full_step_at_{vocabs[0]}":
                    big[0]["train_ms"] / small[0]["train_ms"] if big and small else None,
                "max_submodel_restore_ms": max((r["restore_ms"] for r in subs), default=None),
            }
        runs = sorted((f for f in fleets if f["model"] == model), key=lambda f: f["vocab"])
        if len(runs) > 1:
            base = runs[0]["users_per_s_full"]
            out[f"{model}/fleet"] = {
                f"at_{f['vocab']}": {"submodel_over_full": f["users_per_s_submodel"] / f["users_per_s_full"],
                                     f"submodel_over_full_at_{runs[0]['vocab']}": f["users_per_s_submodel"] / base}
                for f in runs[1:]
            }
    return out


def format_vocab_table(result: dict[str, Any]) -> str:
    cols = ("model", "vocab", "variant", "runtime", "file_mib", "pack_kib", "train_ms", "infer_ms", "infer_one_ms",
            "restore_ms", "rss_mb")
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
    lines = [" | ".join(cols)] + [" | ".join(fmt(r.get(c)) for c in cols) for r in result["rows"]]
    for f in result["fleet"]:
        lines.append(f"fleet {f['model']} {f['vocab']}: users/s full {fmt(f['users_per_s_full'])}, "
                     f"submodel {fmt(f['users_per_s_submodel'])}")
    lines.append("goals: " + json.dumps(result["goals"], indent=1))
    return "\n".join(lines)
