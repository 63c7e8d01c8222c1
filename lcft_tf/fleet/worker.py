"""One fleet worker: the model, dataset and CoDA inputs it loaded once, and
the per-user work of every method (docs/pipeline.md).

For each user a device restores the cloud weights, fine-tunes ``epochs``
passes over its train samples in time order with raw labels (Local) or
corrected labels (Soft1 / Soft2 / Hard, computed by the file's ``correct``
signature) or on local plus retrieved samples (CoDA), then predicts its test
samples. Cloud = no fine-tuning. Every step runs in the LiteRT interpreter.

An executor starts a worker with :func:`start_worker` (its initializer) and
runs module-level task functions in it: :func:`run_chunk` for the fleet, and
any ``fn(worker, task)`` through :func:`call_with_worker` (the hard-table
search uses this). :func:`current_worker` is the public handle tests and
benchmarks use.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lcft_tf import methods
from lcft_tf._io import atomic_write, sha256
from lcft_tf.artifacts.coda_files import CodaInputs
from lcft_tf.artifacts.fleet_chunks import chunk_name, encode_chunk
from lcft_tf.artifacts.pack import CutPacks, PackCapacityError, PackCutter
from lcft_tf.artifacts.tflite import read_metadata
from lcft_tf.data.dataset import CTRDataset, UserView
from lcft_tf.device.coda_fine_tune import FineMatching, coda_fine_tune_and_predict, method_config, select_retrieved
from lcft_tf.device.fine_tune import fine_tune_and_predict
from lcft_tf.device.model import OnDeviceModel
from lcft_tf.device.submodel import SubmodelDevice
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.fleet.profile import PhaseClock

log = logging.getLogger(__name__)


def use_submodel(model_path: str | os.PathLike, mode: str, metadata: dict[str, Any] | None = None) -> bool:
    """Whether the fleet runs users on the submodel exported beside
    ``model_path`` (written only when a table exceeds its capacity);
    ``metadata``: the file's, when already read. Raises ``ValueError`` for
    mode ``on`` without a submodel."""
    if mode == "off":
        return False
    if (read_metadata(model_path) if metadata is None else metadata).get("submodel"):
        return True
    if mode == "on":
        raise ValueError(f"--device_submodel=on but {model_path} has no submodel (export with a "
                         "submodel_capacity below the largest vocabulary)")
    return False


@dataclasses.dataclass(frozen=True)
class ChunkPacks:
    """The packs of one chunk's users, cut at once (:class:`PackCutter`):
    device ``i`` is user ``first_user + i``; ``cut.features`` holds, remapped,
    the rows each device sees (its capped train samples from
    :attr:`CTRDataset.local_start`, then its test samples) with device ``i``'s
    at ``user_rows[i] : user_rows[i + 1]``, then each CoDA user's retrieved
    samples at ``retrieved_rows[u]`` (a ``(start, stop)``)."""

    cut: CutPacks
    first_user: int
    user_rows: np.ndarray  # int64 [users + 1]
    retrieved_rows: dict[int, tuple[int, int]]


@dataclasses.dataclass(frozen=True)
class WorkerSetup:
    """What a worker loads once (paths travel, never arrays, except an
    in-memory dataset for a worker in this process)."""

    model_path: str
    dataset: str | CTRDataset
    config: FleetConfig
    chunk_dir: str | None = None
    coda_dir: str | None = None
    in_child: bool = True  # another process: a start failure is raised by its tasks


class DeviceWorker:
    """One worker's devices: the CTR model (and its submodel), the cloud
    state every user restores, the dataset, and CoDA's classifier."""

    def __init__(self, setup: WorkerSetup):
        config = setup.config
        self.config = config
        self.device = OnDeviceModel(setup.model_path, num_threads=config.interpreter_threads)
        # checked and probed once here; every user then restores it without either
        self.state = self.device.check_state(self.device.save())
        self.device.restore(self.state)
        self.submodel = (SubmodelDevice(setup.model_path, self.state, num_threads=config.interpreter_threads)
                         if use_submodel(setup.model_path, config.submodel, self.device.metadata) else None)
        self.cutter = PackCutter(self.submodel.layout, self.state) if self.submodel else None
        self.dataset = setup.dataset if isinstance(setup.dataset, CTRDataset) else CTRDataset.load(setup.dataset)
        self.chunk_dir = Path(setup.chunk_dir) if setup.chunk_dir is not None else None
        self.coda = self.classifier = self.classifier_state = None
        if setup.coda_dir is not None:
            self.coda = CodaInputs.load(setup.coda_dir)
            self.classifier = OnDeviceModel(self.coda.classifier_path, num_threads=config.interpreter_threads)
            self.classifier_state = self.classifier.save()
            self.classifier.restore(self.classifier_state)  # probed once; restored per user without the probe
        # where the time goes (docs/scaling.md); returned beside each chunk, never inside it
        self.clock = PhaseClock()
        for device in (self.device, self.submodel and self.submodel.device, self.classifier):
            if device is not None:
                device.wrap_signatures(self.clock.wrap)

    @property
    def rolled_back_steps(self) -> int:
        """Train steps the model's guard dropped in this worker so far (both runtimes)."""
        return self.device.rolled_back_steps + (self.submodel.device.rolled_back_steps if self.submodel else 0)

    # -- one user ------------------------------------------------------------
    def retrieved(self, u: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """The samples the cloud retrieved for user ``u``: features, labels,
        their embeddings, and the embeddings of the user's own train samples."""
        ids = self.coda.retrieval.user(u)
        first, split = int(self.dataset.local_start[u]), int(self.dataset.split[u])  # the device's own (capped) data
        return self.dataset.take(ids), self.dataset.labels[ids], self.coda.embeddings[ids], self.coda.embeddings[first:split]

    def cut_packs(self, users: tuple[int, int], retrieved: dict[int, tuple] | None = None) -> ChunkPacks | None:
        """The packs of users ``[start, stop)`` at once, holding the ids of
        their train, test and (``retrieved``: user -> :meth:`retrieved`) CoDA
        samples; None without a submodel."""
        if self.cutter is None:
            return None
        start, stop = users
        seen_from, ends = self.dataset.local_start[start:stop], self.dataset.offsets[start + 1 : stop + 1]
        sizes = ends - seen_from  # the samples each device sees: capped train, then test
        user_rows = np.r_[0, np.cumsum(sizes)].astype(np.int64)
        index = np.repeat(seen_from - user_rows[:-1], sizes) + np.arange(user_rows[-1])
        owner = np.repeat(np.arange(stop - start), sizes)
        parts, owners, rows, at = [self.dataset.take(index)], [owner], {}, int(user_rows[-1])
        for u, (features, *_) in (retrieved or {}).items():
            n = len(next(iter(features.values())))
            parts.append(features)
            owners.append(np.full(n, u - start))
            rows[u], at = (at, at + n), at + n
        features = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        cut = self.cutter.cut(features, np.concatenate(owners), stop - start)
        return ChunkPacks(cut, start, user_rows, rows)

    def runner_for(self, u: int, view: UserView, retrieved,
                   packs: ChunkPacks | None = None) -> tuple[OnDeviceModel, dict, dict, dict, Any]:
        """``(device, state, train features, test features, retrieved)`` for
        user ``u``: the user's pack on the submodel (same predictions,
        docs/submodels.md), else the full model. ``packs``: the chunk's
        (:meth:`cut_packs`); without them the pack is cut for this user alone
        (:meth:`SubmodelDevice.pack`, the reference the chunk path equals)."""
        full = (self.device, self.state, view.train_features, view.test_features, retrieved)
        if self.submodel is None:
            return full
        try:  # the pack holds the rows of every sample the device will see, retrieved ones included
            if packs is None:
                pack = self.submodel.pack(view.train_features, view.test_features,
                                          *([retrieved[0]] if retrieved else []))
            else:
                state = packs.cut.state(u - packs.first_user)
        except PackCapacityError as err:  # "on": fail in one line; "auto": this user on the full model, counted
            if self.config.submodel == "on":
                raise ValueError(f"user {u}: {err}") from None
            log.warning("user %d runs on the full model: %s", u, err)
            return full
        if packs is None:
            if retrieved:
                retrieved = (pack.remap(retrieved[0]), *retrieved[1:])
            return (self.submodel.device, self.submodel.device.check_state(pack.state, self.state),
                    pack.remap(view.train_features), pack.remap(view.test_features), retrieved)
        i = u - packs.first_user
        a, b = int(packs.user_rows[i]), int(packs.user_rows[i + 1])
        s = a + int(self.dataset.split[u] - self.dataset.local_start[u])
        rows = lambda lo, hi: {k: v[lo:hi] for k, v in packs.cut.features.items()}
        if retrieved:
            retrieved = (rows(*packs.retrieved_rows[u]), *retrieved[1:])
        # checked once per user, restored once per method
        return self.submodel.device, self.submodel.device.check_state(state, self.state), rows(a, s), rows(s, b), retrieved

    def predict_user(self, u: int, view: UserView, stats: dict[str, Any], packs: ChunkPacks | None = None,
                     retrieved: tuple | None = None) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Every configured method's test predictions for user ``u`` and the
        kept retrieved samples per CoDA method; adds the user's device train
        steps and rolled-back steps per method, and the runtime it ran on, to
        ``stats`` (:func:`new_chunk_stats`). ``packs``: the chunk's
        (:meth:`cut_packs`, cut with ``retrieved``: :meth:`retrieved` of
        ``u``); without them the user's pack is cut alone."""
        config = self.config
        coda_methods = methods.of_kind(config.methods, "coda")
        if coda_methods and retrieved is None:
            retrieved = self.retrieved(u)
        clock = self.clock
        with clock.phase("pack"):
            runner, state, train, test, retrieved = self.runner_for(u, view, retrieved if coda_methods else None,
                                                                    packs)
        stats["submodel_users" if runner is not self.device else "full_users"] += 1
        predictions, kept = {}, {}
        matches: dict = {}  # the user's fine matching, shared by coda and coda_lcft
        for name in config.methods:
            method, rows = methods.get(name), len(view.train_labels)
            rolled_before = runner.rolled_back_steps
            if method.kind == "coda":
                with clock.phase("coda"):
                    result = self._coda(name, u, view, runner, state, train, test, retrieved, matches)
                predictions[name], kept[name] = result.predictions, result.kept
                rows += result.trained
            else:
                with clock.phase("correct"):
                    labels = None if method.kind == "cloud" else self.device.correct(view.train_labels,
                                                                                     method.correction)
                predictions[name] = fine_tune_and_predict(runner, state, train, labels, test, config.learning_rate,
                                                          config.epochs, clock.phase)
            if method.fine_tunes:
                stats["steps"][name] += config.epochs * -(-rows // self.device.batch_size)
            stats["rolled_back"][name] += runner.rolled_back_steps - rolled_before
        return predictions, kept

    def _coda(self, method: str, u: int, view: UserView, runner, state, train, test, retrieved,
              matches: dict):
        """One user's :class:`CodaResult` (test predictions, kept weight mass, rows trained).
        ``matches`` caches the user's fine matching: it depends on the keep
        rule and the classifier only, which ``coda`` and ``coda_lcft`` share."""
        features, labels, retrieved_embeddings, local_embeddings = retrieved
        coda = method_config(method, self.config.coda)
        matching = FineMatching(self.classifier, self.classifier_state, local_embeddings, retrieved_embeddings, seed=u)
        if coda.use_classifier and len(labels) and len(view.train_labels) and "match" not in matches:
            matches["match"] = select_retrieved(self.classifier, self.classifier_state, local_embeddings,
                                                retrieved_embeddings, coda, seed=u)
        matching.matched = matches.get("match")
        result = coda_fine_tune_and_predict(runner, state, train, view.train_labels, test, features, labels,
                                            self.config.learning_rate, self.config.epochs, coda, matching)
        return result

    # -- one chunk -----------------------------------------------------------
    def run_chunk(self, users: tuple[int, int]) -> dict[str, Any]:
        """Fine-tune users ``[start, stop)``; write their chunk file; return
        its manifest entry (``users``, ``sha256``, ``stats``: device train
        steps and runtimes) and ``profile``, where the worker's time went
        (:meth:`PhaseClock.take`; not part of the chunk or the manifest)."""
        began = time.perf_counter()
        config = self.config
        coda_methods = methods.of_kind(config.methods, "coda")
        retrieved = {u: self.retrieved(u) for u in range(*users)} if coda_methods else {}
        with self.clock.phase("pack"):  # every user's pack and remapped ids, once per chunk
            packs = self.cut_packs(users, retrieved)
        records: dict[str, list] = {"user": [], "local_ctr": [], "num_train": [], "num_test": [], "labels": []}
        predictions: dict[str, list] = {m: [] for m in config.methods}
        kept: dict[str, list] = {m: [] for m in coda_methods}
        stats = new_chunk_stats(config.methods)
        for u in range(*users):
            view = self.dataset.user(u)
            if len(view.test_labels) == 0:
                continue  # nothing to evaluate
            user_predictions, user_kept = self.predict_user(u, view, stats, packs, retrieved.get(u))
            for key, value in (("user", u), ("local_ctr", view.local_ctr), ("num_train", len(view.train_labels)),
                               ("num_test", len(view.test_labels)), ("labels", view.test_labels)):
                records[key].append(value)
            for m in config.methods:
                predictions[m].append(user_predictions[m])
            for m in coda_methods:
                kept[m].append(user_kept[m])
        arrays = {
            "user": np.asarray(records["user"], np.int64),
            "local_ctr": np.asarray(records["local_ctr"], np.float64),
            "num_train": np.asarray(records["num_train"], np.int64),
            "num_test": np.asarray(records["num_test"], np.int64),
            "labels": _concat(records["labels"], np.int8),
            **{f"pred.{m}": _concat(p, np.float32) for m, p in predictions.items()},
            **{f"kept.{m}": np.asarray(k, np.float64) for m, k in kept.items()},  # weight mass (= count for hard rules)
        }
        with self.clock.phase("write"):
            data = encode_chunk(users, arrays, stats)
            # no fsync (a few ms per chunk): the manifest's sha256 catches a chunk a crash left unwritten
            atomic_write(self.chunk_dir / chunk_name(users[0]), data, durable=False)
        return {"users": list(users), "sha256": sha256(data), "stats": stats,
                "profile": self.clock.take(time.perf_counter() - began)}


def new_chunk_stats(method_names) -> dict[str, Any]:
    """A chunk's statistics, zero: device train steps and steps the model's
    guard rolled back, per method; users on the submodel / the full model."""
    return {"steps": dict.fromkeys(method_names, 0), "rolled_back": dict.fromkeys(method_names, 0),
            "submodel_users": 0, "full_users": 0}


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


# -- the worker of this process, for executors' module-level task functions ------
_CURRENT: DeviceWorker | None = None
_START_ERROR: Exception | None = None


def start_worker(setup: WorkerSetup) -> None:
    """Executor initializer: load this process's :class:`DeviceWorker`.

    A failure here (a model file that no longer matches its metadata, bad
    interpreter threads) is kept and raised by every task instead: an
    initializer's exception would only break the process pool
    (``BrokenProcessPool``) and lose its message, while a task's exception
    reaches the caller whatever the executor."""
    global _CURRENT, _START_ERROR
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        _CURRENT, _START_ERROR = DeviceWorker(setup), None
    except Exception as err:  # raised again by current_worker(), in the caller's process
        if not setup.in_child:
            raise
        _CURRENT, _START_ERROR = None, err


def current_worker() -> DeviceWorker:
    """This process's worker; raises what :func:`start_worker` failed with,
    or ``RuntimeError`` before it was called."""
    if _START_ERROR is not None:
        raise _START_ERROR
    if _CURRENT is None:
        raise RuntimeError("no device worker in this process (start_worker was not called)")
    return _CURRENT


def stop_worker() -> None:
    """Drop this process's worker (a worker in the main process, after its tasks)."""
    global _CURRENT, _START_ERROR
    _CURRENT = _START_ERROR = None


def run_chunk(users: tuple[int, int]) -> dict[str, Any]:
    """Task function of the fleet: :meth:`DeviceWorker.run_chunk` in this process's worker."""
    return current_worker().run_chunk(users)


def call_with_worker(fn: Callable[[DeviceWorker, Any], Any], task: Any) -> Any:
    """Task function for any ``fn(worker, task)`` (module level, so that it
    pickles): runs it with this process's worker."""
    return fn(current_worker(), task)
