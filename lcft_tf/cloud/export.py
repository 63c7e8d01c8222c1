"""Export a CTR model to one self-training ``.tflite`` file plus JSON metadata.

The file has six signatures, each runnable in the plain LiteRT interpreter
(builtin ops only, no Flex):

* ``train(<features>, label, sample_weight, learning_rate) -> {loss,
  grad_norm, applied}``: one optimizer step on a static batch
  (``sample_weight`` 0 marks padding rows), the gradient clipped to a global
  norm of ``clip_norm``; a step that would leave any weight, slot or the loss
  non-finite, or whose new weights give a non-finite logit on the step's own
  batch, is not applied (``applied`` 0, state bit-exactly unchanged).
* ``infer(<features>) -> {probability}``
* ``infer_one(<features of one row>) -> {probability}``: the same model at
  batch 1, so scoring one candidate does not pay for a padded batch.
* ``save() -> {<state name>: tensor}``: every variable needed to resume
  (model weights and optimizer slots).
* ``restore(<state name>: tensor...) -> {num_restored}``
* ``correct(label, local_ctr, method) -> {corrected_label, alpha, beta, valid}``:
  label correction (none / soft1 / soft2 / hard with the shipped table), so
  a device needs no cloud round trip. An unknown method id, a local CTR
  outside [0, 1] or ``hard`` without a shipped table give ``valid`` 0 and the
  raw labels (alpha 1, beta 0), never some other correction.

Design notes: docs/tflite_training.md (what the converter and interpreter
allow) and docs/loss_and_correction.md (loss, clipping, rollback, correction).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from lcft_tf import __version__, checks
from lcft_tf._io import atomic_write, sha256
from lcft_tf.artifacts.checkpoint import checkpoint_section
from lcft_tf.artifacts.tflite import ADAM_STEP, FORMAT, FORMAT_VERSION, SIGNATURES, signature_table, submodel_path
from lcft_tf.cloud.submodel import export_submodel, needs_submodel
from lcft_tf.correction import CORRECTION_IDS, CORRECTIONS, HardCorrectionTable
from lcft_tf.features import FeatureSpec
from lcft_tf.models.base import CTRModel
from lcft_tf.models.losses import corrected_log_loss, weighted_mean

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam")
# Default global gradient-norm clip: above the largest norm measured in
# ordinary fine-tuning of the bundled models (docs/loss_and_correction.md).
CLIP_NORM = 10.0
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class FlexOpsError(RuntimeError):
    """The model needs ops outside TFLite's builtins (the Flex delegate)."""


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """How the on-device training step is compiled into the file (module
    docstring; docs/tflite_training.md, docs/loss_and_correction.md).

    Raises ``ValueError`` on construction for a ``batch_size`` that is not an
    integer >= 1, an unknown optimizer, ``global_ctr`` outside [0, 1], a
    learning rate that is not finite and >= 0 as a float32
    (:func:`lcft_tf.checks.learning_rate`), Adam betas outside [0, 1) or an
    ``adam_epsilon`` / ``clip_norm`` that is not finite and > 0 (each as
    the float32 the file holds), a ``hard_table`` that is not a
    :class:`~lcft_tf.correction.HardCorrectionTable`, or a
    ``submodel_capacity`` that is not an integer >= 0. NaN and inf are
    refused everywhere.
    """

    batch_size: int = dataclasses.field(
        default=32, metadata={"help": "static batch of the exported train signature (rows per step), an integer >= 1"})
    optimizer: str = dataclasses.field(
        default="sgd", metadata={"help": "on-device optimizer compiled into the file: sgd or adam"})
    learning_rate: float = dataclasses.field(
        default=0.01, metadata={"help": "learning rate the device wrapper feeds to train unless told another"})
    global_ctr: float = dataclasses.field(
        default=0.5, metadata={"help": "global click rate w_g in [0, 1] the correct signature uses (the dataset's)"})
    hard_table: HardCorrectionTable | None = dataclasses.field(
        default=None, metadata={"help": "hard-correction table shipped in the file; unset: hard is invalid there"})
    adam_beta1: float = dataclasses.field(default=0.9, metadata={"help": "Adam's first-moment decay (adam only), in [0, 1) as a float32"})
    adam_beta2: float = dataclasses.field(default=0.999, metadata={"help": "Adam's second-moment decay (adam only), in [0, 1) as a float32"})
    adam_epsilon: float = dataclasses.field(
        default=1e-7, metadata={"help": "Adam's denominator epsilon (adam only; Keras' default), finite and > 0 as a float32"})
    clip_norm: float = dataclasses.field(
        default=CLIP_NORM, metadata={"help": "global gradient-norm clip of every step (docs/loss_and_correction.md), finite and > 0 as a float32"})
    submodel_capacity: int = dataclasses.field(
        default=4096, metadata={"help": "rows per embedding table of the per-device submodel written beside the "
                                        "file when a table is larger; 0: never (docs/submodels.md)"})

    def __post_init__(self) -> None:
        checks.integer(self.batch_size, "batch_size", 1)
        checks.choice(self.optimizer, "optimizer", OPTIMIZERS)
        checks.learning_rate(self.learning_rate)
        checks.number(self.global_ctr, "global_ctr", 0.0, 1.0)
        if self.hard_table is not None and not isinstance(self.hard_table, HardCorrectionTable):
            raise ValueError(f"hard_table must be a HardCorrectionTable or None, got {self.hard_table!r}")
        # Compiled into the file as float32: a beta that rounds to 1 there
        # divides by 1 - beta**t = 0 and NaN makes every step non-finite, so
        # each one is rolled back and the device model stays the cloud's.
        for name in ("adam_beta1", "adam_beta2"):
            checks.number(getattr(self, name), name, 0.0, 1.0, high_open=True, float32=True)
        checks.number(self.adam_epsilon, "adam_epsilon", 0.0, low_open=True, float32=True)
        checks.number(self.clip_norm, "clip_norm", 0.0, low_open=True, float32=True)
        checks.integer(self.submodel_capacity, "submodel_capacity", 0)


def _state_name(path: str, taken: set[str]) -> str:
    name = re.sub(r"[^0-9A-Za-z_]", "_", path).strip("_") or "var"
    base, i = name, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


class TrainableModule(tf.Module):
    """The ``tf.Module`` that is converted; runs unchanged in TF as the
    reference for parity tests and the TF side of benchmarks."""

    def __init__(self, model: CTRModel, config: ExportConfig):
        super().__init__(name="lcft_module")
        # Not tracked: saving a tracked Keras model adds its own float-typed
        # serving signature; the variables are tracked below instead.
        self.__dict__["model"] = model
        self.spec: FeatureSpec = model.spec
        self.config = config
        # Track the underlying tf.Variables: Keras 3 variables are otherwise
        # exported uninitialised (docs/tflite_training.md).
        taken: set[str] = set()
        self._trainable = [v.value for v in model.trainable_variables]
        self._model_vars = [v.value for v in model.variables]
        # Paths minus the model's own (maybe auto-numbered) name; every layer
        # below it has an explicit name (docs/tflite_training.md).
        prefix = f"{model.name}/"
        names = [_state_name(v.path.removeprefix(prefix), taken) for v in model.variables]
        self._slots: list[tf.Variable] = []
        slot_names: list[str] = []
        if config.optimizer == "adam":
            self._step = tf.Variable(0.0, name=ADAM_STEP)
            name_of = {id(v): n for n, v in zip(names, self._model_vars)}
            for v in self._trainable:  # slots 2i, 2i+1 belong to trainable variable i
                name = name_of[id(v)]
                for kind in ("m", "v"):
                    self._slots.append(tf.Variable(tf.zeros_like(v), name=f"adam_{kind}"))
                    slot_names.append(_state_name(f"adam_{kind}__{name}", taken))
            self._slots.append(self._step)
            slot_names.append(_state_name(ADAM_STEP, taken))
        self._state = self._model_vars + self._slots
        self.state_names = names + slot_names
        table = config.hard_table or HardCorrectionTable.identity()
        self._edges = tf.constant(table.edges, tf.float32) if table.edges else None
        self._alphas = tf.constant(table.alphas, tf.float32)
        self._betas = tf.constant(table.betas, tf.float32)

    # -- signature input specs, from the contract's table ---------------------
    def signatures(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """The signature table (:func:`lcft_tf.artifacts.tflite.signature_table`) of this module."""
        features = [_tensor_info(s, n) for n, s in self.feature_specs().items()]
        state = [_tensor_info(v, n) for n, v in zip(self.state_names, self._state)]
        return signature_table(self.config.batch_size, features, state)

    def feature_specs(self, batch_size: int | None = None) -> dict[str, tf.TensorSpec]:
        """``tf.TensorSpec`` of every feature at ``batch_size`` rows (default
        the config's static batch): int32 ``[B]`` / ``[B, L]`` ids, float32
        ``[B, dim]`` dense vectors (:class:`lcft_tf.features.FeatureSpec`)."""
        b = batch_size or self.config.batch_size
        return {
            n: tf.TensorSpec([b, *self.spec.shape(n)[1:]], tf.as_dtype(self.spec.dtype(n)), name=n)
            for n in self.spec.names
        }

    def input_specs(self, key: str) -> dict[str, tf.TensorSpec]:
        """``tf.TensorSpec`` of every input of signature ``key``, in table order."""
        return {t["name"]: tf.TensorSpec(t["shape"], tf.as_dtype(t["dtype"]), name=t["name"])
                for t in self.signatures()[key]["inputs"]}

    # -- the computations -------------------------------------------------
    def train(self, **inputs) -> dict[str, tf.Tensor]:
        """One optimizer step on a static batch (module docstring): features,
        float32 ``label`` / ``sample_weight`` ``[B]`` and scalar
        ``learning_rate`` in; float32 ``loss`` and ``grad_norm`` (before the
        clip) and int32 ``applied`` (0: a non-finite step, state unchanged)
        out. SGD, or Adam with Keras's epsilon placement (Kingma & Ba 2015,
        Algorithm 1 and the note after it); clip and rollback:
        docs/loss_and_correction.md."""
        features = {n: inputs[n] for n in self.spec.names}
        with tf.GradientTape() as tape:
            logits = self.model(features, training=True)
            loss = weighted_mean(corrected_log_loss(logits, inputs["label"]), inputs["sample_weight"])
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, self._trainable)]  # dense: no Flex scatter
        norm = tf.sqrt(tf.add_n([tf.reduce_sum(g * g) for g in grads]))
        # Rescale the whole vector to norm <= clip_norm (same direction; a NaN
        # or inf norm makes the step non-finite and the guard below drops it).
        clip = tf.constant(self.config.clip_norm, tf.float32)
        grads = [g * (clip / tf.maximum(norm, clip)) for g in grads]
        updates = self._updates(grads, inputs["learning_rate"])
        ok = tf.logical_and(_finite(loss), _finite(norm))
        for _, new in updates:
            ok = tf.logical_and(ok, _finite(new))
        # Finite weights can still predict NaN (weights of 1e7..1e9 overflow
        # to inf - inf inside the forward pass, and LOGISTIC gives NaN for a
        # logit of 1e29): the new state must also give finite logits and
        # probabilities (infer's own ops) on this very batch. One forward pass
        # on the new values, nothing assigned yet (Keras stateless_call),
        # padding rows included.
        after = self._logits_after(features, updates)
        ok = tf.logical_and(ok, tf.logical_and(_finite(after), _finite(tf.sigmoid(after))))
        # Keep the old state when anything is non-finite: builtin SELECT_V2,
        # bit-exact rollback (docs/loss_and_correction.md).
        for v, new in updates:
            v.assign(tf.where(ok, new, v.read_value()))
        return {"loss": loss, "grad_norm": norm, "applied": tf.cast(ok, tf.int32)}

    def _logits_after(self, features, updates) -> tf.Tensor:
        """The model's logits on ``features`` with every weight replaced by
        its value in ``updates`` (the rest as they are), without assigning."""
        new = {id(v): value for v, value in updates}
        trainable = [new.get(id(v.value), v.value) for v in self.model.trainable_variables]
        frozen = [new.get(id(v.value), v.value) for v in self.model.non_trainable_variables]
        logits, _ = self.model.stateless_call(trainable, frozen, features, training=False)
        return logits

    def _updates(self, grads, lr) -> list:
        """``(variable, new value)`` for every variable one optimizer step
        changes; nothing is assigned here."""
        if self.config.optimizer == "sgd":
            return [(v, v.read_value() - lr * g) for v, g in zip(self._trainable, grads)]
        c = self.config
        step = self._step.read_value() + 1.0
        scale = lr * tf.sqrt(1.0 - tf.pow(c.adam_beta2, step)) / (1.0 - tf.pow(c.adam_beta1, step))
        out = [(self._step, step)]
        for i, (v, g) in enumerate(zip(self._trainable, grads)):
            m_var, s_var = self._slots[2 * i], self._slots[2 * i + 1]
            m = c.adam_beta1 * m_var.read_value() + (1.0 - c.adam_beta1) * g
            s = c.adam_beta2 * s_var.read_value() + (1.0 - c.adam_beta2) * g * g
            out += [(m_var, m), (s_var, s), (v, v.read_value() - scale * m / (tf.sqrt(s) + c.adam_epsilon))]
        return out

    def infer(self, **features) -> dict[str, tf.Tensor]:
        """``probability``, float32 ``[B]``: the sigmoid of the model's logits
        (the ``infer`` and ``infer_one`` signatures)."""
        return {"probability": tf.sigmoid(self.model(features, training=False))}  # infer and infer_one

    def save(self) -> dict[str, tf.Tensor]:
        """Every state variable (weights, optimizer slots, Adam's step) by its
        state name, in the dtype and shape it has."""
        return {n: tf.identity(v.read_value()) for n, v in zip(self.state_names, self._state)}

    def restore(self, **tensors) -> dict[str, tf.Tensor]:
        """Assign every state variable from ``tensors`` (as :meth:`save`
        returns them); int32 ``num_restored`` out."""
        for n, v in zip(self.state_names, self._state):
            v.assign(tensors[n])
        return {"num_restored": tf.constant(len(self._state), tf.int32)}

    def correct(self, label, local_ctr, method) -> dict[str, tf.Tensor]:
        """In-graph twin of :mod:`lcft_tf.correction` (same edge-case rules)."""
        w_i, w_g = local_ctr, tf.constant(self.config.global_ctr, tf.float32)
        tiny = tf.constant(1e-12, tf.float32)
        one, zero = tf.constant(1.0), tf.constant(0.0)
        high, same = w_i > w_g, tf.equal(w_i, w_g)
        lift = (w_g - w_i) / tf.maximum(1.0 - w_i, tiny)
        scale = w_g / tf.maximum(w_i, tiny)
        s1_alpha = tf.where(high, scale, one)
        s1_beta = tf.where(tf.logical_or(high, same), zero, lift)
        one_class = tf.logical_or(tf.logical_or(tf.equal(w_i, 0.0), tf.equal(w_i, 1.0)), same)
        s2_alpha = tf.where(one_class, s1_alpha, tf.where(high, one, scale))
        s2_beta = tf.where(one_class, s1_beta, tf.where(high, lift, zero))
        if self._edges is None:
            interval = tf.constant(0, tf.int32)
        else:
            interval = tf.reduce_sum(tf.cast(w_i >= self._edges, tf.int32))
        hard_alpha, hard_beta = tf.gather(self._alphas, interval), tf.gather(self._betas, interval)
        # Unknown ids (and w_i outside [0, 1] / NaN, or hard without a table)
        # read row 0 = raw labels and report valid 0; never another method.
        valid = tf.logical_and(method >= 0, method < len(CORRECTIONS))
        valid = tf.logical_and(valid, tf.logical_and(w_i >= 0.0, w_i <= 1.0))
        if self.config.hard_table is None:
            valid = tf.logical_and(valid, tf.not_equal(method, CORRECTION_IDS["hard"]))
        choice = tf.where(valid, method, tf.zeros_like(method))
        alpha = tf.gather(tf.stack([one, s1_alpha, s2_alpha, hard_alpha]), choice)
        beta = tf.gather(tf.stack([zero, s1_beta, s2_beta, hard_beta]), choice)
        corrected = tf.where(label > 0.5, alpha * tf.ones_like(label), beta * tf.ones_like(label))
        return {"corrected_label": corrected, "alpha": alpha, "beta": beta, "valid": tf.cast(valid, tf.int32)}

    # -- concrete functions -----------------------------------------------
    def concrete_functions(self) -> dict[str, Any]:
        """The signatures as concrete functions, keyed by signature name."""
        return {
            key: tf.function(getattr(self, "infer" if key == "infer_one" else key)).get_concrete_function(
                **self.input_specs(key))
            for key in SIGNATURES
        }


def _finite(x: tf.Tensor) -> tf.Tensor:
    """True iff every element is finite; |x| <= max float is false for NaN and
    inf, and needs only builtins (ABS, LESS_EQUAL, REDUCE_ALL)."""
    return tf.reduce_all(tf.abs(x) <= _FLOAT32_MAX)


def convert(module: TrainableModule) -> bytes:
    """Convert the module to a TFLite flatbuffer with builtin ops only.

    Raises :class:`FlexOpsError` naming the ops that would need Flex.
    """
    functions = module.concrete_functions()
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures=functions)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.experimental_enable_resource_variables = True
        try:
            tflite = converter.convert()
        except Exception as err:  # the converter raises ConverterError
            ops = sorted(set(re.findall(r"\btf\.([A-Z]\w+)", str(err))))
            if ops:
                raise FlexOpsError(
                    f"{module.model.name}: these ops are not TFLite builtins (they would need the Flex "
                    f"delegate, which LiteRT does not ship): {', '.join(ops)}"
                ) from err
            raise
    custom = sorted(op for op in operator_names(tflite) if op.startswith("CUSTOM"))
    if custom:
        raise FlexOpsError(f"{module.model.name}: the converted file contains custom ops {custom}")
    return tflite


def _tensor_info(spec: tf.TensorSpec | tf.Tensor, name: str) -> dict[str, Any]:
    return {"name": name, "shape": [int(d) for d in spec.shape], "dtype": spec.dtype.name}


def build_metadata(module: TrainableModule, tflite: bytes) -> dict[str, Any]:
    """Everything a device (Python or Android) needs to drive the file;
    deterministic for the same model and config (no timings)."""
    c = module.config
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model": {"name": module.model.model_name, "config": module.model.get_config()},
        "feature_spec": module.spec.to_json(),
        "batch_size": c.batch_size,
        "optimizer": {
            "name": c.optimizer,
            "learning_rate": c.learning_rate,
            "clip_norm": c.clip_norm,
            "non_finite_step": ("rolled back (train outputs applied = 0): a non-finite loss, gradient norm, "
                                "new weight or slot, or new logit or probability on the step's batch"),
            **({"beta1": c.adam_beta1, "beta2": c.adam_beta2, "epsilon": c.adam_epsilon} if c.optimizer == "adam" else {}),
        },
        "loss": "corrected_log_loss (logit form; logit capped at +-10 for targets outside [0, 1])",
        "correction": {
            "global_ctr": c.global_ctr,
            "methods": {m: i for i, m in enumerate(CORRECTIONS)},
            "unknown_method": "raw labels (alpha 1, beta 0) and valid = 0",
            "hard_table": c.hard_table.to_json() if c.hard_table else None,
        },
        "signatures": module.signatures(),
        "checkpoint": checkpoint_section(module.signatures()["save"]["outputs"]),
        "tflite_bytes": len(tflite),
        "tflite_sha256": sha256(tflite),
    }


def compile_model(model: CTRModel, config: ExportConfig) -> tuple[TrainableModule, bytes, dict[str, Any]]:
    """``(module, flatbuffer, metadata)`` of ``model`` compiled for ``config``
    (nothing written)."""
    module = TrainableModule(model, config)
    tflite = convert(module)
    return module, tflite, build_metadata(module, tflite)


def export_tflite(model: CTRModel, path: str | os.PathLike, config: ExportConfig | None = None) -> dict[str, Any]:
    """Convert ``model`` to ``path`` (``<name>.tflite``) and write ``<name>.json``
    metadata beside it. Returns the metadata."""
    config = config or ExportConfig()
    path = Path(path)
    if path.suffix != ".tflite":
        raise ValueError(f"export path must end in .tflite, got {str(path)!r}")
    start = time.perf_counter()
    module, tflite, metadata = compile_model(model, config)
    seconds = time.perf_counter() - start
    sub = submodel_path(path)
    metadata["submodel"] = None
    if needs_submodel(model.spec, config.submodel_capacity):
        # A device fine-tunes only the rows it uses (docs/submodels.md).
        export_submodel(model, sub, config, metadata, compile_model)
        metadata["submodel"] = {"file": sub.name, "capacity": config.submodel_capacity}
    else:
        for stale in (sub, sub.with_suffix(".json")):  # never leave a submodel of an older export beside this one
            stale.unlink(missing_ok=True)
    atomic_write(path, tflite)
    atomic_write(path.with_suffix(".json"), json.dumps(metadata, indent=2).encode())
    log.info("exported %s (%.1f KiB) in %.1f s", path, len(tflite) / 1024, seconds)
    return metadata


def operator_names(tflite: bytes) -> set[str]:
    """Names of every operator type in a flatbuffer (all subgraphs); custom
    ops (Flex included) appear as ``CUSTOM:<code>``."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(tflite, 0)
    found = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            found.add(f"CUSTOM:{(code.CustomCode() or b'').decode()}")
        else:
            found.add(names.get(builtin, str(builtin)))
    return found
