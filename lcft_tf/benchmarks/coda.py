"""CoDA suite: the cloud's retrieval cost, the fleet with CoDA against Local
alone on the same users (timed interleaved), and the sample classifier's size and step times in
LiteRT (docs/coda.md)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from lcft_tf.benchmarks.fleet import CloudSideConfig, prepare_cloud_side
from lcft_tf.benchmarks.timing import interleaved, latency_stats, repeats_field
from lcft_tf.checks import positive


@dataclasses.dataclass(frozen=True)
class CodaBenchmarkConfig(CloudSideConfig):
    """The CoDA suite: retrieval settings, the users the two fleets run on,
    and the classifier's timed calls.

    Raises ``ValueError`` on construction for an unknown model,
    ``num_users``, ``fleet_users``, ``repeats`` or ``fleet_rounds`` below 1, or a negative
    ``k`` or ``workers``.
    """

    k: int = dataclasses.field(default=100, metadata={"help": "samples the cloud retrieves per user."})
    index: str = dataclasses.field(default="flat", metadata={"help": "faiss index: flat (exact), ivf or hnsw."})
    fleet_users: int = dataclasses.field(
        default=300, metadata={"help": "users the two fleets (Local alone; Local + CoDA) are timed on."})
    repeats: int = repeats_field(200, "the classifier's train and infer steps")
    fleet_rounds: int = dataclasses.field(
        default=3, metadata={"help": "interleaved timed rounds of the three fleets (after one warm-up round)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("fleet_users", self.fleet_users)
        positive("repeats", self.repeats)
        positive("fleet_rounds", self.fleet_rounds)
        if self.k < 0 or self.workers < 0:
            raise ValueError("k and workers must be >= 0")


def _fleets(config: CodaBenchmarkConfig, path: Path, workdir: Path, num_users: int) -> dict[str, Any]:
    """Three fleets on the first ``fleet_users`` users, timed interleaved
    (Local alone, CoDA + CoDA-LCFT, Local + CoDA + CoDA-LCFT; ``fleet_rounds``
    rounds, one warm-up): their median wall seconds, the ratios to Local
    alone, the mean kept weight mass per user and the device train steps."""
    import shutil

    from lcft_tf.fleet.config import FleetConfig
    from lcft_tf.fleet.simulate import simulate

    users = (0, min(config.fleet_users, num_users))
    fleet = FleetConfig(methods=("local",), learning_rate=config.device_lr, workers=config.workers)
    kinds = {"local": ("local",), "coda_pair": ("coda", "coda_lcft"), "local_plus_coda": ("local", "coda", "coda_lcft")}
    last: dict[str, Any] = {}

    def run(name: str):
        out = workdir / f"fleet_{name}"
        shutil.rmtree(out, ignore_errors=True)  # a fresh fleet every round: nothing resumed
        last[name] = simulate(path, workdir / "dataset", out, dataclasses.replace(fleet, methods=kinds[name]),
                              users=users, coda_dir=workdir / "coda" if name != "local" else None)

    times = interleaved({k: (lambda k=k: run(k)) for k in kinds}, warmup=1, repeats=config.fleet_rounds)
    median = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "users": users[1] - users[0],
        "rounds": config.fleet_rounds,
        "seconds": times,
        "median_seconds": median,
        # The measure: the fleet running coda + coda_lcft against Local alone.
        "ratio": median["coda_pair"] / median["local"],
        "ratio_local_plus_coda": median["local_plus_coda"] / median["local"],
        "mean_kept": last["coda_pair"].stats.get("coda_mean_kept"),
        "device_train_steps": {k: r.stats["device_train_steps_by_method"] for k, r in last.items()},
    }


def _classifier(config: CodaBenchmarkConfig, coda_dir: Path) -> dict[str, Any]:
    """The sample classifier's file size (bytes), static batch, and train /
    infer :func:`~lcft_tf.benchmarks.timing.latency_stats` (ms) on one
    random float32 batch of embeddings."""
    from lcft_tf.artifacts.coda_files import CLASSIFIER
    from lcft_tf.device.model import OnDeviceModel

    classifier = OnDeviceModel(coda_dir / CLASSIFIER)
    dim = classifier.spec.dense[0].dim
    x = {classifier.spec.names[0]: np.random.default_rng(config.seed).random((classifier.batch_size, dim), np.float32)}
    y = np.zeros(classifier.batch_size, np.float32)
    times = interleaved({"train": lambda: classifier.train(x, y), "infer": lambda: classifier.infer(x)},
                        warmup=10, repeats=config.repeats)
    return {
        "tflite_bytes": (coda_dir / CLASSIFIER).stat().st_size,
        "batch_size": classifier.batch_size,
        "train": latency_stats(times["train"]),
        "infer": latency_stats(times["infer"]),
    }


def run_coda_benchmark(config: CodaBenchmarkConfig, workdir: Path) -> dict[str, Any]:
    """Retrieval for every user (seconds, peak memory), the fleet with CoDA
    vs Local alone on the same users, and the sample classifier's file size
    and step times in LiteRT, all measured in this run (files under
    ``workdir``). Returns a JSON-ready dict with ``config``, ``dataset``,
    ``cloud_side`` (what :func:`lcft_tf.cloud.coda_prepare.prepare_coda`
    reports), ``fleet`` and ``classifier``. Raises ``ValueError`` for an
    unknown faiss index."""
    from lcft_tf.cloud.coda_prepare import prepare_coda
    from lcft_tf.cloud.retrieval import RetrievalConfig

    out: dict[str, Any] = {"config": dataclasses.asdict(config)}
    side = prepare_cloud_side(config, workdir)
    out["dataset"] = side.data.summary()
    out["cloud_side"] = prepare_coda(side.model, side.data, workdir / "coda",
                                     RetrievalConfig(k=config.k, index=config.index), seed=config.seed)
    out["fleet"] = _fleets(config, side.path, workdir, side.data.num_users)
    out["classifier"] = _classifier(config, workdir / "coda")
    return out
