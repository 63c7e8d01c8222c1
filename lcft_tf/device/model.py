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

import contextlib
import logging
import os
import sys
import threading
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
# Set to 1 to see the lines LiteRT prints to stderr while it creates a
# CompiledModel (accelerator and plugin registry: NPU, OpenVINO, ...).
LITERT_LOGS_ENV = "LCFT_LITERT_LOGS"

log = logging.getLogger(__name__)


class OnDeviceModel:
    """Runs the ``train`` / ``infer`` / ``save`` / ``restore`` / ``correct``
    signatures of ``<name>.tflite``, configured by ``<name>.json`` beside it."""

    def __init__(
        self,
        path: str | os.PathLike,
        num_threads: int | None = 1,
        runtime: str = "interpreter",
        litert_logs: bool | None = None,
    ):
        """``num_threads``: None (LiteRT's default) or an int >= 1, for both
        runtimes. ``litert_logs``: show what LiteRT prints to stderr while
        creating a ``CompiledModel`` (about 30 lines of accelerator and plugin
        registry); default off, or on when ``$LCFT_LITERT_LOGS`` is 1."""
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        num_threads = _check_num_threads(num_threads)
        if litert_logs is None:
            litert_logs = os.environ.get(LITERT_LOGS_ENV, "") == "1"
        self._litert_logs = bool(litert_logs)
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
            with _stderr_silenced(not litert_logs):
                self.interpreter = _compiled_model(content, num_threads)
            found = set(self.interpreter.get_signature_list())
            # Only restore prints on a call (checked for every signature); silencing fd 2 is process-wide, so
            # the other signatures run without it (~1% of a W&D train step, measured side by side).
            runner = lambda key: _CompiledSignature(self.interpreter, key, quiet=not litert_logs and key == "restore")
        optional = found & set(OPTIONAL_SIGNATURES)
        if found - optional != set(REQUIRED_SIGNATURES):
            raise ValueError(f"{self.path} has signatures {sorted(found)}, expected {sorted(REQUIRED_SIGNATURES)}")
        self.signatures = (*REQUIRED_SIGNATURES, *sorted(optional))
        with _stderr_silenced(runtime == "compiled" and not litert_logs):
            self._runners = {key: runner(key) for key in self.signatures}
        self._check_signatures(meta_path)
        # What run_signature checks every call against (equal to the runtime's
        # own table: _check_signatures).
        self._inputs = {
            key: [(t["name"], tuple(t["shape"]), np.dtype(t["dtype"])) for t in self.metadata["signatures"][key]["inputs"]]
            for key in self.signatures
        }
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
        self._probe = _probe_features(self.spec, self.batch_size)

    def __del__(self):
        # LiteRT prints its accelerator teardown to stderr when a CompiledModel
        # goes; let it go here, silenced like its creation.
        if getattr(self, "runtime", None) == "compiled" and not getattr(self, "_litert_logs", True):
            try:
                with _stderr_silenced(True):
                    self.__dict__.pop("_runners", None)
                    self.__dict__.pop("interpreter", None)
            except Exception:  # interpreter shutdown: nothing left to silence with
                pass

    @property
    def name(self) -> str:
        """The registry model's name, from the file's JSON metadata."""
        return self.metadata["model"]["name"]

    # -- the bare signature call ------------------------------------------
    def run_signature(self, key: str, inputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run signature ``key`` on exactly its inputs (static shapes), like
        Android's ``runSignature``; no padding.

        The same checks for both runtimes, before LiteRT sees anything: the
        input names must be exactly the signature's, each shape its static
        shape, and each dtype its dtype, or another dtype whose values the
        signature's dtype holds exactly (int64 5 for int32, float64 0.5 for
        float32; not 2**32 + 5, 3.7 for an int, or float64 0.1). Anything
        else raises a one-line ``ValueError`` naming the signature, the
        input, what was expected and what was given.
        """
        if key not in self._runners:
            raise ValueError(f"unknown signature {key!r}; the file has {list(self.signatures)}")
        return self._runners[key](**self._signature_inputs(key, {} if inputs is None else inputs))

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
        batch-1 ``infer_one`` signature when the file has it.

        Never returns a NaN or inf score: a state that predicts one raises a
        one-line ``ValueError`` naming the model and how many scores
        (docs/loss_and_correction.md#gradient-clipping-and-rollback)."""
        features = self.spec.validate(features)
        out = self._scores(features)
        bad = int(np.count_nonzero(~np.isfinite(out)))
        if bad:
            raise ValueError(f"{self.name}: {bad} of {len(out)} scores are NaN or inf; the weights are broken "
                             "(restore a checkpoint)")
        return out

    def _scores(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Probabilities of checked features, unchecked themselves."""
        n = _rows(features)
        if n == 1 and "infer_one" in self._runners:
            return np.array(self._runners["infer_one"](**features)["probability"], np.float32).reshape(1)
        run = self._runners["infer"]
        out = np.empty(n, np.float32)
        for start in range(0, n, self.batch_size):
            batch, rows = self._batch(features, start, n)
            out[start : start + rows] = run(**batch)["probability"][:rows]
        return out

    def _probe_fails(self) -> int:
        """How many of a fixed probe batch's scores are NaN or inf under the
        current state. The probe (:func:`_probe_features`) reads ids spread
        over every table and dense values 0, 0.5 and 1: a state broken by
        huge weights predicts NaN on it (docs/loss_and_correction.md)."""
        return int(np.count_nonzero(~np.isfinite(self._scores(self._probe))))

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

    def check_state(self, state: Mapping[str, Any], checked: "CheckedState | None" = None) -> "CheckedState":
        """``state`` checked as :meth:`restore` checks it (``ValueError``), as
        a read-only :class:`CheckedState` that this model's :meth:`restore`
        takes without checking it again: for a state restored many times
        (a fleet restores one per method of every user). A tensor that is
        the very array of ``checked`` (another model's, e.g. the full model's
        dense weights in a pack) has only its shape and dtype checked."""
        return CheckedState(self._check_state(state, checked), self.state_fingerprint)

    def restore(self, state: Mapping[str, Any], probe: bool = True) -> None:
        """Load state from :meth:`save` (or :meth:`check_state`); checked in
        full first, so a bad state raises ``ValueError`` and leaves the
        current weights untouched.
        A finite state that predicts NaN or inf on the probe batch is bad
        too: it is restored, probed, and the previous state put back.
        ``probe=False`` skips the probe (and its copy of the current state)
        for a state already vetted, such as the cloud state a fleet worker
        restores once per user and method."""
        checked = (state.arrays if isinstance(state, CheckedState) and state.fingerprint == self.state_fingerprint
                   else self._check_state(state))
        if not probe:
            self._runners["restore"](**checked)
            return
        previous = self.save()
        self._runners["restore"](**checked)
        bad = self._probe_fails()
        if bad:
            self._runners["restore"](**previous)
            raise ValueError(f"{self.name}: not restoring a state that predicts NaN or inf "
                             f"({bad} of {self.batch_size} probe scores); the weights are unchanged")

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
        non-finite or the state predicts NaN or inf on the probe batch: a
        checkpoint is the last good state."""
        state = self.save()
        bad = [k for k, v in state.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
        if bad:
            raise ValueError(f"not saving {path}: state tensor {bad[0]!r} contains NaN or inf")
        fails = self._probe_fails()
        if fails:
            raise ValueError(f"not saving {path}: the {self.name} state predicts NaN or inf "
                             f"({fails} of {self.batch_size} probe scores)")
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

    def _signature_inputs(self, key: str, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``inputs`` as exactly the arrays signature ``key`` takes (run_signature's checks)."""
        where = f"{self.name}: signature {key!r}"
        if not isinstance(inputs, Mapping):
            raise ValueError(f"{where}: inputs must be a mapping of name to array, got {type(inputs).__name__}")
        table = self._inputs[key]
        names = [name for name, _, _ in table]
        missing = [n for n in names if n not in inputs]
        extra = sorted(str(n) for n in inputs if n not in names)
        if missing or extra:
            raise ValueError(f"{where}: inputs must be exactly {names}; missing {missing}, unexpected {extra}")
        out = {}
        for name, shape, dtype in table:
            expected = f"{dtype.name}{list(shape)}"
            try:
                value = np.asarray(inputs[name])
            except Exception as err:  # ragged lists and the like
                raise ValueError(f"{where} input {name!r}: expected {expected}, got {type(inputs[name]).__name__} "
                                 f"that is not an array ({err})") from None
            got = f"{value.dtype.name}{list(value.shape)}"
            if value.dtype.kind not in "biuf":
                raise ValueError(f"{where} input {name!r}: expected {expected}, got {got}")
            if value.shape != shape:
                raise ValueError(f"{where} input {name!r}: expected {expected}, got {got}")
            if value.dtype != dtype:
                cast = _exact_cast(value, dtype)
                if cast is None:
                    raise ValueError(f"{where} input {name!r}: expected {expected}, got {got} whose values "
                                     f"{dtype.name} cannot hold exactly")
                value = cast
            out[name] = _contiguous(value)
        return out

    def _check_state(self, state: Mapping[str, Any], checked: "CheckedState | None" = None) -> dict[str, np.ndarray]:
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
            if checked is not None and value is checked.arrays.get(name):
                out[name] = value  # finite and contiguous: checked when ``checked`` was made
                continue
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ValueError(f"state tensor {name!r} contains NaN or inf")
            out[name] = _contiguous(value)
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


class CheckedState(Mapping):
    """A state :meth:`OnDeviceModel.check_state` checked (names, shapes,
    dtypes, finite), for models with the state ``fingerprint``; its arrays
    are read-only views (the arrays they view must not change either)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], fingerprint: str):
        self.arrays = {k: _read_only(v) for k, v in arrays.items()}
        self.fingerprint = fingerprint

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __iter__(self):
        return iter(self.arrays)

    def __len__(self) -> int:
        return len(self.arrays)


def _read_only(value: np.ndarray) -> np.ndarray:
    view = value.view()
    view.flags.writeable = False
    return view


def _compiled_model(content: bytes, num_threads: int | None):
    """LiteRT's CompiledModel on the CPU (XNNPACK) with ``num_threads``."""
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import Options

    options = Options(hardware_accelerators=HardwareAccelerator.CPU)
    if num_threads is not None:
        options.cpu_options.num_threads = num_threads
    return CompiledModel.from_buffer(content, options=options)


def _check_num_threads(value: Any) -> int | None:
    """None or an int >= 1 (not a bool, not 2.5), for both runtimes."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"num_threads must be None or an int >= 1, got {value!r}")
    return int(value)


def _contiguous(value: np.ndarray) -> np.ndarray:
    """C-contiguous, same shape (``np.ascontiguousarray`` turns a scalar into shape [1])."""
    return np.require(value, requirements="C")


def _exact_cast(value: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """``value`` as ``dtype`` when every element survives the round trip
    unchanged (NaN stays NaN), else None."""
    with np.errstate(all="ignore"):
        cast = value.astype(dtype)
        back = cast.astype(value.dtype)
    same = np.array_equal(back, value, equal_nan=value.dtype.kind == "f" and dtype.kind == "f")
    return cast if same else None


_stderr_lock = threading.Lock()
_stderr_users = 0  # contexts inside _stderr_silenced now (any thread)
_stderr_saved = -1  # the real fd 2 while they are


@contextlib.contextmanager
def _stderr_silenced(silence: bool):
    """Point the process's C-level stderr (fd 2) at /dev/null while LiteRT
    creates or runs a CompiledModel: it prints its accelerator and plugin
    registry there on creation (and an INFO line on some runs), and has no
    option to stop it. Process-wide while it lasts; counted, so overlapping
    uses from several threads restore the real stderr once, at the end.
    Python's own ``sys.stderr`` is flushed first."""
    global _stderr_users, _stderr_saved
    if not silence:
        yield
        return
    with _stderr_lock:
        if _stderr_users == 0:
            sys.stderr.flush()
            _stderr_saved = os.dup(2)
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 2)
        _stderr_users += 1
    try:
        yield
    finally:
        with _stderr_lock:
            _stderr_users -= 1
            if _stderr_users == 0:
                os.dup2(_stderr_saved, 2)
                os.close(_stderr_saved)


class _CompiledSignature:
    """One signature of a LiteRT ``CompiledModel``, called like the
    interpreter's signature runner (``runner(**inputs) -> {name: array}``).
    Buffers are made once; inputs are written and outputs read in the order
    of the signature's input/output lists, which is the buffers' order
    (checked against the buffers' own shapes here)."""

    def __init__(self, model, key: str, quiet: bool = True):
        self.model, self.key, self.quiet = model, key, quiet
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
        """Run the signature on exactly its named inputs, each of its exact
        dtype and static shape (``OnDeviceModel.run_signature`` checks and
        casts first); anything else raises ``ValueError``, never a cast."""
        names = [name for name, _ in self._inputs]
        if set(inputs) != set(names):
            raise ValueError(f"signature {self.key!r}: inputs must be exactly {names}, got {sorted(inputs)}")
        for (name, detail), buffer in zip(self._inputs, self._in_buffers):
            value = np.asarray(inputs[name])
            dtype, shape = np.dtype(detail["dtype"]), [int(d) for d in detail["shape"]]
            if value.dtype != dtype or list(value.shape) != shape:
                raise ValueError(f"signature {self.key!r} input {name!r}: expected {dtype.name}{shape}, "
                                 f"got {value.dtype.name}{list(value.shape)}")
            buffer.write(_contiguous(value))
        with _stderr_silenced(self.quiet):  # e.g. "Tracked constant output tensor num_restored" on each restore
            self.model.run_by_index(self.index, self._in_buffers, self._out_buffers)
        return {
            name: buffer.read(int(np.prod(detail["shape"], dtype=np.int64)), np.dtype(detail["dtype"])).reshape(detail["shape"])
            for (name, detail), buffer in zip(self._outputs, self._out_buffers)
        }


def _probe_features(spec: FeatureSpec, batch: int) -> dict[str, np.ndarray]:
    """A fixed batch of valid features: row ``r`` reads ids spread evenly over
    each table (0 and the last id included), full-length sequences, and dense
    values cycling through 0, 0.5 and 1."""
    out = {}
    for name in spec.names:
        shape, dtype = (batch, *spec.shape(name)[1:]), np.dtype(spec.dtype(name))
        cells = int(np.prod(shape))
        if dtype.kind == "f":
            out[name] = ((np.arange(cells) % 3) / 2).astype(dtype).reshape(shape)
        else:
            vocab = int(spec[name].vocab_size)
            out[name] = (np.arange(cells) * (vocab - 1) // max(cells - 1, 1)).astype(dtype).reshape(shape)
    return out


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
