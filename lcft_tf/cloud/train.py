"""Cloud training: a registry model on all users' train samples, through Keras.

Defaults (docs/cloud_base.md, measured on validation data only): Adam at a
constant learning rate chosen from ``{3e-3, 1e-2}``, batch 256, up to 10
epochs. A validation block is carved out of the train period
(:func:`lcft_tf.data.dataset.validation_split`, 20 %); each candidate rate
trains on the rest, its user-weighted validation AUC is measured after every
epoch, and it stops ``patience`` epochs after its best. The best
``(rate, epochs)`` is then refit on the whole train period (the held-out
block is each user's most recent data), or its best epoch's weights are
restored (``refit=False``). Every epoch's loss and validation AUC are
returned in :class:`CloudFit` and recorded by the pipeline.

The paper trains with SGD at learning rate 1.0 decayed x0.1 per epoch for
2 epochs, without validation: ``--cloud_optimizer sgd --cloud_lr 1.0
--cloud_decay_per_epoch 0.1 --cloud_epochs 2 --cloud_validation_fraction 0``
(docs/din_on_movielens.md). ``model.fit`` runs on a ``tf.data`` pipeline
under the ``tf.distribute`` strategy ``CloudConfig.strategy`` names: the
default one, ``mirrored`` (the GPUs of this machine) or ``multi_worker``
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
from lcft_tf.data.dataset import VALIDATION_FRACTION, CTRDataset, user_index, validation_rows, validation_split
from lcft_tf.evaluation.metrics import user_weighted_auc
from lcft_tf.models.base import CTRModel
from lcft_tf.models.losses import CorrectedLogLoss

log = logging.getLogger(__name__)
STRATEGIES = ("default", "mirrored", "multi_worker")

OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}
# Learning rate when none is given and nothing is searched: the paper's 1.0 for SGD, Keras' 1e-3 for Adam.
DEFAULT_LEARNING_RATE = {"sgd": 1.0, "adam": 1e-3}
# Rates tried on validation when none is given, at batch 256 (docs/cloud_base.md: each of the two won on
# validation for some of the five models; 1e-3 won for none).
DEFAULT_LEARNING_RATE_GRID = {"adam": (3e-3, 1e-2), "sgd": (1.0,)}


@dataclasses.dataclass(frozen=True)
class CloudConfig:
    """How the cloud model is trained on every user's train samples (module
    docstring; docs/cloud_base.md for the defaults, docs/scaling.md for the
    strategies).

    Raises ``ValueError`` on construction for an unknown strategy or
    optimizer, a distributed strategy with an optimizer other than ``sgd``,
    a ``batch_size`` that is not an integer >= 1, ``epochs`` not an integer
    >= 0, a learning rate (or one of the grid) that is not finite and >= 0 as
    a float32 (:func:`lcft_tf.checks.learning_rate`), an empty or repeated
    grid, ``decay_per_epoch`` outside [0, 1] (NaN and inf included),
    ``validation_fraction`` outside [0, 1), ``patience`` not an integer >=
    1, a negative seed, or ``model_kwargs`` that is not a dict.
    """

    batch_size: int = dataclasses.field(
        default=256, metadata={"help": "global batch of cloud training (samples per step, over all replicas), an integer >= 1"})
    epochs: int = dataclasses.field(
        default=10, metadata={"help": "most passes over the train samples, an integer >= 0; with validation, training "
                                      "stops --cloud_patience epochs after the best and keeps the best epoch"})
    learning_rate: float | None = dataclasses.field(
        default=None, metadata={"help": "cloud learning rate; unset: the best of --cloud_learning_rate_grid on validation "
                                        "(without validation: adam 1e-3, sgd 1.0, the paper's)"})
    learning_rate_grid: tuple[float, ...] | None = dataclasses.field(
        default=None, metadata={"help": "learning rates tried on validation when --cloud_lr is unset; unset: adam "
                                        "3e-3,1e-2, sgd 1.0"})
    decay_per_epoch: float = dataclasses.field(
        default=1.0, metadata={"help": "factor the learning rate is multiplied by after each epoch, in [0, 1] (1: constant; > 1 would grow it, < 0 turn epochs into gradient ascent)"})
    optimizer: str = dataclasses.field(
        default="adam", metadata={"help": "cloud optimizer: adam, or sgd (the paper's, with learning rate 1.0)"})
    validation_fraction: float = dataclasses.field(
        default=VALIDATION_FRACTION, metadata={"help": "share of the train period held out to choose the learning rate and the epochs, "
                                       "in [0, 1) (0: no validation, train --cloud_epochs epochs, as the paper)"})
    patience: int = dataclasses.field(
        default=2, metadata={"help": "epochs without a better validation AUC after which a candidate rate stops, an "
                                     "integer >= 1"})
    refit: bool = dataclasses.field(
        default=True, metadata={"help": "after choosing on validation, train again on the whole train period for the "
                                        "chosen epochs (else keep the best epoch's weights)"})
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
            # in tests/cloud/test_multi_worker_training.py. SGD matches to 1e-6.
            raise ValueError(f"strategy {self.strategy!r} trains the single-replica weights only with "
                             f"optimizer 'sgd' (got {self.optimizer!r}); pass --cloud_optimizer sgd")
        checks.integer(self.batch_size, "batch_size", 1)
        checks.integer(self.epochs, "epochs", 0)
        if self.learning_rate is not None:
            checks.learning_rate(self.learning_rate)
        if self.learning_rate_grid is not None:
            grid = self.learning_rate_grid
            if isinstance(grid, str) or not isinstance(grid, (tuple, list)) or not grid or len(set(grid)) != len(grid):
                raise ValueError(f"learning_rate_grid must be distinct learning rates (a non-empty list), got {grid!r}")
            for rate in grid:
                checks.learning_rate(rate, "learning_rate_grid")
            object.__setattr__(self, "learning_rate_grid", tuple(float(r) for r in grid))
        # Multiplies the rate each epoch: > 1 grows it without bound, < 0
        # flips its sign every other epoch (gradient ascent), NaN poisons it.
        checks.number(self.decay_per_epoch, "decay_per_epoch", 0.0, 1.0)
        checks.number(self.validation_fraction, "validation_fraction", 0.0, 1.0)
        if self.validation_fraction >= 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1) (1 leaves nothing to train on), got "
                             f"{self.validation_fraction!r}")
        checks.integer(self.patience, "patience", 1)
        checks.flag(self.refit, "refit")
        checks.flag(self.shuffle, "shuffle")
        checks.seed(self.seed)
        if not isinstance(self.model_kwargs, dict) or not all(isinstance(k, str) for k in self.model_kwargs):
            raise ValueError(f"model_kwargs must be a dict of keyword arguments, got {self.model_kwargs!r}")
        if "seed" in self.model_kwargs or "name" in self.model_kwargs:  # given by train_cloud itself
            raise ValueError(f"model_kwargs must not set seed or name (the seed is the config's), got "
                             f"{self.model_kwargs!r}")

    @property
    def candidate_rates(self) -> tuple[float, ...]:
        """The learning rates tried: the given one, else the grid when
        validating, else the optimizer's default. Resolved here, not stored,
        so that ``dataclasses.replace(config, optimizer="adam")`` cannot carry
        SGD's 1.0 over to Adam."""
        if self.learning_rate is not None:
            return (float(self.learning_rate),)
        if self.validation_fraction > 0:
            return self.learning_rate_grid or DEFAULT_LEARNING_RATE_GRID[self.optimizer]
        return (DEFAULT_LEARNING_RATE[self.optimizer],)


@dataclasses.dataclass
class CloudFit:
    """A trained cloud model and how it was trained.

    ``info`` (JSON-ready): ``validation`` (fraction, samples, users; None
    without validation), ``candidates`` (per learning rate: ``loss`` and
    ``validation_auc`` per epoch, ``best_epoch`` 1-based, ``best_auc``),
    ``learning_rate`` and ``epochs`` chosen, ``refit``, and ``loss`` per
    epoch of the returned weights' last training."""

    model: CTRModel
    info: dict[str, Any]


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
    """Build registry model ``name`` and fit it on every user's train
    samples: :func:`fit_cloud`'s model. Raises ``ValueError`` when training
    diverges (a NaN / inf loss or weight)."""
    return fit_cloud(name, dataset, config, strategy, verbose).model


def fit_cloud(
    name: str,
    dataset: CTRDataset,
    config: CloudConfig | None = None,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int = 0,
) -> CloudFit:
    """Build registry model ``name`` and fit it on every user's train samples
    (under ``strategy``, else the one ``config.strategy`` names), choosing the
    learning rate and the epochs on validation data when
    ``config.validation_fraction > 0`` (module docstring). The test split is
    never read. Raises ``ValueError`` when training diverges (a NaN / inf
    loss or weight) or no validation AUC can be measured (no user with both
    a click and a non-click in the held-out block)."""
    config = config or CloudConfig()
    strategy = strategy or make_strategy(config.strategy)
    if not config.validation_fraction or not config.epochs:
        model, losses = _train(name, dataset.spec, dataset.train_rows(), config, config.candidate_rates[0],
                               config.epochs, strategy, verbose)
        return CloudFit(model, {"validation": None, "candidates": [], "learning_rate": config.candidate_rates[0],
                                "epochs": config.epochs, "refit": False, "loss": losses})
    held_out = validation_rows(dataset, validation_split(dataset, config.validation_fraction))
    fit_rows = dataset.rows(dataset.train_mask & ~held_out)  # read once for every candidate rate
    val_features, val_labels = dataset.rows(held_out)
    val_users = user_index(dataset.offsets)[held_out]
    candidates, best = [], None
    for rate in config.candidate_rates:
        curve: list[float] = []
        kept: dict[str, list] = {}  # the best epoch's weights, when they are restored rather than refit

        def validate(model: CTRModel, epoch: int) -> bool:
            scores = model.predict(val_features, batch_size=4096, verbose=0)
            curve.append(round(user_weighted_auc(val_users, val_labels, scores).value, 6))
            if not np.isfinite(curve[-1]):
                raise ValueError(f"cloud training of {name}: no validation AUC (no user has a click and a non-click "
                                 f"in the held-out {config.validation_fraction:.0%} of the train period); lower "
                                 "--cloud_validation_fraction or pass 0")
            best_epoch = int(np.argmax(curve))  # the first of equal values
            if best_epoch == epoch and not config.refit:
                kept["weights"] = model.get_weights()
            return epoch - best_epoch >= config.patience

        model, losses = _train(name, dataset.spec, fit_rows, config, rate, config.epochs, strategy, verbose, validate)
        best_epoch = int(np.argmax(curve))
        candidates.append({"learning_rate": rate, "loss": losses, "validation_auc": curve,
                           "best_epoch": best_epoch + 1, "best_auc": curve[best_epoch]})
        log.info("cloud %s at lr %g: validation AUC per epoch %s", name, rate, curve)
        if best is None or curve[best_epoch] > best[0]["best_auc"]:
            best = (candidates[-1], model, kept.get("weights"))
    chosen, model, weights = best
    info = {"validation": {"fraction": config.validation_fraction, "samples": int(held_out.sum()),
                           "users": int(len(np.unique(val_users)))},
            "candidates": candidates, "learning_rate": chosen["learning_rate"], "epochs": chosen["best_epoch"],
            "refit": config.refit, "loss": chosen["loss"][:chosen["best_epoch"]]}
    if config.refit:
        del fit_rows  # the refit reads every train sample
        model, info["loss"] = _train(name, dataset.spec, dataset.train_rows(), config, chosen["learning_rate"],
                                     chosen["best_epoch"], strategy, verbose)
    else:
        model.set_weights(weights)
    return CloudFit(model, info)


def _train(name: str, spec, rows: tuple[dict[str, np.ndarray], np.ndarray], config: CloudConfig, rate: float,
           epochs: int, strategy: tf.distribute.Strategy, verbose: int, after_epoch=None) -> tuple[CTRModel, list[float]]:
    """A fresh model of ``spec`` (seeded by ``config.seed``) trained on
    ``rows`` (features, labels) for up to ``epochs`` at ``rate`` (decayed per
    epoch); after each epoch ``after_epoch(model, epoch)`` may return True to
    stop. Returns the model and the loss per epoch."""
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = models.build(name, spec, seed=config.seed, **config.model_kwargs)
        compile_cloud_model(model, rate, config.optimizer)
    features, labels = rows
    losses: list[float] = []
    if not epochs or not len(labels):
        return model, losses
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, _: rate * config.decay_per_epoch**epoch)
    data = as_tf_dataset(features, labels, config.batch_size, config.shuffle, config.seed)
    # One fit call per epoch when something runs between epochs; the
    # schedule reads the epoch index, so the rates match one long fit.
    spans = [(e, e + 1) for e in range(epochs)] if after_epoch else [(0, epochs)]
    for first, last in spans:
        fit = lambda: model.fit(data, initial_epoch=first, epochs=last, callbacks=[schedule], verbose=verbose,
                                shuffle=False)
        history = _fit_replicated(model, strategy, features, labels, fit) if strategy.num_replicas_in_sync > 1 \
            else fit()
        losses += [round(float(v), 6) for v in history.history["loss"]]
        _check_finite(model, losses, rate)
        if after_epoch and after_epoch(model, first):
            break
    log.info("cloud %s: loss per epoch %s", name, losses)
    return model, losses


def _check_finite(model: CTRModel, losses: list[float], rate: float) -> None:
    """Refuse a cloud model whose training diverged (a NaN / inf loss or
    weight), before any stage commits it: every device would start from it."""
    bad = [v.path for v in model.weights if not np.all(np.isfinite(np.asarray(v.numpy(), np.float64)))]
    if bad or not all(np.isfinite(losses)):
        raise ValueError(f"cloud training of {model.name} diverged (loss per epoch {[float(x) for x in losses]}"
                         f"{', non-finite weights in ' + bad[0] if bad else ''}) at learning rate {rate}; "
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
