"""Cloud training: a registry model on all users' train samples, through Keras.

Defaults: Adam (learning rate 1e-3 unless given, decayed x0.1 per epoch),
batch 32, 2 epochs. The paper trains with SGD at learning rate 1.0 decayed
x0.1 per epoch (``CloudConfig(optimizer="sgd")``, ``--cloud_optimizer
sgd``); on MovieLens that leaves the cloud model under-trained, so device
fine-tuning cannot change DIN's ranking and LCFT has nothing to correct
(docs/din_on_movielens.md). ``model.fit`` runs on a ``tf.data`` pipeline under
the ``tf.distribute`` strategy ``CloudConfig.strategy`` names: the default
one, ``mirrored`` (the GPUs of this machine) or ``multi_worker``
(``MultiWorkerMirroredStrategy`` over the machines ``TF_CONFIG`` lists;
docs/scaling.md). ``batch_size`` is always the global batch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lcft_tf import checks, models
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.models.base import CTRModel
from lcft_tf.models.losses import CorrectedLogLoss

log = logging.getLogger(__name__)
STRATEGIES = ("default", "mirrored", "multi_worker")

OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}
# Learning rate when none is given: the paper's 1.0 for SGD, Keras' 1e-3 for Adam.
DEFAULT_LEARNING_RATE = {"sgd": 1.0, "adam": 1e-3}


@dataclasses.dataclass(frozen=True)
class CloudConfig:
    """How the cloud model is trained on every user's train samples (module
    docstring; docs/scaling.md for the strategies).

    Raises ``ValueError`` on construction for an unknown strategy or
    optimizer, a distributed strategy with an optimizer other than ``sgd``,
    a ``batch_size`` that is not an integer >= 1, ``epochs`` not an integer
    >= 0, a learning rate that is not finite and >= 0 as a float32
    (:func:`lcft_tf.checks.learning_rate`), ``decay_per_epoch`` outside
    [0, 1] (NaN and inf included), a negative seed, or ``model_kwargs``
    that is not a dict.
    """

    batch_size: int = dataclasses.field(
        default=32, metadata={"help": "global batch of cloud training (samples per step, over all replicas), an integer >= 1"})
    epochs: int = dataclasses.field(default=2, metadata={"help": "passes over all users' train samples, an integer >= 0"})
    learning_rate: float | None = dataclasses.field(
        default=None, metadata={"help": "cloud learning rate; unset: adam 1e-3, sgd 1.0 (the paper's); decayed by "
                                        "--cloud_decay_per_epoch each epoch"})
    decay_per_epoch: float = dataclasses.field(
        default=0.1, metadata={"help": "factor the learning rate is multiplied by after each epoch, in [0, 1] (1: constant; > 1 would grow it, < 0 turn epochs into gradient ascent)"})
    optimizer: str = dataclasses.field(
        default="adam", metadata={"help": "cloud optimizer: adam, or sgd (the paper's, with learning rate 1.0)"})
    shuffle: bool = dataclasses.field(default=True, metadata={"help": "shuffle the train samples every epoch"})
    seed: int = dataclasses.field(
        default=0, metadata={"help": "seed of the weight initialisation and the shuffle (set per run from --seeds)"})
    model_kwargs: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata={"help": "keyword arguments of the registry model's constructor"})
    strategy: str = dataclasses.field(
        default="default", metadata={"help": "tf.distribute strategy: default, mirrored (this machine's GPUs) or "
                                             "multi_worker (the machines TF_CONFIG lists; needs sgd)"})

    def __post_init__(self) -> None:
        checks.choice(self.strategy, "strategy", STRATEGIES)
        checks.choice(self.optimizer, "optimizer", sorted(OPTIMIZERS))
        if self.strategy != "default" and self.optimizer != "sgd":
            # Keras's Adam treats sparse embedding gradients per occurrence on
            # one replica and densely after an all-reduce: weights 0.29 apart
            # in tests/test_multi_worker.py. SGD matches to 1e-6.
            raise ValueError(f"strategy {self.strategy!r} trains the single-replica weights only with "
                             f"optimizer 'sgd' (got {self.optimizer!r}); pass --cloud_optimizer sgd")
        checks.integer(self.batch_size, "batch_size", 1)
        checks.integer(self.epochs, "epochs", 0)
        if self.learning_rate is not None:
            checks.learning_rate(self.learning_rate)
        # Multiplies the rate each epoch: > 1 grows it without bound, < 0
        # flips its sign every other epoch (gradient ascent), NaN poisons it.
        checks.number(self.decay_per_epoch, "decay_per_epoch", 0.0, 1.0)
        checks.flag(self.shuffle, "shuffle")
        checks.seed(self.seed)
        if not isinstance(self.model_kwargs, dict) or not all(isinstance(k, str) for k in self.model_kwargs):
            raise ValueError(f"model_kwargs must be a dict of keyword arguments, got {self.model_kwargs!r}")
        if "seed" in self.model_kwargs or "name" in self.model_kwargs:  # given by train_cloud itself
            raise ValueError(f"model_kwargs must not set seed or name (the seed is the config's), got "
                             f"{self.model_kwargs!r}")

    @property
    def rate(self) -> float:
        """The learning rate used. Resolved here, not stored, so that
        ``dataclasses.replace(config, optimizer="adam")`` cannot carry SGD's
        1.0 over to Adam."""
        return DEFAULT_LEARNING_RATE[self.optimizer] if self.learning_rate is None else self.learning_rate


def as_tf_dataset(features: dict[str, np.ndarray], labels: np.ndarray, batch_size: int, shuffle: bool, seed: int):
    """A batched ``tf.data.Dataset`` of ``(features, float32 labels)``,
    reshuffled every epoch with ``seed`` (buffer: up to 100,000 rows) when
    ``shuffle``."""
    data = tf.data.Dataset.from_tensor_slices((features, labels.astype(np.float32)))
    if shuffle:
        data = data.shuffle(min(len(labels), 100_000), seed=seed, reshuffle_each_iteration=True)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def compile_cloud_model(model: CTRModel, learning_rate: float, optimizer: str = "sgd") -> None:
    """Compile with the shared loss and ``optimizer`` (SGD unless told)."""
    model.compile(optimizer=OPTIMIZERS[optimizer](learning_rate), loss=CorrectedLogLoss(), jit_compile=False)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy ``name`` (see :data:`STRATEGIES`)."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multi_worker' needs TF_CONFIG (docs/scaling.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def train_cloud(
    name: str,
    dataset: CTRDataset,
    config: CloudConfig | None = None,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int = 0,
) -> CTRModel:
    """Build registry model ``name`` and fit it on every user's train samples
    (under ``strategy``, else the one ``config.strategy`` names). Raises
    ``ValueError`` when training diverges (a NaN / inf loss or weight)."""
    config = config or CloudConfig()
    strategy = strategy or make_strategy(config.strategy)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = models.build(name, dataset.spec, seed=config.seed, **config.model_kwargs)
        compile_cloud_model(model, config.rate, config.optimizer)
    features, labels = dataset.train_rows()
    if config.epochs and len(labels):
        schedule = keras.callbacks.LearningRateScheduler(
            lambda epoch, _: config.rate * config.decay_per_epoch**epoch
        )
        data = as_tf_dataset(features, labels, config.batch_size, config.shuffle, config.seed)
        fit = lambda: model.fit(data, epochs=config.epochs, callbacks=[schedule], verbose=verbose, shuffle=False)
        if strategy.num_replicas_in_sync > 1:
            history = _fit_replicated(model, strategy, features, labels, fit)
        else:
            history = fit()
        log.info("cloud %s: loss per epoch %s", name, [round(v, 4) for v in history.history["loss"]])
        _check_finite(model, history.history["loss"], config)
    return model


def _check_finite(model: CTRModel, losses: list[float], config: CloudConfig) -> None:
    """Refuse a cloud model whose training diverged (a NaN / inf loss or
    weight), before any stage commits it: every device would start from it."""
    bad = [v.path for v in model.weights if not np.all(np.isfinite(np.asarray(v.numpy(), np.float64)))]
    if bad or not all(np.isfinite(losses)):
        raise ValueError(f"cloud training of {model.name} diverged (loss per epoch {[float(x) for x in losses]}"
                         f"{', non-finite weights in ' + bad[0] if bad else ''}) at learning rate {config.rate}; "
                         "lower --cloud_lr")


def _fit_replicated(model: CTRModel, strategy: tf.distribute.Strategy, features, labels, fit):
    """``fit()`` under a strategy with several replicas, around two gaps of
    Keras 3 under MultiWorkerMirroredStrategy: (1) it builds the compiled loss
    from a batch it first reduces across replicas, which fails for a dict of
    features, so the loss is built here on two plain rows and Keras's own
    build is skipped (the model's strategy is unset for the call; ``fit``
    still runs every step under ``strategy``, whose scope is the current one);
    (2) it averages each step's logs over replicas along axis 0, which fails
    on a scalar loss, so the step returns them with shape [1]."""
    few = {k: v[:2] for k, v in features.items()}
    step = model.train_step
    model.train_step = lambda data: {k: tf.reshape(v, [1]) for k, v in step(data).items()}
    with strategy.scope():
        model.compute_loss(few, labels[:2].astype(np.float32), model(few))
        model._distribute_strategy = None
        try:
            return fit()
        finally:
            model._distribute_strategy = strategy
            del model.train_step


def save_cloud_model(model: CTRModel, directory: str | os.PathLike) -> Path:
    """Save the Keras model as ``<dir>/<name>.keras`` (loads with plain
    ``keras.models.load_model`` once ``lcft_tf.models`` is imported)."""
    path = Path(directory) / f"{model.name}.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".keras.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path
