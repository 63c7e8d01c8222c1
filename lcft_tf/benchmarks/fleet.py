"""Fleet suite: the device fleet at MovieLens-20M scale, against the naive
baseline and against the same signatures as tuned TF graphs.

Also holds the cloud side both fleet-scale suites start from
(:class:`CloudSideConfig`, :func:`prepare_cloud_side`): a synthetic dataset,
a cloud model trained on it and its exported ``.tflite``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lcft_tf.benchmarks.timing import CallTimer, timed
from lcft_tf.checks import positive
from lcft_tf.fleet.profile import format_profile

EXECUTORS = ("serial", "process", "ray")


@dataclasses.dataclass(frozen=True)
class CloudSideConfig:
    """The synthetic dataset, the cloud model and the devices' learning rate
    a fleet-scale suite starts from (defaults: the MovieLens-20M size).

    Raises ``ValueError`` on construction for an unknown model or
    ``num_users`` below 1.
    """

    model: str = dataclasses.field(
        default="din", metadata={"help": "registry model trained in the cloud and fine-tuned on the devices."})
    num_users: int = dataclasses.field(
        default=5700, metadata={"help": "synthetic users (5700: the MovieLens-20M size)."})
    samples_per_user: float = dataclasses.field(default=570.0, metadata={"help": "mean synthetic samples per user."})
    num_items: int = dataclasses.field(default=20000, metadata={"help": "synthetic items (the item vocabulary)."})
    cloud_epochs: int = dataclasses.field(default=1, metadata={"help": "cloud training epochs."})
    cloud_batch_size: int = dataclasses.field(default=1024, metadata={"help": "cloud training batch size (samples)."})
    device_lr: float = dataclasses.field(default=0.01, metadata={"help": "on-device fine-tuning learning rate."})
    workers: int = dataclasses.field(
        default=0, metadata={"help": "fleet worker processes or actors (0: one per CPU core)."})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the synthetic data and the cloud training."})

    def __post_init__(self) -> None:
        from lcft_tf.models import check_names  # TensorFlow: imported on use
        check_names((self.model,))
        positive("num_users", self.num_users)


@dataclasses.dataclass(frozen=True)
class CloudSide:
    """What :func:`prepare_cloud_side` made: the dataset (also saved to
    ``<workdir>/dataset``), the trained Keras model, the ``.tflite`` path,
    its ``ExportConfig``, and the generation and cloud training wall times
    in seconds."""

    data: Any
    model: Any
    path: Path
    export: Any
    generation_seconds: float
    cloud_seconds: float


def prepare_cloud_side(config: CloudSideConfig, workdir: Path) -> CloudSide:
    """Generate the synthetic dataset, save it to ``workdir/dataset``, train
    the cloud model and export it to ``workdir/<model>.tflite`` (default
    static batch, ``device_lr``). Raises what generation, training or the
    export raise."""
    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.cloud.train import CloudConfig, train_cloud
    from lcft_tf.data.synthetic import SyntheticConfig, generate

    data, generation_seconds = timed(generate, SyntheticConfig(
        num_users=config.num_users, mean_samples_per_user=config.samples_per_user, num_items=config.num_items,
        seed=config.seed))
    data.save(workdir / "dataset")
    model, cloud_seconds = timed(train_cloud, config.model, data, CloudConfig(
        epochs=config.cloud_epochs, batch_size=config.cloud_batch_size, validation_fraction=0.0, seed=config.seed))
    path = workdir / f"{config.model}.tflite"
    export = ExportConfig(learning_rate=config.device_lr, global_ctr=data.global_ctr)
    export_tflite(model, path, export)
    return CloudSide(data, model, path, export, generation_seconds, cloud_seconds)


@dataclasses.dataclass(frozen=True)
class FleetBenchmarkConfig(CloudSideConfig):
    """The fleet suite: the full fleet, then the naive baseline and one
    worker profiled on the first ``naive_users`` users.

    Raises ``ValueError`` on construction for an unknown model or executor,
    a size below 1, or a negative count.
    """

    methods: tuple[str, ...] = dataclasses.field(
        default=("cloud", "local", "soft1", "soft2"), metadata={"help": "methods the full fleet runs."})
    naive_users: int = dataclasses.field(
        default=200, metadata={"help": "users of the naive-baseline comparison and the one-worker profile."})
    naive_methods: tuple[str, ...] = dataclasses.field(
        default=("local", "soft1"), metadata={"help": "methods compared with the naive Keras fine-tune."})
    executor: str = dataclasses.field(
        default="process", metadata={"help": "the fleet's executor: serial, process or ray (docs/scaling.md)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; choose from {list(EXECUTORS)}")
        positive("samples_per_user", self.samples_per_user)
        positive("num_items", self.num_items)
        positive("cloud_batch_size", self.cloud_batch_size)
        if self.workers < 0 or self.naive_users < 0 or self.cloud_epochs < 0:
            raise ValueError("workers, naive_users and cloud_epochs must be >= 0")


def naive_fine_tune(model, cloud_weights, view, method: str, global_ctr: float, lr: float, batch_size: int) -> np.ndarray:
    """The naive way (what the fleet replaces): rebuild the Keras model from
    the cloud weights and ``model.fit`` one epoch of the user's train samples
    (``view``, a :class:`~lcft_tf.data.dataset.UserView`), labels corrected
    by ``method`` (``local``: none). Returns the user's test click
    probabilities, float32 ``[num_test]``. Raises ``ValueError`` for an
    unknown correction."""
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


def _profile_worker(path: Path, dataset_dir: Path, config, users: int, chunk_dir: Path,
                    runners: dict[str, Callable] | None = None) -> dict[str, Any]:
    """One fleet worker in this process (the fleet's public
    :class:`~lcft_tf.fleet.worker.DeviceWorker`) over users ``[0, users)``:
    its wall time, and the time spent inside the signature calls (LiteRT's
    runner: copy in, invoke, copy out), in seconds. ``runners`` replaces the
    interpreter's signatures (the TF baseline)."""
    from lcft_tf.fleet.worker import DeviceWorker, WorkerSetup

    chunk_dir.mkdir(parents=True, exist_ok=True)
    worker = DeviceWorker(WorkerSetup(str(path), str(dataset_dir), config, str(chunk_dir), in_child=False))
    timer = CallTimer()
    worker.device.wrap_signatures(lambda key, runner: timer.wrap(runners[key] if runners else runner))

    def run_chunks():
        for a in range(0, users, config.users_per_chunk):
            worker.run_chunk((a, min(a + config.users_per_chunk, users)))

    _, wall = timed(run_chunks)
    return {"seconds": wall, "signature_seconds": timer.seconds, "signature_share": timer.seconds / wall if wall else None}


def _tf_runners(model, export) -> dict[str, Callable]:
    """The exported module's six signatures (train, infer, infer_one, save,
    restore, correct) as TF concrete functions called like LiteRT's runners
    (one traced graph each, weights re-assigned by ``restore``, nothing
    rebuilt), returning NumPy arrays."""
    from lcft_tf.cloud.export import TrainableModule

    functions = TrainableModule(model, export).concrete_functions()
    return {k: (lambda fn: lambda **inputs: {n: t.numpy() for n, t in fn(**inputs).items()})(fn)
            for k, fn in functions.items()}


def _chunk_predictions(chunk_dir: Path) -> dict[str, np.ndarray]:
    """The ``pred.*`` arrays of the chunk files in ``chunk_dir``, concatenated
    in file order."""
    from safetensors.numpy import load_file

    parts = [load_file(str(p)) for p in sorted(chunk_dir.glob("*.safetensors"))]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k.startswith("pred.")}


def _run_fleets(config: FleetBenchmarkConfig, fleet_config, path: Path, workdir: Path, n: int):
    """The full fleet and the naive comparison's small one (users ``[0, n)``,
    the naive methods) on one executor; Ray's start-up (if it starts here)
    is timed apart from the fleets. Returns ``(timings, fleet, small)``."""
    from lcft_tf.fleet.executors import make_executor
    from lcft_tf.fleet.simulate import simulate

    executor = make_executor(fleet_config.executor, fleet_config.workers, fleet_config.ray_address)
    try:
        _, start_seconds = timed(getattr(executor, "start", lambda: None))
        fleet = simulate(path, workdir / "dataset", workdir / "fleet", fleet_config, executor=executor)
        # Naive vs fleet on the same users, measured one after the other in this run.
        small = simulate(path, workdir / "dataset", workdir / "fleet_small",
                         dataclasses.replace(fleet_config, methods=config.naive_methods), users=(0, n),
                         executor=executor)
    finally:
        executor.close()
    return {"executor": config.executor, "executor_start_seconds": start_seconds}, fleet, small


def _user_auc(results, predictions: np.ndarray) -> float:
    """User-weighted AUC of ``predictions`` against a fleet result's test labels."""
    from lcft_tf.evaluation.metrics import user_weighted_auc

    index = np.repeat(np.arange(len(results.users)), results.num_test)
    return user_weighted_auc(index, results.labels, predictions).value


def _naive_comparison(config: FleetBenchmarkConfig, side: CloudSide, weights, small, n: int) -> dict[str, Any]:
    """:func:`naive_fine_tune` for every user with test samples in ``[0, n)``
    and each naive method, against the small fleet: seconds, speedup, AUCs
    and the largest prediction difference."""
    naive: dict[str, list] = {m: [] for m in config.naive_methods}

    def fine_tune_all():
        for u in range(n):
            view = side.data.user(u)
            if len(view.test_labels) == 0:
                continue
            for m in config.naive_methods:
                naive[m].append(naive_fine_tune(side.model, weights, view, m, side.data.global_ctr, config.device_lr, 32))

    _, naive_seconds = timed(fine_tune_all)
    comparison = {}
    for m in config.naive_methods:
        naive_pred = np.concatenate(naive[m])
        comparison[m] = {
            "fleet_auc": _user_auc(small, small.predictions[m]),
            "naive_auc": _user_auc(small, naive_pred),
            "max_abs_prediction_diff": float(np.abs(naive_pred - small.predictions[m]).max()),
        }
    return {
        "users": n,
        "methods": list(config.naive_methods),
        "naive_seconds": naive_seconds,
        "fleet_seconds": small.stats["seconds"],
        "speedup": naive_seconds / small.stats["seconds"],
        "per_method": comparison,
    }


def _one_worker(config: FleetBenchmarkConfig, fleet_config, side: CloudSide, weights, workdir: Path, n: int,
                naive_seconds: float) -> dict[str, Any]:
    """One worker, same users and methods: LiteRT vs the same signatures as
    tuned TF graphs, and the signatures' share of the worker's time. The
    full model on both sides (the TF baseline replaces its signatures; a
    submodel would run outside them)."""
    one = dataclasses.replace(fleet_config, methods=config.naive_methods, workers=1, executor="serial", submodel="off")
    dataset = workdir / "dataset"
    litert = _profile_worker(side.path, dataset, one, n, workdir / "profile_litert")
    tuned = _profile_worker(side.path, dataset, one, n, workdir / "profile_tf", _tf_runners(side.model, side.export))
    side.model.set_weights(weights)  # the TF restore assigned users' weights to the model's variables
    a, b = _chunk_predictions(workdir / "profile_litert"), _chunk_predictions(workdir / "profile_tf")
    return {
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


def run_fleet_benchmark(config: FleetBenchmarkConfig, workdir: Path) -> dict[str, Any]:
    """The fleet suite, files under ``workdir``. Returns a JSON-ready dict:
    ``config``, ``generation_seconds``, ``dataset``,
    ``generation_samples_per_second``, ``cloud_seconds``, ``executor``,
    ``executor_start_seconds``, ``fleet`` (the fleet's stats, with the
    workers' ``profile``), ``fleet_profile`` (that profile in one line), ``fleet_auc``
    (per method), ``naive`` and ``one_worker`` (times in seconds). Raises
    what the fleet raises (``ValueError`` for a bad method, or for the
    ``ray`` executor when Ray is not installed)."""
    from lcft_tf.fleet.config import FleetConfig

    out: dict[str, Any] = {"config": dataclasses.asdict(config)}
    side = prepare_cloud_side(config, workdir)
    out["generation_seconds"] = side.generation_seconds
    out["dataset"] = side.data.summary()
    out["generation_samples_per_second"] = side.data.num_samples / side.generation_seconds
    out["cloud_seconds"] = side.cloud_seconds
    fleet_config = FleetConfig(methods=config.methods, learning_rate=config.device_lr, workers=config.workers,
                               executor=config.executor)
    n = min(config.naive_users, side.data.num_users)
    timings, fleet, small = _run_fleets(config, fleet_config, side.path, workdir, n)
    out.update(timings)
    out["fleet"] = fleet.stats  # its "profile": where the workers' time went (lcft_tf.fleet.profile)
    out["fleet_profile"] = format_profile(fleet.stats["profile"])
    out["fleet_auc"] = {m: _user_auc(fleet, p) for m, p in fleet.predictions.items()}
    weights = side.model.get_weights()
    out["naive"] = _naive_comparison(config, side, weights, small, n)
    out["one_worker"] = _one_worker(config, fleet_config, side, weights, workdir, n, out["naive"]["naive_seconds"])
    return out
