"""The fleet's settings (docs/pipeline.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lcft_tf.checks import learning_rate
from lcft_tf.device.coda_fine_tune import CodaConfig
from lcft_tf.fleet.executors import EXECUTORS
from lcft_tf.methods import DEFAULT_METHODS, DEVICE_METHODS, check_methods

SUBMODEL_MODES = ("auto", "on", "off")
EXECUTOR_CHOICES = ("auto", *EXECUTORS)


@dataclasses.dataclass(frozen=True)
class FleetConfig:
    """How every device fine-tunes and where the fleet runs.

    Raises ``ValueError`` on construction for an unknown method, executor or
    submodel mode, a learning rate that is not finite as a float32, or
    negative counts.
    """

    methods: tuple[str, ...] = dataclasses.field(
        default=DEFAULT_METHODS, metadata={"help": "methods every device runs (lcft_tf.methods.REGISTRY)"})
    learning_rate: float = dataclasses.field(
        default=0.01, metadata={"help": "device fine-tuning learning rate, fed to the train signature (paper 0.01; 0.1 shows more)"})
    epochs: int = dataclasses.field(default=1, metadata={"help": "passes over each user's local samples"})
    users_per_chunk: int = dataclasses.field(
        default=32, metadata={"help": "users per result chunk (the unit of resume and of a task)"})
    workers: int = dataclasses.field(
        default=0, metadata={"help": "fleet and hard-search workers (processes or Ray actors); 0: one per CPU core "
                                     "(under Ray: the cluster's CPUs)"})
    interpreter_threads: int = dataclasses.field(default=1, metadata={"help": "LiteRT interpreter threads per worker"})
    coda: CodaConfig = dataclasses.field(
        default=CodaConfig(), metadata={"help": "CoDA's device options (keep rule, classifier training)"})
    submodel: str = dataclasses.field(
        default="auto", metadata={"help": "per-device submodels (docs/submodels.md): auto uses <name>.sub.tflite "
                                           "when the export wrote one, on requires it, off never"})
    executor: str = dataclasses.field(
        default="auto", metadata={"help": "serial | process | ray (docs/scaling.md); auto: serial for one worker, else the "
                                       "process pool"})
    ray_address: str | None = dataclasses.field(
        default=None, metadata={"help": "Ray cluster to join (auto, ray://host:port); unset: a local Ray for the run"})

    # Where and how the fleet runs; its numbers do not depend on these.
    NOT_IN_KEY = ("workers", "executor", "ray_address")

    def __post_init__(self) -> None:
        if self.executor not in EXECUTOR_CHOICES:
            raise ValueError(f"unknown executor {self.executor!r}; choose from {list(EXECUTOR_CHOICES)}")
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError(f"ray_address {self.ray_address!r} needs executor 'ray', got {self.executor!r}")
        check_methods(self.methods, DEVICE_METHODS)  # baselines are scored without devices
        learning_rate(self.learning_rate)
        if self.epochs < 0 or self.users_per_chunk < 1 or self.workers < 0:
            raise ValueError("epochs >= 0, users_per_chunk >= 1 and workers >= 0 required")
        if self.submodel not in SUBMODEL_MODES:
            raise ValueError(f"submodel must be one of {SUBMODEL_MODES}, got {self.submodel!r}")

    def key(self) -> dict[str, Any]:
        """The fields a fleet's numbers depend on (its stage key)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.NOT_IN_KEY}
