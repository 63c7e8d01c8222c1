"""One phone: a Python wrapper over the LiteRT interpreter running an exported file.

Method names follow the steps an Android app takes (see
``tflite_models/README.md``): :meth:`OnDeviceModel.run_signature` is
``Interpreter.runSignature(inputs, outputs, key)`` (or, with
``runtime="compiled"``, LiteRT's ``CompiledModel.run``); :meth:`train`,
:meth:`infer`, :meth:`save`, :meth:`restore` and :meth:`correct` run the
signatures of the same names on inputs of any length (split into and
padded to the file's static batch), after checking every input so that
bad data fails with a ``ValueError`` before it reaches the interpreter.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from safetensors.numpy import save as safetensors_bytes

from lcft_tf import checks
from lcft_tf._io import atomic_write, read_safetensors, remove_stale_temps, sha256
from lcft_tf.artifacts.checkpoint import CHECKPOINT_FORMAT, state_fingerprint
from lcft_tf.artifacts.tflite import OPTIONAL_SIGNATURES, REQUIRED_SIGNATURES, metadata_path, read_metadata, signature_table
from lcft_tf.correction import CORRECTION_IDS, CORRECTIONS, HardCorrectionTable, local_ctr
from lcft_tf.features import FeatureSpec

RUNTIMES = ("interpreter", "compiled")

log = logging.getLogger(__name__)


class OnDeviceModel:
    """Runs the ``train`` / ``infer`` / ``save`` / ``restore`` / ``correct``
    signatures of ``<name>.tflite``, configured by ``<name>.json`` beside it."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = 1, runtime: str = "interpreter"):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.runtime = runtime
        self.path = Path(path)
        meta_path = metadata_path(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no model file at {self.path}")
        self.metadata: dict[str, Any] = read_metadata(self.path)
        content = self.path.read_bytes()
        if self.metadata.get("tflite_sha256") != sha256(content):
            raise ValueError(f"{self.path} does not match the sha256 in {meta_path} (file changed after export?)")
        if runtime == "interpreter":
            self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
            found = set(self.interpreter.get_signature_list())
            runner = self.interpreter.get_signature_runner
        else:
            self.interpreter = _compiled_model(content, num_threads)
            found = set(self.interpreter.get_signature_list())
            runner = lambda key: _CompiledSignature(self.interpreter, key)
        optional = found & set(OPTIONAL_SIGNATURES)
        if found - optional != set(REQUIRED_SIGNATURES):
            raise ValueError(f"{self.path} has signatures {sorted(found)}, expected {sorted(REQUIRED_SIGNATURES)}")
        self.signatures = (*REQUIRED_SIGNATURES, *sorted(optional))
        self._runners = {key: runner(key) for key in self.signatures}
        self._check_signatures(meta_path)
        self.spec = FeatureSpec.from_json(self.metadata["feature_spec"])
        self.batch_size = int(self.metadata["batch_size"])
        self.learning_rate = float(self.metadata["optimizer"]["learning_rate"])
        correction = self.metadata["correction"]
        self.global_ctr = float(correction["global_ctr"])
        table = correction.get("hard_table")
        self.hard_table = HardCorrectionTable.from_json(table) if table else None
        state = self.metadata["signatures"]["save"]["outputs"]
        self.state_specs = {t["name"]: (tuple(t["shape"]), np.dtype(t["dtype"])) for t in state}
        self.state_fingerprint = state_fingerprint(state)
        self.rolled_back_steps = 0  # train steps dropped by the in-model guard (non-finite), cumulative

    @property
    def name(self) -> str:
        """The registry model's name, from the file's JSON metadata."""
        return self.metadata["model"]["name"]

    # -- the bare signature call ------------------------------------------
    def run_signature(self, key: str, inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run signature ``key`` on exactly its inputs (static shapes), like
        Android's ``runSignature``; no padding or checks beyond LiteRT's own."""
        if key not in self._runners:
            raise ValueError(f"unknown signature {key!r}; the file has {list(self.signatures)}")
        return self._runners[key](**(inputs or {}))

    def wrap_signatures(self, wrapper: Callable[[str, Callable[..., dict]], Callable[..., dict]]) -> None:
        """Replace each signature's runner by ``wrapper(key, runner)``, for
        instrumentation: timing the calls, or another implementation of the
        same signature (the fleet benchmark's TF baseline).

        ``key`` is the signature name (``str``); ``runner`` is called as
        ``runner(**inputs) -> {name: np.ndarray}``, keyword arrays of the
        signature's static shapes and dtypes, and what ``wrapper`` returns
        must be called the same way. Every method (:meth:`run_signature`,
        :meth:`train`, :meth:`infer`, :meth:`save`, ...) then goes through
        the wrapped runners; nothing is undone (build a new model for the
        bare ones). Raises whatever ``wrapper`` raises; checks made when the
        model was loaded are not repeated.
        """
        self._runners = {key: wrapper(key, runner) for key, runner in self._runners.items()}

    # -- high-level steps -------------------------------------------------
    def infer(self, features: Mapping[str, Any]) -> np.ndarray:
        """Click probabilities [N] for N samples; a single row runs the
        batch-1 ``infer_one`` signature when the file has it."""
        features = self.spec.validate(features)
        n = _rows(features)
        if n == 1 and "infer_one" in self._runners:
            return np.array(self._runners["infer_one"](**features)["probability"], np.float32).reshape(1)
        run = self._runners["infer"]
        out = np.empty(n, np.float32)
        for start in range(0, n, self.batch_size):
            batch, rows = self._batch(features, start, n)
            out[start : start + rows] = run(**batch)["probability"][:rows]
        return out

    def train(
        self,
        features: Mapping[str, Any],
        labels: Any,
        sample_weight: Any = None,
        learning_rate: float | None = None,
    ) -> np.ndarray:
        """One pass over the samples in order, one optimizer step per batch.

        ``labels`` may be corrected (any finite float). Returns the loss of
        each step (weighted mean over the batch's real rows, before the step).
        A step the model's guard rolls back (its loss or new state would be
        non-finite) leaves the state unchanged; such steps are added to
        :attr:`rolled_back_steps` and logged as a warning.
        """
        features = self.spec.validate(features)
        n = _rows(features)
        labels = _finite_vector("labels", labels, n)
        weights = np.ones(n, np.float32) if sample_weight is None else _finite_vector("sample_weight", sample_weight, n)
        if np.any(weights < 0):
            raise ValueError("sample_weight must be >= 0")
        lr = np.float32(checks.learning_rate(self.learning_rate if learning_rate is None else learning_rate))
        run = self._runners["train"]
        arrays = {**features, "label": labels, "sample_weight": weights}
        losses = np.empty(-(-n // self.batch_size), np.float32)
        rolled_back = 0
        for i, start in enumerate(range(0, n, self.batch_size)):
            batch, _ = self._batch(arrays, start, n)
            out = run(**batch, learning_rate=lr)
            losses[i] = out["loss"]
            rolled_back += int(out["applied"]) == 0
        if rolled_back:
            self.rolled_back_steps += rolled_back
            log.warning(
                "%s: %d of %d train steps rolled back (non-finite loss or weights at learning rate %g)",
                self.name, rolled_back, len(losses), lr,
            )
        return losses

    def save(self) -> dict[str, np.ndarray]:
        """All state needed to resume (weights and optimizer slots), by name."""
        return {k: np.array(v) for k, v in self._runners["save"]().items()}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Load state from :meth:`save`; checked in full first, so a bad
        state raises ``ValueError`` and leaves the current weights untouched."""
        self._runners["restore"](**self._check_state(state))

    def correct(self, labels: Any, method: str, local_ctr_value: float | None = None) -> np.ndarray:
        """Corrected labels computed inside the model (``correct`` signature).

        ``local_ctr_value`` defaults to the share of positives in ``labels``
        (all of the user's local training labels).
        """
        if method not in CORRECTIONS:
            raise ValueError(f"unknown correction method {method!r}; choose from {CORRECTIONS}")
        if method == "hard" and self.hard_table is None:
            raise ValueError(f"{self.path} ships no hard correction table")
        labels = np.asarray(labels)
        if labels.size == 0:
            return np.zeros(0, np.float32)
        w_i = local_ctr(labels)  # also checks that raw labels are 0/1
        if local_ctr_value is not None:
            w_i = checks.in_unit_interval(local_ctr_value, "local CTR")
        labels = labels.astype(np.float32).reshape(-1)
        n, out = len(labels), np.empty(len(labels), np.float32)
        for start in range(0, n, self.batch_size):
            batch, rows = self._batch({"label": labels}, start, n)
            result = self._runners["correct"](**batch, local_ctr=np.float32(w_i), method=np.int32(CORRECTION_IDS[method]))
            if int(result["valid"]) != 1:  # the checks above make this unreachable unless the file is wrong
                raise ValueError(f"{self.path}: correct signature rejected method {method!r} with local CTR {w_i!r}")
            out[start : start + rows] = result["corrected_label"][:rows]
        return out

    # -- checkpoints --------------------------------------------------------
    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write :meth:`save`'s tensors as a safetensors file, atomically.
        Refuses (``ValueError``, old file untouched) when any tensor is
        non-finite: a checkpoint is the last good state."""
        state = self.save()
        bad = [k for k, v in state.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
        if bad:
            raise ValueError(f"not saving {path}: state tensor {bad[0]!r} contains NaN or inf")
        meta = {"format": CHECKPOINT_FORMAT, "model": self.name, "state": self.state_fingerprint}
        atomic_write(path, safetensors_bytes(state, metadata=meta))

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore from a safetensors checkpoint; a truncated file, one from
        another model or with wrong shapes/dtypes raises ``ValueError`` and
        changes nothing."""
        remove_stale_temps(path)
        meta, state = read_safetensors(path, "safetensors checkpoint")
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not an lcft checkpoint (format {meta.get('format')!r})")
        if meta.get("state") != self.state_fingerprint:
            raise ValueError(
                f"{path}: checkpoint of model {meta.get('model')!r} with different state tensors "
                f"than this {self.name!r} model"
            )
        self.restore(state)

    # -- internals ----------------------------------------------------------
    def _check_signatures(self, meta_path: Path) -> None:
        """Every input/output name, shape and dtype in the JSON must be the
        interpreter's own; an edited JSON fails here, not inside LiteRT."""
        declared = self.metadata.get("signatures") or {}
        for key in self.signatures:
            runner = self._runners[key]
            actual = {"inputs": runner.get_input_details(), "outputs": runner.get_output_details()}
            for side in ("inputs", "outputs"):
                listed = {t["name"]: t for t in declared.get(key, {}).get(side, [])}
                where = f"{meta_path}: signatures.{key}.{side}"
                if set(listed) != set(actual[side]):
                    raise ValueError(f"{where} names {sorted(listed)} differ from the model's {sorted(actual[side])}")
                for name, detail in actual[side].items():
                    shape, dtype = [int(d) for d in detail["shape"]], np.dtype(detail["dtype"]).name
                    if list(listed[name].get("shape", ())) != shape:
                        raise ValueError(f"{where}.{name}.shape is {listed[name].get('shape')}, the model has {shape}")
                    if listed[name].get("dtype") != dtype:
                        raise ValueError(f"{where}.{name}.dtype is {listed[name].get('dtype')!r}, the model has {dtype!r}")
        # The fields the wrapper builds batches from must agree with the model too.
        batch = int(self._runners["train"].get_input_details()["label"]["shape"][0])
        if self.metadata.get("batch_size") != batch:
            raise ValueError(f"{meta_path}: batch_size is {self.metadata.get('batch_size')}, the model has {batch}")
        # And the whole table with the contract both sides derive it from.
        contract = signature_table(batch, declared["infer"]["inputs"], declared["save"]["outputs"])
        for key in self.signatures:
            if declared[key] != contract[key]:
                raise ValueError(f"{meta_path}: signatures.{key} differs from the signature table of "
                                 "lcft_tf.artifacts.tflite (an edited or foreign file)")
        spec = FeatureSpec.from_json(self.metadata["feature_spec"])
        infer = self._runners["infer"].get_input_details()
        if set(spec.names) != set(infer):
            raise ValueError(f"{meta_path}: feature_spec names {sorted(spec.names)} differ from the model's {sorted(infer)}")
        for name in spec.names:
            shape, dtype = [batch, *spec.shape(name)[1:]], np.dtype(spec.dtype(name)).name
            if [int(d) for d in infer[name]["shape"]] != shape or np.dtype(infer[name]["dtype"]).name != dtype:
                raise ValueError(
                    f"{meta_path}: feature_spec {name!r} gives {dtype}{shape}, the model has "
                    f"{np.dtype(infer[name]['dtype']).name}{list(infer[name]['shape'])}"
                )

    def _check_state(self, state: Mapping[str, Any]) -> dict[str, np.ndarray]:
        missing = [k for k in self.state_specs if k not in state]
        unknown = [k for k in state if k not in self.state_specs]
        if missing or unknown:
            raise ValueError(f"state tensors do not match the model: missing {missing[:5]}, unknown {unknown[:5]}")
        out = {}
        for name, (shape, dtype) in self.state_specs.items():
            value = np.asarray(state[name])
            if value.shape != shape or value.dtype != dtype:
                raise ValueError(
                    f"state tensor {name!r}: expected {dtype.name}{list(shape)}, got {value.dtype.name}{list(value.shape)}"
                )
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ValueError(f"state tensor {name!r} contains NaN or inf")
            out[name] = np.ascontiguousarray(value)
        return out

    def _batch(self, arrays: Mapping[str, np.ndarray], start: int, n: int) -> tuple[dict[str, np.ndarray], int]:
        """Rows ``start : start + batch`` of every array, zero-padded to the
        static batch (padding rows get sample_weight 0 where it applies)."""
        rows = min(self.batch_size, n - start)
        if rows == self.batch_size:
            return {k: v[start : start + rows] for k, v in arrays.items()}, rows
        batch = {}
        for k, v in arrays.items():
            padded = np.zeros((self.batch_size, *v.shape[1:]), v.dtype)
            padded[:rows] = v[start:]
            batch[k] = padded
        return batch, rows


def _compiled_model(content: bytes, num_threads: int | None):
    """LiteRT's CompiledModel on the CPU (XNNPACK) with ``num_threads``."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import Options

    options = Options(hardware_accelerators=HardwareAccelerator.CPU)
    if num_threads:
        options.cpu_options.num_threads = int(num_threads)
    return CompiledModel.from_buffer(content, options=options)


class _CompiledSignature:
    """One signature of a LiteRT ``CompiledModel``, called like the
    interpreter's signature runner (``runner(**inputs) -> {name: array}``).
    Buffers are made once; inputs are written and outputs read in the order
    of the signature's input/output lists, which is the buffers' order
    (checked against the buffers' own shapes here)."""

    def __init__(self, model, key: str):
        self.model, self.key = model, key
        self.index = model.get_signature_index(key)
        listed = model.get_signature_list()[key]
        inputs, outputs = model.get_input_tensor_details(key), model.get_output_tensor_details(key)
        self._inputs = [(n, inputs[n]) for n in listed["inputs"]]
        self._outputs = [(n, outputs[n]) for n in listed["outputs"]]
        self._in_buffers = model.create_input_buffers(self.index)
        self._out_buffers = model.create_output_buffers(self.index)
        for (name, detail), buffer in [*zip(self._inputs, self._in_buffers), *zip(self._outputs, self._out_buffers)]:
            got = buffer.get_tensor_details()
            if list(got["shape"]) != list(detail["shape"]) or np.dtype(got["dtype"]) != np.dtype(detail["dtype"]):
                raise ValueError(f"CompiledModel signature {key!r}: buffer order differs from the listed tensors at {name!r}")

    def get_input_details(self) -> dict[str, dict]:
        """Input name -> LiteRT tensor details (shape, dtype), as the
        interpreter's signature runner gives them."""
        return dict(self._inputs)

    def get_output_details(self) -> dict[str, dict]:
        """Output name -> LiteRT tensor details (shape, dtype)."""
        return dict(self._outputs)

    def __call__(self, **inputs) -> dict[str, np.ndarray]:
        """Run the signature on named numpy inputs cast to their dtypes;
        raises ``ValueError`` for a shape other than the static one."""
        for (name, detail), buffer in zip(self._inputs, self._in_buffers):
            value = np.asarray(inputs[name], np.dtype(detail["dtype"]))
            if list(value.shape) != list(detail["shape"]):
                raise ValueError(f"{self.key}.{name}: expected shape {detail['shape']}, got {list(value.shape)}")
            buffer.write(value)
        self.model.run_by_index(self.index, self._in_buffers, self._out_buffers)
        return {
            name: buffer.read(int(np.prod(detail["shape"], dtype=np.int64)), np.dtype(detail["dtype"])).reshape(detail["shape"])
            for (name, detail), buffer in zip(self._outputs, self._out_buffers)
        }


def _rows(features: Mapping[str, np.ndarray]) -> int:
    n = len(next(iter(features.values())))
    if n == 0:
        raise ValueError("no samples given")
    return n


def _finite_vector(name: str, value: Any, n: int) -> np.ndarray:
    value = np.asarray(value)
    if value.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numbers, got dtype {value.dtype}")
    value = value.astype(np.float32).reshape(-1) if value.ndim <= 1 else value
    if value.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {np.shape(value)}")
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} contains NaN or inf")
    return value
