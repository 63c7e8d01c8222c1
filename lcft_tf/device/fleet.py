"""Many phones: every user fine-tunes the cloud model on their own samples.

For each user a device restores the cloud weights, fine-tunes ``epochs``
passes over its train samples in time order with raw labels (Local) or
corrected labels (Soft1 / Soft2 / Hard, computed by the file's ``correct``
signature), then predicts its test samples. Cloud = no fine-tuning. Every
step runs in the LiteRT interpreter through :class:`OnDeviceModel`.

Each worker process loads the model once and ``restore``s the cloud weights
per user and method (docs/pipeline.md). Work is split into chunks of users;
each finished chunk is written atomically under ``<out>/chunks/`` as a
safetensors file (no pickle), and the parent records its user range and
sha256 in the manifest ``<out>/fleet.json``. A run resumed with
``resume=True`` reuses only chunks the manifest lists with a matching
checksum, and only if the manifest's config hash equals this run's; unknown
or damaged chunk files are recomputed with a warning naming the file. The
executor is pluggable: serial, a local process pool, or a Ray actor pool
(:mod:`lcft_tf.device.ray_executor`, docs/scaling.md), all behind the same
``map_unordered``; the cloud's hard-table search runs its fine-tunes as tasks
on the same executors (:func:`search_user_grid`). Workers exit when their
parent dies, so a killed run leaves no orphans writing into its folder.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_bytes

from lcft_tf._io import atomic_write, sha256, to_json
from lcft_tf.cloud.submodel import PackCapacityError
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.device.coda import METHOD_CONFIGS, CodaConfig, coda_fine_tune_and_predict, method_config, select_retrieved
from lcft_tf.device.model import OnDeviceModel
from lcft_tf.stages import ConfigChangedError, changed_fields, config_hash
from lcft_tf.checks import learning_rate

log = logging.getLogger(__name__)

# The one list of methods: Cloud, Local and LCFT's corrections, then CoDA's.
SUBMODEL_MODES = ("auto", "on", "off")
EXECUTORS = ("auto", "serial", "process", "ray")
CORRECTION = {"local": "none", "soft1": "soft1", "soft2": "soft2", "hard": "hard"}
LCFT_METHODS = ("cloud", *CORRECTION)
CODA_METHODS = tuple(METHOD_CONFIGS)
METHODS = LCFT_METHODS + CODA_METHODS
DEFAULT_METHODS = LCFT_METHODS


@dataclasses.dataclass(frozen=True)
class FleetConfig:
    methods: tuple[str, ...] = DEFAULT_METHODS
    learning_rate: float = 0.01
    epochs: int = 1
    users_per_chunk: int = 32
    workers: int = 0  # 0: one per CPU core (under Ray: the cluster's CPUs)
    interpreter_threads: int = 1
    # CoDA's device options (keep rule, classifier training); the methods
    # set use_classifier / correction themselves (lcft_tf.device.coda).
    coda: CodaConfig = CodaConfig()
    # Per-device submodels (docs/submodels.md): "auto" uses the exported
    # <name>.sub.tflite when there is one, "on" requires it, "off" never.
    submodel: str = "auto"
    executor: str = "auto"  # auto: serial for one worker, else the process pool
    ray_address: str | None = None  # None: a local Ray started for the run

    # Where and how the fleet runs; its numbers do not depend on these.
    NOT_IN_KEY = ("workers", "executor", "ray_address")

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; choose from {list(EXECUTORS)}")
        if self.ray_address is not None and self.executor != "ray":
            raise ValueError(f"ray_address {self.ray_address!r} needs executor 'ray', got {self.executor!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"unknown or repeated fleet methods {list(self.methods)}; choose from {METHODS}")
        learning_rate(self.learning_rate)
        if self.epochs < 0 or self.users_per_chunk < 1 or self.workers < 0:
            raise ValueError("epochs >= 0, users_per_chunk >= 1 and workers >= 0 required")
        if self.submodel not in SUBMODEL_MODES:
            raise ValueError(f"submodel must be one of {SUBMODEL_MODES}, got {self.submodel!r}")

    def key(self) -> dict[str, Any]:
        """The fields a fleet's numbers depend on (its stage key)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.NOT_IN_KEY}


# -- executors ---------------------------------------------------------------
class Executor(Protocol):
    def map_unordered(
        self, initializer: Callable[..., None], initargs: tuple, fn: Callable[[Any], Any], tasks: list
    ) -> Iterator[Any]: ...

    def close(self) -> None: ...


class SerialExecutor:
    """Runs every task in this process (tests, debugging, one core)."""

    def close(self) -> None:
        pass

    def map_unordered(self, initializer, initargs, fn, tasks):
        initializer(*initargs)
        for task in tasks:
            yield fn(task)


class ProcessExecutor:
    """A local pool of spawned processes (no fork: the parent may hold TF)."""

    def __init__(self, workers: int = 0):
        self.workers = workers or os.cpu_count() or 1

    def close(self) -> None:
        pass

    def map_unordered(self, initializer, initargs, fn, tasks):
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=min(self.workers, max(len(tasks), 1)),
            mp_context=context,
            initializer=initializer,
            initargs=initargs,
        ) as pool:
            futures = [pool.submit(fn, task) for task in tasks]
            try:
                for future in concurrent.futures.as_completed(futures):
                    yield future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def default_executor(config: FleetConfig) -> Executor:
    """The executor ``config.executor`` names (``close()`` it when done: a
    Ray executor may have started a local Ray)."""
    if config.executor == "ray":
        from lcft_tf.device.ray_executor import RayExecutor

        return RayExecutor(config.workers, config.ray_address)
    workers = config.workers or os.cpu_count() or 1
    if config.executor == "serial" or (config.executor == "auto" and workers == 1):
        return SerialExecutor()
    return ProcessExecutor(workers)


# -- one user ------------------------------------------------------------------
def fine_tune_and_predict(
    device: OnDeviceModel,
    cloud_state: dict[str, np.ndarray],
    train_features: dict[str, np.ndarray],
    train_labels: np.ndarray | None,
    test_features: dict[str, np.ndarray],
    learning_rate: float,
    epochs: int,
) -> np.ndarray:
    """Test predictions of one device after restoring the cloud weights and
    fine-tuning ``epochs`` passes on ``train_labels`` (None: no fine-tuning)."""
    device.restore(cloud_state)
    if train_labels is not None and len(train_labels):
        for _ in range(epochs):
            device.train(train_features, train_labels, learning_rate=learning_rate)
    return device.infer(test_features)


_WORKER: dict[str, Any] = {}
MANIFEST_FORMAT = "lcft-fleet-v2"
PARENT_POLL_SECONDS = 0.5


def exit_with_parent(poll_seconds: float = PARENT_POLL_SECONDS) -> None:
    """Start a daemon thread that ends this worker process as soon as its
    parent is gone (reparented), so a killed run leaves no orphans."""
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(poll_seconds)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(model_path: str, dataset_dir: str | CTRDataset, config: FleetConfig, chunk_dir: str | None,
                 in_child: bool = True, coda_dir: str | None = None) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if in_child:
        exit_with_parent()
    device = OnDeviceModel(model_path, num_threads=config.interpreter_threads)
    state = device.save()
    submodel = None
    if use_submodel(model_path, config.submodel):
        from lcft_tf.cloud.submodel import SubmodelDevice

        submodel = SubmodelDevice(model_path, state, num_threads=config.interpreter_threads)
    _WORKER.update(
        device=device,
        submodel=submodel,
        state=state,
        dataset=dataset_dir if isinstance(dataset_dir, CTRDataset) else CTRDataset.load(dataset_dir),
        config=config,
        chunk_dir=Path(chunk_dir) if chunk_dir is not None else None,
    )
    if coda_dir is not None:
        from lcft_tf.cloud.coda import CodaInputs

        inputs = CodaInputs.load(coda_dir)
        classifier = OnDeviceModel(inputs.classifier_path, num_threads=config.interpreter_threads)
        _WORKER.update(coda=inputs, classifier=classifier, classifier_state=classifier.save())


def _coda_config(method: str, base: CodaConfig) -> CodaConfig:
    """The method's CoDA config: the user's options, the method's own
    classifier / correction choice."""
    own = {f.name: getattr(base, f.name) for f in dataclasses.fields(base) if f.name not in ("use_classifier", "correction")}
    return method_config(method, **own)


def _retrieved(u: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The samples the cloud retrieved for user ``u``: features, labels, their
    embeddings, and the embeddings of the user's own train samples."""
    dataset: CTRDataset = _WORKER["dataset"]
    inputs = _WORKER["coda"]
    ids = inputs.retrieval.user(u)
    first, split = int(dataset.offsets[u]), int(dataset.split[u])
    return dataset.take(ids), dataset.labels[ids], inputs.embeddings[ids], inputs.embeddings[first:split]


def _coda_predictions(method: str, u: int, view, config: FleetConfig, runner: OnDeviceModel, state, train_features,
                      test_features, retrieved, matches: dict) -> tuple[np.ndarray, int]:
    """One user's CoDA test predictions and the number of kept samples.
    ``matches`` caches the user's fine matching: it depends on the keep rule
    and the classifier only, which ``coda`` and ``coda_lcft`` share."""
    features, labels, retrieved_embeddings, local_embeddings = retrieved
    coda = _coda_config(method, config.coda)
    if coda.use_classifier and len(labels) and len(view.train_labels) and "match" not in matches:
        matches["match"] = select_retrieved(_WORKER["classifier"], _WORKER["classifier_state"], local_embeddings,
                                            retrieved_embeddings, coda, seed=u)
    result = coda_fine_tune_and_predict(
        runner, state, train_features, view.train_labels, test_features, features, labels,
        config.learning_rate, config.epochs, coda,
        _WORKER["classifier"], _WORKER["classifier_state"], local_embeddings, retrieved_embeddings, seed=u,
        matched=matches.get("match"),
    )
    return result.predictions, result.kept


def use_submodel(model_path: str | os.PathLike, mode: str) -> bool:
    """Whether the fleet runs users on the submodel exported beside
    ``model_path`` (written only when a table exceeds its capacity)."""
    if mode == "off":
        return False
    metadata = json.loads(Path(model_path).with_suffix(".json").read_text())
    if metadata.get("submodel"):
        return True
    if mode == "on":
        raise ValueError(f"--device_submodel=on but {model_path} has no submodel (export with a "
                         "submodel_capacity below the largest vocabulary)")
    return False


def chunk_name(start: int) -> str:
    return f"{start:08d}.safetensors"


def _run_chunk(users: tuple[int, int]) -> dict[str, Any]:
    """Fine-tune users ``[start, stop)``; write their chunk file; return its
    manifest entry plus the device train steps taken."""
    device: OnDeviceModel = _WORKER["device"]
    dataset: CTRDataset = _WORKER["dataset"]
    config: FleetConfig = _WORKER["config"]
    records: dict[str, list] = {"user": [], "local_ctr": [], "num_train": [], "num_test": [], "labels": []}
    predictions: dict[str, list] = {m: [] for m in config.methods}
    kept: dict[str, list] = {m: [] for m in config.methods if m in CODA_METHODS}
    submodel = _WORKER["submodel"]
    rolled = lambda: device.rolled_back_steps + (submodel.device.rolled_back_steps if submodel else 0)
    steps, rolled_back, packed, on_full = 0, rolled(), 0, 0
    for u in range(*users):
        view = dataset.user(u)
        if len(view.test_labels) == 0:
            continue  # nothing to evaluate
        # The user's pack on the submodel (same predictions, docs/submodels.md), else the full model.
        runner, state, train_features, test_features = device, _WORKER["state"], view.train_features, view.test_features
        retrieved = _retrieved(u) if kept else None  # CoDA: the cloud's samples for this user
        matches: dict = {}  # the user's fine matching, shared by coda and coda_lcft
        if submodel is not None:
            try:
                # The pack holds the rows of every sample the device will see, retrieved ones included.
                pack = submodel.pack(view.train_features, view.test_features, *([retrieved[0]] if retrieved else []))
            except PackCapacityError as err:  # "on": fail in one line; "auto": this user on the full model, counted
                if config.submodel == "on":
                    raise ValueError(f"user {u}: {err}") from None
                log.warning("user %d runs on the full model: %s", u, err)
                pack = None
            if pack is not None:
                runner, state = submodel.device, pack.state
                train_features, test_features = pack.remap(train_features), pack.remap(test_features)
                if retrieved:
                    retrieved = (pack.remap(retrieved[0]), *retrieved[1:])
        packed += runner is not device
        on_full += runner is device
        records["user"].append(u)
        records["local_ctr"].append(view.local_ctr)
        records["num_train"].append(len(view.train_labels))
        records["num_test"].append(len(view.test_labels))
        records["labels"].append(view.test_labels)
        for method in config.methods:
            rows = len(view.train_labels)
            if method in CODA_METHODS:
                prediction, extra = _coda_predictions(method, u, view, config, runner, state, train_features,
                                                      test_features, retrieved, matches)
                kept[method].append(extra)
                rows += extra
            else:
                labels = None if method == "cloud" else device.correct(view.train_labels, CORRECTION[method])
                prediction = fine_tune_and_predict(
                    runner, state, train_features, labels, test_features, config.learning_rate, config.epochs,
                )
            predictions[method].append(prediction)
            if method != "cloud":
                steps += config.epochs * -(-rows // device.batch_size)
    arrays = {
        "user": np.asarray(records["user"], np.int64),
        "local_ctr": np.asarray(records["local_ctr"], np.float64),
        "num_train": np.asarray(records["num_train"], np.int64),
        "num_test": np.asarray(records["num_test"], np.int64),
        "labels": _concat(records["labels"], np.int8),
        **{f"pred.{m}": _concat(p, np.float32) for m, p in predictions.items()},
        **{f"kept.{m}": np.asarray(k, np.int64) for m, k in kept.items()},
    }
    data = safetensors_bytes(arrays, metadata={"format": MANIFEST_FORMAT, "users": json.dumps(list(users))})
    atomic_write(_WORKER["chunk_dir"] / chunk_name(users[0]), data)
    return {"users": list(users), "sha256": sha256(data), "steps": steps,
            "rolled_back": rolled() - rolled_back, "submodel_users": packed, "full_users": on_full}


def search_user_grid(task: tuple[int, int, tuple[tuple[float, float], ...]]) -> dict[str, Any]:
    """The hard-table search's work for one user (:mod:`lcft_tf.cloud.hard`):
    for each ``(alpha, beta)`` of the grid, restore the cloud weights, fine-tune
    on the first ``cut`` train samples with targets ``alpha`` (positives) /
    ``beta`` (negatives), and predict the remaining train samples (the
    validation part). Returns the predictions ``[len(grid), n - cut]``."""
    user, cut, grid = task
    device: OnDeviceModel = _WORKER["device"]
    config: FleetConfig = _WORKER["config"]
    view = _WORKER["dataset"].user(user)
    fit = {k: v[:cut] for k, v in view.train_features.items()}
    val = {k: v[cut:] for k, v in view.train_features.items()}
    y = view.train_labels[:cut]
    predictions = [
        fine_tune_and_predict(device, _WORKER["state"], fit, np.where(y == 1, alpha, beta).astype(np.float32), val,
                              config.learning_rate, config.epochs)
        for alpha, beta in grid
    ]
    return {"user": user, "predictions": np.stack(predictions)}


def map_device_tasks(
    model_path: str | os.PathLike,
    dataset: str | os.PathLike | CTRDataset,
    config: FleetConfig,
    fn: Callable[[Any], Any],
    tasks: list,
    executor: Executor | None = None,
) -> Iterator[Any]:
    """``fn`` over ``tasks`` on device workers that loaded ``model_path`` and
    ``dataset`` once (results unordered); serial unless ``executor`` is given.
    An in-memory dataset is only for the serial executor (never ship arrays)."""
    executor = executor or SerialExecutor()
    in_child = not isinstance(executor, SerialExecutor)
    if in_child and isinstance(dataset, CTRDataset):
        raise ValueError("parallel device tasks need the saved dataset's folder, not an in-memory dataset")
    yield from executor.map_unordered(
        _init_worker, (str(model_path), dataset if isinstance(dataset, CTRDataset) else str(dataset), config, None, in_child),
        fn, tasks)


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


# -- results -------------------------------------------------------------------
@dataclasses.dataclass
class FleetResults:
    """Per-user and per-test-sample outputs of a fleet run."""

    users: np.ndarray  # [U] dataset user index
    local_ctr: np.ndarray  # [U] w_i (NaN: no train samples)
    num_train: np.ndarray
    num_test: np.ndarray
    labels: np.ndarray  # [S] test labels, users' blocks in order
    predictions: dict[str, np.ndarray]  # method -> [S]
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    kept: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # CoDA method -> [U] kept samples

    @property
    def sample_users(self) -> np.ndarray:
        return np.repeat(self.users, self.num_test)


class ChunkError(ValueError):
    """A chunk file that is missing, damaged or not what the manifest says."""


def read_chunk(path: Path, expected_sha256: str, users: tuple[int, int]) -> dict[str, np.ndarray]:
    """The arrays of one chunk file, checked against its manifest entry."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ChunkError(f"{path}: cannot read ({err.strerror})") from None
    if sha256(data) != expected_sha256:
        raise ChunkError(f"{path}: checksum differs from the manifest (damaged or replaced)")
    try:
        arrays = safetensors_load(data)
    except (SafetensorError, ValueError) as err:
        raise ChunkError(f"{path}: not a readable chunk ({err})") from None
    inside = arrays.get("user")
    if inside is None or (len(inside) and not (users[0] <= inside.min() and inside.max() < users[1])):
        raise ChunkError(f"{path}: holds users outside its manifest range {list(users)}")
    return arrays


def load_results(out_dir: str | os.PathLike, methods: Iterable[str]) -> FleetResults:
    """The fleet's results from the chunks its manifest lists (checksummed,
    covering the manifest's user range exactly once)."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / "fleet.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no fleet results under {out_dir} (no fleet.json)")
    manifest = json.loads(manifest_path.read_text())
    chunks = sorted(manifest["chunks"].items(), key=lambda kv: kv[1]["users"][0])
    expected, stop = manifest["users"]
    for name, entry in chunks:
        if entry["users"][0] != expected:
            break
        expected = entry["users"][1]
    if expected != stop:
        raise ChunkError(f"{manifest_path}: chunks do not cover users {manifest['users']} (gap at user {expected})")
    parts = [read_chunk(out_dir / "chunks" / name, e["sha256"], tuple(e["users"])) for name, e in chunks]
    cat = lambda key: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)
    return FleetResults(
        users=cat("user"),
        local_ctr=cat("local_ctr"),
        num_train=cat("num_train"),
        num_test=cat("num_test"),
        labels=cat("labels"),
        predictions={m: cat(f"pred.{m}") for m in methods},
        kept={m: cat(f"kept.{m}") for m in methods if m in CODA_METHODS},
    )


def fleet_key(model_sha256: str, dataset: dict, users: tuple[int, int], config: FleetConfig) -> dict[str, Any]:
    """What a fleet's numbers depend on (not where it runs)."""
    return {"model_sha256": model_sha256, "dataset": dataset, "users": list(users), "config": config.key()}


def _verified_chunks(manifest: dict[str, Any], chunk_dir: Path) -> dict[str, dict]:
    """Manifest entries whose files are intact; everything else in
    ``chunk_dir`` is removed with a warning (it will be recomputed)."""
    good = {}
    for name, entry in manifest.get("chunks", {}).items():
        try:
            read_chunk(chunk_dir / name, entry["sha256"], tuple(entry["users"]))
            good[name] = entry
        except ChunkError as err:
            log.warning("recomputing: %s", err)
    for path in chunk_dir.iterdir():
        if path.name not in good and not path.name.startswith("."):
            log.warning("recomputing: %s is not a verified chunk of this run's manifest; removed", path)
            path.unlink()
    return good


def simulate(
    model_path: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: FleetConfig | None = None,
    resume: bool = False,
    executor: Executor | None = None,
    users: tuple[int, int] | None = None,
    coda_dir: str | os.PathLike | None = None,
    name: str = "fleet",
) -> FleetResults:
    """Run the fleet over the users saved in ``dataset_dir`` (see
    :meth:`CTRDataset.save`); ``users`` limits it to a ``[start, stop)``
    range. CoDA methods need ``coda_dir`` (:func:`lcft_tf.cloud.coda.prepare_coda`).
    ``name`` labels the progress bar and the summary log line."""
    from tqdm.auto import tqdm

    config = config or FleetConfig()
    out_dir, model_path = Path(out_dir), Path(model_path)
    dataset = CTRDataset.load(dataset_dir)
    start, stop = users or (0, dataset.num_users)
    if not 0 <= start <= stop <= dataset.num_users:
        raise ValueError(f"user range {users} is not inside [0, {dataset.num_users}]")
    metadata = json.loads(model_path.with_suffix(".json").read_text())
    if "hard" in config.methods and not metadata["correction"]["hard_table"]:
        raise ValueError(f"method 'hard' needs a hard correction table in {model_path}")
    coda = None
    if any(m in CODA_METHODS for m in config.methods):
        if coda_dir is None:
            raise ValueError(f"methods {[m for m in config.methods if m in CODA_METHODS]} need the cloud's CoDA files "
                             "(coda_dir, see lcft_tf.cloud.coda.prepare_coda)")
        from lcft_tf.cloud.coda import FILES
        from lcft_tf.stages import digest_files

        coda = digest_files(Path(coda_dir), FILES)
    # The workers' OnDeviceModel checks the file against this sha256.
    key = fleet_key(metadata["tflite_sha256"], dataset.summary(), (start, stop), config)
    if coda is not None:
        key["coda_files"] = coda
    submodel = use_submodel(model_path, config.submodel)  # "on" without a submodel file fails here, in one line
    if submodel:  # "auto" depends on the files: a resume must not mix chunks of the two models
        sub_meta = (model_path.parent / metadata["submodel"]["file"]).with_suffix(".json")
        key["submodel_sha256"] = json.loads(sub_meta.read_text())["tflite_sha256"]
    chunk_dir = out_dir / "chunks"
    manifest_path = out_dir / "fleet.json"
    manifest = {"format": MANIFEST_FORMAT, "hash": config_hash(key), "key": json.loads(to_json(key)),
                "users": [start, stop], "chunks": {}}
    if resume and manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        if previous.get("hash") != manifest["hash"]:
            changes = changed_fields(previous.get("key", {}), manifest["key"]) or ["manifest format"]
            raise ConfigChangedError(f"cannot resume the fleet in {out_dir}: {'; '.join(changes[:4])}")
        chunk_dir.mkdir(parents=True, exist_ok=True)
        manifest["chunks"] = _verified_chunks(previous, chunk_dir)
    elif chunk_dir.exists():
        shutil.rmtree(chunk_dir)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest_path, to_json(manifest))

    done = {tuple(e["users"]) for e in manifest["chunks"].values()}
    tasks = [
        (a, min(a + config.users_per_chunk, stop))
        for a in range(start, stop, config.users_per_chunk)
        if (a, min(a + config.users_per_chunk, stop)) not in done
    ]
    owned = executor is None
    executor = executor or default_executor(config)
    in_child = not isinstance(executor, SerialExecutor)
    began = time.perf_counter()
    steps = rolled_back = packed = on_full = 0
    # Results reach this process whatever the executor, so the bar (users/s
    # and ETA; off when stderr is not a terminal) is updated here.
    try:
        with tqdm(total=stop - start, initial=(stop - start) - sum(b - a for a, b in tasks), desc=name, unit="user",
                  disable=None) as bar:
            for entry in executor.map_unordered(
                _init_worker, (str(model_path), str(dataset_dir), config, str(chunk_dir), in_child,
                               None if coda is None else str(coda_dir)), _run_chunk, tasks
            ):
                steps += entry.pop("steps")
                rolled_back += entry.pop("rolled_back")
                packed += entry.pop("submodel_users", 0)
                on_full += entry.pop("full_users", 0)
                manifest["chunks"][chunk_name(entry["users"][0])] = entry
                atomic_write(manifest_path, to_json(manifest))  # a chunk counts once the manifest lists it
                bar.update(entry["users"][1] - entry["users"][0])
    finally:
        if owned:
            executor.close()
    seconds = time.perf_counter() - began
    results = load_results(out_dir, config.methods)
    simulated = sum(b - a for a, b in tasks)
    results.stats = {
        "seconds": seconds,
        "users_simulated_now": simulated,
        "users_per_second": simulated / seconds if seconds > 0 and simulated else None,
        "device_train_steps": steps,
        "device_steps_rolled_back": rolled_back,  # non-finite steps the device dropped (docs/loss_and_correction.md)
        "device_steps_per_second": steps / seconds if seconds > 0 and steps else None,
        "resumed_chunks": len(done),
        # which runtime model ran (docs/submodels.md): the per-device submodel or the full tables
        "submodel": {"mode": "on" if submodel else "off", "requested": config.submodel,
                     "capacity": metadata["submodel"]["capacity"] if submodel else None,
                     "users_on_submodel": packed,
                     "users_on_full_model": on_full},
        "manifest_hash": manifest["hash"],
        **({"coda_mean_kept": {m: float(k.mean()) if len(k) else None for m, k in results.kept.items()}}
           if results.kept else {}),
    }
    log.info("%s: %d users in %.1f s (%s users/s), %d chunks reused", name, simulated, seconds,
             f"{results.stats['users_per_second']:.1f}" if results.stats["users_per_second"] else "-", len(done))
    return results
