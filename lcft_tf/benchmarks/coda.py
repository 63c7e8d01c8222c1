"""CoDA suite: the cloud's retrieval cost, the fleet with CoDA against Local
alone on the same users, and the sample classifier's size and step times in
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
    ``num_users``, ``fleet_users`` or ``repeats`` below 1, or a negative
    ``k`` or ``workers``.
    """

    k: int = dataclasses.field(default=100, metadata={"help": "samples the cloud retrieves per user."})
    index: str = dataclasses.field(default="flat", metadata={"help": "faiss index: flat (exact), ivf or hnsw."})
    fleet_users: int = dataclasses.field(
        default=300, metadata={"help": "users the two fleets (Local alone; Local + CoDA) are timed on."})
    repeats: int = repeats_field(200, "the classifier's train and infer steps")

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("fleet_users", self.fleet_users)
        positive("repeats", self.repeats)
        if self.k < 0 or self.workers < 0:
            raise ValueError("k and workers must be >= 0")


def _fleets(config: CodaBenchmarkConfig, path: Path, workdir: Path, num_users: int) -> dict[str, Any]:
    """Local alone, then Local + CoDA + CoDA-LCFT, on the first
    ``fleet_users`` users: their wall times (seconds), ratio and the mean
    retrieved samples kept per user."""
    from lcft_tf.fleet.config import FleetConfig
    from lcft_tf.fleet.simulate import simulate

    users = (0, min(config.fleet_users, num_users))
    fleet = FleetConfig(methods=("local",), learning_rate=config.device_lr, workers=config.workers)
    local = simulate(path, workdir / "dataset", workdir / "local", fleet, users=users)
    coda = simulate(path, workdir / "dataset", workdir / "coda_fleet",
                    dataclasses.replace(fleet, methods=("local", "coda", "coda_lcft")), users=users,
                    coda_dir=workdir / "coda")
    return {
        "users": users[1] - users[0],
        "local_seconds": local.stats["seconds"],
        "local_plus_coda_seconds": coda.stats["seconds"],
        "ratio": coda.stats["seconds"] / local.stats["seconds"],
        "mean_kept": coda.stats.get("coda_mean_kept"),
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
