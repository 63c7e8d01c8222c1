"""CoDA on one device: fine matching of the retrieved samples, then
fine-tuning the CTR model on local + kept samples (docs/coda.md).

Per user, given the samples the cloud retrieved for it
(:func:`lcft_tf.cloud.retrieval.retrieve`):

1. the sample classifier (its own ``.tflite``, restored to its initial
   state) trains on local samples (label 1) against retrieved samples
   (label 0), classes balanced by ``sample_weight``, in a seeded order;
2. it scores the retrieved samples; the keep rule picks the local-like
   ones (threshold on the probability, the top fraction) or weights every
   one by its importance ``p / (1 - p)`` (``weight``);
3. the CTR model restores the cloud weights and fine-tunes on the kept
   samples (retrieval rank order) followed by the local samples (time
   order), with raw labels (``coda``) or corrected labels over that whole
   set (``coda_lcft``: soft2 with ``w`` = its click rate), then predicts the
   user's test samples. ``retrieval_only`` keeps every retrieved sample.

With no retrieved sample, every method is exactly Local (or Soft2).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lcft_tf import checks, methods
from lcft_tf.artifacts.coda_files import USER_FEATURE
from lcft_tf.correction import CORRECTIONS
from lcft_tf.device.fine_tune import fine_tune_and_predict
from lcft_tf.device.model import OnDeviceModel

KEEP_RULES = ("threshold", "fraction", "weight")
_P_CLIP = 1e-6  # p / (1 - p) stays finite and positive for float32 probabilities of exactly 0 or 1


@dataclasses.dataclass(frozen=True)
class CodaConfig:
    """CoDA's device side: the sample classifier's training and the keep
    rule over the retrieved samples (module docstring; docs/coda.md).

    Raises ``ValueError`` on construction for an unknown keep rule or
    correction, ``keep_value`` outside [0, 1] (NaN included) or 0 with the
    ``fraction`` rule (nothing kept), ``classifier_epochs`` not an integer
    >= 1, a ``classifier_lr`` that is not finite and >= 0 as a float32, or a
    switch that is not a bool.
    """

    use_classifier: bool = dataclasses.field(
        default=True, metadata={"help": "CoDA: filter with the sample classifier; false keeps every retrieved sample "
                                        "(retrieval_only)"})
    # Defaults chosen on validation users' held-out train samples (docs/coda.md "Keep rule").
    keep: str = dataclasses.field(
        default="fraction", metadata={"help": "CoDA: keep retrieved samples by threshold (probability >= "
                                               "keep_value), fraction (the top keep_value share) or weight (every "
                                               "one, weighted min(1, c p/(1-p)) with total weight keep_value x K)"})
    keep_value: float = dataclasses.field(
        default=0.1, metadata={"help": "CoDA: the probability threshold, the kept fraction or the weight mass share, "
                                       "in [0, 1] (> 0 for fraction and weight)"})
    classifier_epochs: int = dataclasses.field(
        default=1, metadata={"help": "CoDA: passes of the sample classifier over local + retrieved samples, an integer >= 1"})
    classifier_lr: float | None = dataclasses.field(
        default=None, metadata={"help": "CoDA: the sample classifier's learning rate; unset: the classifier file's "
                                        "default"})
    correction: str | None = dataclasses.field(
        default=None, metadata={"help": "label correction of local + kept samples (e.g. soft2); unset: raw labels"})
    adopt_user_id: bool = dataclasses.field(
        default=True, metadata={"help": "CoDA: kept samples carry the local user's id (docs/coda.md)"})

    def __post_init__(self) -> None:
        checks.flag(self.use_classifier, "use_classifier")
        checks.choice(self.keep, "keep", KEEP_RULES)
        checks.number(self.keep_value, "keep_value", 0.0, 1.0)
        if self.keep in ("fraction", "weight") and self.keep_value == 0:
            raise ValueError(f"keep_value 0 with keep {self.keep!r} keeps no retrieved sample (every CoDA method would "
                             "equal Local), got 0")
        checks.integer(self.classifier_epochs, "classifier_epochs", 1)
        if self.classifier_lr is not None:
            checks.learning_rate(self.classifier_lr, "classifier_lr")
        if self.correction is not None:
            checks.choice(self.correction, "correction", CORRECTIONS)
        checks.flag(self.adopt_user_id, "adopt_user_id")


def method_config(method: str, base: CodaConfig | None = None, **overrides: Any) -> CodaConfig:
    """The :class:`CodaConfig` of CoDA method ``method`` (a registry row of
    kind ``coda``, :mod:`lcft_tf.methods`): ``base``'s options (default
    :class:`CodaConfig`) with the method's own fine matching and correction,
    then ``overrides`` (e.g. ``keep_value=0.7``). Raises ``ValueError`` for a
    method that is not a CoDA method."""
    row = methods.REGISTRY.get(method)
    if row is None or row.kind != "coda":
        raise ValueError(f"unknown CoDA method {method!r}; choose from {list(methods.of_kind(methods.METHODS, 'coda'))}")
    own = {"use_classifier": row.coda_matching == "classifier",
           "correction": None if row.correction == "none" else row.correction}
    return dataclasses.replace(base or CodaConfig(), **own, **overrides)


@dataclasses.dataclass
class CodaResult:
    """One user's CoDA outcome: float32 ``predictions`` ``[num_test]`` (click
    probabilities), ``kept``, the weight mass of the retrieved samples used
    (their number under a hard keep rule), ``trained``, the number of
    retrieved rows the device trained on, and the classifier's
    local-likeness ``probabilities`` ``[K]`` of the retrieved samples (None
    when no classifier ran)."""

    predictions: np.ndarray  # [num_test] click probabilities
    kept: float  # weight mass of the retrieved samples used (= their number for threshold / fraction)
    probabilities: np.ndarray | None  # [K] classifier's local-likeness of each retrieved sample
    trained: int = 0  # retrieved rows in the fine-tuning set (all K with weight > 0 under "weight")


def select_retrieved(
    classifier: OnDeviceModel,
    classifier_state: dict[str, np.ndarray],
    local_embeddings: np.ndarray,
    retrieved_embeddings: np.ndarray,
    config: CodaConfig,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fine matching: ``(keep [K], probability [K])`` of the retrieved
    samples. ``keep`` is a bool mask under ``threshold`` / ``fraction``, and
    float32 weights in [0, 1] under ``weight`` (:func:`importance_weights`).
    Raises ``ValueError`` for embeddings that are not finite ``[N, D]`` of
    the classifier's D, or no local sample with K > 0."""
    (feature,) = classifier.spec.names  # the classifier's one dense input (no TensorFlow import here)
    local = _matrix("local_embeddings", local_embeddings)
    retrieved = _matrix("retrieved_embeddings", retrieved_embeddings)
    dim = classifier.spec[feature].dim
    if local.shape[1] != dim or retrieved.shape[1] != dim:
        raise ValueError(f"embeddings must be {dim}-d for this classifier, got {local.shape[1]} and {retrieved.shape[1]}")
    n_local, k = len(local), len(retrieved)
    if k == 0:
        return np.zeros(0, bool), np.zeros(0, np.float32)
    if n_local == 0:
        raise ValueError("fine matching needs at least one local sample")
    x = np.concatenate([local, retrieved])
    y = np.r_[np.ones(n_local, np.float32), np.zeros(k, np.float32)]
    # Balanced classes: each class carries half the loss (mean weight 1).
    w = np.r_[np.full(n_local, (n_local + k) / (2 * n_local)), np.full(k, (n_local + k) / (2 * k))].astype(np.float32)
    classifier.restore(classifier_state, probe=False)  # its initial state, vetted when the worker started
    rng = np.random.default_rng(seed)
    for _ in range(config.classifier_epochs):
        order = rng.permutation(len(x))
        classifier.train({feature: x[order]}, y[order], w[order], learning_rate=config.classifier_lr)
    probability = classifier.infer({feature: retrieved})
    if config.keep == "threshold":
        keep = probability >= config.keep_value
    elif config.keep == "weight":
        keep = importance_weights(probability, config.keep_value)
    else:
        top = np.argsort(-probability, kind="stable")[: int(np.ceil(config.keep_value * k))]
        keep = np.zeros(k, bool)
        keep[top] = True
    return keep, probability


def importance_weights(probability: np.ndarray, mass_share: float) -> np.ndarray:
    """float32 ``[K]`` weights ``min(1, c r)`` of the retrieved samples, with
    ``r = p / (1 - p)`` the classifier's density ratio local : retrieved
    (its classes are balanced) and ``c`` chosen so the weights sum to
    ``mass_share * K``: a soft top fraction. No retrieved sample counts more
    than a local one (weight 1). ``probability``: float ``[K]`` in [0, 1];
    ``mass_share`` in (0, 1]. Raises ``ValueError`` otherwise."""
    checks.number(mass_share, "mass_share", 0.0, 1.0, low_open=True)
    p = np.clip(np.asarray(probability, np.float64).reshape(-1), _P_CLIP, 1 - _P_CLIP)
    if not np.all(np.isfinite(p)):
        raise ValueError("probability contains NaN or inf")
    k = len(p)
    if k == 0:
        return np.zeros(0, np.float32)
    ratio = p / (1 - p)
    target = mass_share * k
    # Water-filling: with the t largest ratios saturated at 1, c = (target - t) / (sum of the rest);
    # the valid t is the one where c keeps exactly those t at or above 1.
    r = np.sort(ratio)[::-1]
    tail = np.r_[np.cumsum(r[::-1])[::-1], 0.0]  # tail[t] = sum(r[t:])
    for t in range(k + 1):
        if t == k:
            return np.ones(k, np.float32)
        c = (target - t) / tail[t]
        if c * r[t] < 1 and (t == 0 or c * r[t - 1] >= 1):
            return np.minimum(1.0, c * ratio).astype(np.float32)
    raise AssertionError("unreachable: the water level always exists")


@dataclasses.dataclass
class FineMatching:
    """What fine matching needs for one user: the sample classifier and its
    initial state, the embeddings ``[n_local, D]`` of the user's train
    samples and ``[K, D]`` of the retrieved ones (float32), the seed of the
    classifier's sample order, and ``matched``, the ``(keep, probability)``
    of :func:`select_retrieved` when already computed for this user and keep
    rule (``coda`` and ``coda_lcft`` share it)."""

    classifier: OnDeviceModel
    classifier_state: dict[str, np.ndarray]
    local_embeddings: np.ndarray
    retrieved_embeddings: np.ndarray
    seed: int = 0
    matched: tuple[np.ndarray, np.ndarray] | None = None


def coda_fine_tune_and_predict(
    device: OnDeviceModel,
    cloud_state: dict[str, np.ndarray],
    train_features: dict[str, np.ndarray],
    train_labels: np.ndarray,
    test_features: dict[str, np.ndarray],
    retrieved_features: dict[str, np.ndarray],
    retrieved_labels: np.ndarray,
    learning_rate: float,
    epochs: int,
    config: CodaConfig,
    matching: FineMatching | None = None,
) -> CodaResult:
    """One user's CoDA test predictions (module doc). ``retrieved_*`` are the
    user's K retrieved samples in rank order (K may be 0); ``matching`` (the
    classifier and the embeddings) is needed only when
    ``config.use_classifier``. Raises ``ValueError`` for inputs that do not
    line up (rows, embeddings) or a missing ``matching``."""
    train_features = device.spec.validate(train_features)
    train_labels = np.asarray(train_labels).reshape(-1)
    k = len(np.asarray(retrieved_labels).reshape(-1))
    retrieved_labels = np.asarray(retrieved_labels).reshape(-1)
    if k:
        retrieved_features = device.spec.validate(retrieved_features)
        if len(next(iter(retrieved_features.values()))) != k:
            raise ValueError(f"retrieved features and labels differ in rows ({k} labels)")
    probability = None
    if k and config.use_classifier and matching is not None and matching.matched is not None:
        keep, probability = matching.matched
    elif k and config.use_classifier:
        if matching is None:
            raise ValueError("the classifier, its state and the local / retrieved embeddings are needed for fine matching")
        if len(matching.retrieved_embeddings) != k or len(matching.local_embeddings) != len(train_labels):
            raise ValueError("one embedding per local and per retrieved sample is needed")
        keep, probability = select_retrieved(matching.classifier, matching.classifier_state, matching.local_embeddings,
                                             matching.retrieved_embeddings, config, matching.seed)
    else:
        keep = np.ones(k, bool)
    weights = None
    if keep.dtype != bool:  # the weight rule: every retrieved sample with weight > 0, weighted
        weights, keep = keep, keep > 0
    rows = int(keep.sum()) if len(train_labels) else 0  # no local data: nothing to augment
    if rows:
        extra = {name: value[keep] for name, value in retrieved_features.items()}
        if config.adopt_user_id and USER_FEATURE in extra:
            extra[USER_FEATURE] = np.full(rows, train_features[USER_FEATURE][0], extra[USER_FEATURE].dtype)
        features = {name: np.concatenate([extra[name], train_features[name]]) for name in train_features}
        labels = np.concatenate([retrieved_labels[keep], train_labels])
        if weights is not None:
            weights = np.r_[weights[keep], np.ones(len(train_labels), np.float32)]
    else:
        features, labels, weights = train_features, train_labels, None
    if len(labels) and config.correction not in (None, "none"):
        # w: click rate of the whole set (docs/coda.md), weighted as the loss weighs it
        labels = _correct(device, labels, config.correction, weights)
    elif len(labels):
        labels = labels.astype(np.float32)
    if weights is None:
        predictions = fine_tune_and_predict(device, cloud_state, features, labels, test_features, learning_rate, epochs)
    else:
        predictions = _fine_tune_weighted(device, cloud_state, features, labels, weights, test_features,
                                          learning_rate, epochs)
    kept = float(weights[:rows].sum()) if weights is not None else float(rows)
    return CodaResult(predictions=predictions, kept=kept, probabilities=probability, trained=rows)


def _correct(device: OnDeviceModel, labels: np.ndarray, correction: str, weights: np.ndarray | None) -> np.ndarray:
    """The file's label correction of the fine-tuning set, with ``w`` its
    click rate, weighted as the loss weighs the samples (docs/coda.md)."""
    if weights is None:
        return device.correct(labels, correction)
    return device.correct(labels, correction, float(np.average(labels, weights=weights)))


def _fine_tune_weighted(device: OnDeviceModel, cloud_state: dict[str, np.ndarray], features: dict[str, np.ndarray],
                        labels: np.ndarray, weights: np.ndarray, test_features: dict[str, np.ndarray],
                        learning_rate: float, epochs: int) -> np.ndarray:
    """:func:`fine_tune_and_predict` with per-sample weights that act
    absolutely: the train signature's loss is the *weighted mean* over a
    batch, so a batch of low-weight samples would still take a full step;
    each batch therefore steps with ``learning_rate x`` its mean weight
    (a batch of local samples, weight 1, steps as in Local)."""
    device.restore(cloud_state, probe=False)
    b = device.batch_size
    for _ in range(epochs):
        for start in range(0, len(labels), b):
            w = weights[start : start + b]
            if w.sum() > 0:
                device.train({k: v[start : start + b] for k, v in features.items()}, labels[start : start + b], w,
                             learning_rate=learning_rate * float(w.mean()))
    return device.infer(test_features)


def _matrix(name: str, value: Any) -> np.ndarray:
    value = np.asarray(value, np.float32)
    if value.ndim != 2:
        raise ValueError(f"{name} must be a [N, D] matrix, got shape {value.shape}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} contains NaN or inf")
    return value
