"""The fleet's settings (docs/pipeline.md)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lcft_tf import checks
from lcft_tf.device.coda_fine_tune import CodaConfig
from lcft_tf.fleet.executors import EXECUTORS
from lcft_tf.methods import DEFAULT_METHODS, DEVICE_METHODS, check_methods

SUBMODEL_MODES = ("auto", "on", "off")
EXECUTOR_CHOICES = ("auto", *EXECUTORS)


@dataclasses.dataclass(frozen=True)
class FleetConfig:
    """How every device fine-tunes and where the fleet runs.

    Raises ``ValueError`` on construction for an unknown method, executor or
    submodel mode, a learning rate that is not finite and >= 0 as a float32,
    or a count that is not an integer in its range (each field's help).
    Learning rate 0 and 0 epochs are allowed here (tests use them to pin a
    device model to the cloud's); an experiment with a fine-tuning method
    refuses them (:class:`lcft_tf.pipeline.config.ExperimentConfig`).
    """

    methods: tuple[str, ...] = dataclasses.field(
        default=DEFAULT_METHODS, metadata={"help": "methods every device runs (lcft_tf.methods.REGISTRY)"})
    learning_rate: float = dataclasses.field(
        default=0.01, metadata={"help": "device fine-tuning learning rate, fed to the train signature (paper 0.01; 0.1 shows more); finite and > 0 as a float32 in an experiment"})
    epochs: int = dataclasses.field(default=1, metadata={"help": "passes over each user's local samples, an integer (>= 1 in an experiment)"})
    users_per_chunk: int = dataclasses.field(
        default=32, metadata={"help": "users per result chunk (the unit of resume and of a task), an integer >= 1"})
    workers: int = dataclasses.field(
        default=0, metadata={"help": "fleet and hard-search workers (processes or Ray actors); 0: one per CPU core "
                                     "(under Ray: the cluster's CPUs)"})
    interpreter_threads: int = dataclasses.field(default=1, metadata={"help": "LiteRT interpreter threads per worker, an integer >= 1"})
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
        checks.choice(self.executor, "executor", EXECUTOR_CHOICES)
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError(f"ray_address {self.ray_address!r} needs executor 'ray', got {self.executor!r}")
        check_methods(self.methods, DEVICE_METHODS)  # baselines are scored without devices
        checks.learning_rate(self.learning_rate)
        checks.integer(self.epochs, "epochs", 0)
        checks.integer(self.users_per_chunk, "users_per_chunk", 1)
        checks.integer(self.workers, "workers", 0)
        checks.integer(self.interpreter_threads, "interpreter_threads", 1)
        if not isinstance(self.coda, CodaConfig):
            raise ValueError(f"coda must be a CodaConfig, got {self.coda!r}")
        checks.choice(self.submodel, "submodel", SUBMODEL_MODES)

    def key(self) -> dict[str, Any]:
        """The fields a fleet's numbers depend on (its stage key)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.NOT_IN_KEY}
