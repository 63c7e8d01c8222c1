"""The fleet run: every user's device fine-tunes, chunk by chunk, resumable.

Work is split into chunks of users; each finished chunk is written
atomically by a worker (:mod:`lcft_tf.fleet.worker`) and the parent records
its user range and sha256 in the manifest
(:mod:`lcft_tf.artifacts.fleet_chunks`). A run resumed with ``resume=True``
reuses only chunks the manifest lists with a matching checksum, and only if
the manifest's key hash (:mod:`lcft_tf.keys`, as for pipeline stages) equals
this run's; unknown or damaged chunk files are recomputed with a warning
naming the file. Workers exit when their parent dies, so a killed run leaves
no orphans writing into its folder (docs/pipeline.md, docs/scaling.md).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from lcft_tf import methods
from lcft_tf._io import atomic_write, to_json
from lcft_tf.artifacts.coda_files import FILES as CODA_FILES
from lcft_tf.artifacts.coda_files import RETRIEVAL, Retrieval, check_retrieval
from lcft_tf.artifacts.fleet_chunks import (CHUNKS, MANIFEST, MANIFEST_FORMAT, ChunkError, FleetResults, add_stats,
                                            chunk_name, load_results, read_chunk, read_manifest)
from lcft_tf.artifacts.tflite import read_metadata, submodel_file
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.fleet import worker
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.fleet.executors import Executor, SerialExecutor, is_in_process, make_executor
from lcft_tf.fleet.profile import format_profile, summarize
from lcft_tf.keys import ConfigChangedError, changed_fields, config_hash, digest_files

log = logging.getLogger(__name__)


def fleet_key(model_sha256: str, dataset: dict, users: tuple[int, int], config: FleetConfig) -> dict[str, Any]:
    """What a fleet's numbers depend on (not where it runs)."""
    return {"model_sha256": model_sha256, "dataset": dataset, "users": list(users), "config": config.key()}


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
    chunk_task: Callable[[tuple[int, int]], dict[str, Any]] = worker.run_chunk,
) -> FleetResults:
    """Run the fleet over the users saved in ``dataset_dir``
    (:meth:`CTRDataset.save`) and return every user's test predictions.

    ``users`` limits it to a ``[start, stop)`` range. CoDA methods need
    ``coda_dir`` (:func:`lcft_tf.cloud.coda_prepare.prepare_coda`). ``executor``
    defaults to the one ``config`` names (closed afterwards). ``name`` labels
    the progress bar and the summary log line. ``chunk_task`` is the task run
    per chunk in the worker (default :func:`lcft_tf.fleet.worker.run_chunk`;
    tests wrap it). Raises ``ValueError`` for a bad user range or a method
    whose inputs are missing, :class:`ConfigChangedError` when resuming a
    manifest with another key."""
    config = config or FleetConfig()
    out_dir, model_path = Path(out_dir), Path(model_path)
    dataset = CTRDataset.load(dataset_dir)
    start, stop = users or (0, dataset.num_users)
    if not 0 <= start <= stop <= dataset.num_users:
        raise ValueError(f"user range {users} is not inside [0, {dataset.num_users}]")
    key, submodel = _key(model_path, dataset, (start, stop), config, coda_dir)
    manifest = _open_manifest(out_dir, key, (start, stop), resume)
    done = {tuple(e["users"]) for e in manifest["chunks"].values()}
    tasks = [(a, min(a + config.users_per_chunk, stop)) for a in range(start, stop, config.users_per_chunk)]
    tasks = [t for t in tasks if t not in done]
    setup = worker.WorkerSetup(str(model_path), str(dataset_dir), config, str(out_dir / CHUNKS),
                               None if coda_dir is None else str(coda_dir))
    began = time.perf_counter()
    now, profile = _run_tasks(out_dir, manifest, setup, tasks, executor, chunk_task, name, stop - start)
    seconds = time.perf_counter() - began
    results = load_results(out_dir, config.methods, methods.of_kind(config.methods, "coda"))
    simulated = sum(b - a for a, b in tasks)
    results.stats = _fleet_stats(results, now, seconds, simulated, len(done), config, submodel)
    results.stats["manifest_hash"] = manifest["hash"]
    # where the workers' time went, over the chunks computed now (docs/scaling.md); not part of any hash
    results.stats["profile"] = summarize(profile)
    log.info("%s: %d users in %.1f s (%s users/s), %d chunks reused; %s", name, simulated, seconds,
             f"{results.stats['users_per_second']:.1f}" if results.stats["users_per_second"] else "-", len(done),
             format_profile(results.stats["profile"]))
    return results


def _fleet_stats(results: FleetResults, now: dict, seconds: float, simulated: int, resumed: int,
                 config: FleetConfig, submodel: dict | None) -> dict[str, Any]:
    """The fleet's statistics: counts over every chunk (resumed ones
    included, from ``results.stats``), rates over the chunks computed now."""
    every = results.stats
    steps_now = sum(now.get("steps", {}).values())
    return {
        "seconds": seconds,
        "users_simulated_now": simulated,
        "users_per_second": simulated / seconds if seconds > 0 and simulated else None,
        "device_train_steps": sum(every.get("steps", {}).values()),
        # steps the model's guard dropped (non-finite; docs/loss_and_correction.md), per method too
        "device_steps_rolled_back": sum(every.get("rolled_back", {}).values()),
        "device_train_steps_by_method": every.get("steps", {}),
        "device_steps_rolled_back_by_method": every.get("rolled_back", {}),
        "device_steps_per_second": steps_now / seconds if seconds > 0 and steps_now else None,
        "resumed_chunks": resumed,
        # which runtime model ran (docs/submodels.md): the per-device submodel or the full tables
        "submodel": {"mode": "on" if submodel else "off", "requested": config.submodel,
                     "capacity": submodel["capacity"] if submodel else None,
                     "users_on_submodel": every.get("submodel_users", 0),
                     "users_on_full_model": every.get("full_users", 0)},
        **({"coda_mean_kept": {m: float(k.mean()) if len(k) else None for m, k in results.kept.items()}}
           if results.kept else {}),
    }


def _key(model_path: Path, dataset: CTRDataset, users: tuple[int, int], config: FleetConfig,
         coda_dir) -> tuple[dict[str, Any], dict | None]:
    """The manifest key (the workers' OnDeviceModel checks the file against
    its sha256) and the submodel section when users run on a submodel."""
    metadata = read_metadata(model_path)
    if "hard" in config.methods and not metadata["correction"]["hard_table"]:
        raise ValueError(f"method 'hard' needs a hard correction table in {model_path}")
    key = fleet_key(metadata["tflite_sha256"], dataset.summary(), users, config)
    coda_methods = methods.of_kind(config.methods, "coda")
    if coda_methods:
        if coda_dir is None:
            raise ValueError(f"methods {list(coda_methods)} need the cloud's CoDA files "
                             "(coda_dir, see lcft_tf.cloud.coda_prepare.prepare_coda)")
        key["coda_files"] = digest_files(Path(coda_dir), CODA_FILES)
        retrieval = Path(coda_dir) / RETRIEVAL
        check_retrieval(Retrieval.load(retrieval), dataset.offsets, dataset.split, str(retrieval))
    submodel = None
    if worker.use_submodel(model_path, config.submodel, metadata):  # "on" without a submodel fails here, in one line
        # "auto" depends on the files: a resume must not mix chunks of the two models
        key["submodel_sha256"] = read_metadata(submodel_file(model_path, metadata))["tflite_sha256"]
        submodel = metadata["submodel"]
    return key, submodel


def _open_manifest(out_dir: Path, key: dict[str, Any], users: tuple[int, int], resume: bool) -> dict[str, Any]:
    """A fresh manifest for ``key`` on disk, holding the verified chunks of
    the previous one when resuming with the same key."""
    chunk_dir, manifest_path = out_dir / CHUNKS, out_dir / MANIFEST
    manifest = {"format": MANIFEST_FORMAT, "hash": config_hash(key), "key": json.loads(to_json(key)),
                "users": list(users), "chunks": {}}
    previous = None
    if resume and manifest_path.exists():
        try:
            previous = read_manifest(out_dir)
        except ChunkError as err:  # damaged like any stage output: recomputed, with a warning naming it
            log.warning("recomputing every chunk: %s", err)
    if previous is not None:
        if previous["hash"] != manifest["hash"]:
            changes = changed_fields(previous["key"], manifest["key"]) or ["manifest format"]
            raise ConfigChangedError(f"cannot resume the fleet in {out_dir}: {'; '.join(changes[:4])}")
        chunk_dir.mkdir(parents=True, exist_ok=True)
        manifest["chunks"] = _verified_chunks(previous, chunk_dir)
    elif chunk_dir.exists():
        shutil.rmtree(chunk_dir)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest_path, to_json(manifest))
    return manifest


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


def _run_tasks(out_dir: Path, manifest: dict, setup: worker.WorkerSetup, tasks: list, executor: Executor | None,
               chunk_task: Callable, name: str, total: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the pending chunks, listing each in the manifest as it arrives;
    returns the statistics and the worker profiles (kept out of the
    manifest: timings differ run to run) of the chunks computed now, summed."""
    from tqdm.auto import tqdm

    owned = executor is None
    executor = executor or make_executor(setup.config.executor, setup.config.workers, setup.config.ray_address)
    totals: dict[str, Any] = {}
    profile: dict[str, Any] = {}
    # Results reach this process whatever the executor, so the bar (users/s
    # and ETA; off when stderr is not a terminal) is updated here.
    writer = _ManifestWriter(out_dir / MANIFEST, manifest)
    try:
        with tqdm(total=total, initial=total - sum(b - a for a, b in tasks), desc=name, unit="user",
                  disable=None) as bar:
            for entry in _on_workers(setup, executor, chunk_task, tasks):
                add_stats(profile, entry.pop("profile", None) or {})
                add_stats(totals, entry["stats"])
                manifest["chunks"][chunk_name(entry["users"][0])] = entry
                writer.changed()  # a chunk counts once the manifest lists it
                bar.update(entry["users"][1] - entry["users"][0])
    finally:
        writer.write()  # every chunk received, also when a worker failed or the run was interrupted
        if owned:
            executor.close()
    return totals, profile


class _ManifestWriter:
    """Writes the manifest as chunks arrive, but at most so often that
    writing takes ~1/10 of the time: the manifest grows with the chunks, so
    writing it after every chunk is quadratic (measured: 0.35 s per write at
    5,625 chunks, ~16 min for a 180k-user fleet). A kill loses at most the
    chunks of the last interval (recomputed on resume)."""

    MIN_SECONDS = 1.0

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path, self.manifest = path, manifest
        self.pending, self.last, self.cost = False, time.perf_counter(), 0.0

    def changed(self) -> None:
        """A chunk was added: write now if the interval has passed."""
        self.pending = True
        if time.perf_counter() - self.last >= max(self.MIN_SECONDS, 10 * self.cost):
            self.write()

    def write(self) -> None:
        """Write the manifest if a chunk was added since the last write."""
        if self.pending:
            began = time.perf_counter()
            atomic_write(self.path, to_json(self.manifest))
            self.last = time.perf_counter()
            self.cost, self.pending = self.last - began, False


def _on_workers(setup: worker.WorkerSetup, executor: Executor, fn: Callable[[Any], Any], tasks: list) -> Iterator[Any]:
    """``fn`` over ``tasks`` on ``executor``'s workers, each started from
    ``setup``; a worker in this process is dropped when the tasks end."""
    setup = dataclasses.replace(setup, in_child=not is_in_process(executor))
    try:
        yield from executor.map_unordered(worker.start_worker, (setup,), fn, tasks)
    finally:
        if not setup.in_child:
            worker.stop_worker()


def map_device_tasks(
    model_path: str | os.PathLike,
    dataset: str | os.PathLike | CTRDataset,
    config: FleetConfig,
    fn: Callable[[worker.DeviceWorker, Any], Any],
    tasks: list,
    executor: Executor | None = None,
) -> Iterator[Any]:
    """``fn(worker, task)`` over ``tasks`` on device workers that loaded
    ``model_path`` and ``dataset`` once (results unordered); serial unless
    ``executor`` is given. ``fn`` must be a module-level function (it is
    pickled by reference). An in-memory dataset is only for the serial
    executor (never ship arrays); raises ``ValueError`` otherwise."""
    executor = executor or SerialExecutor()
    if isinstance(dataset, CTRDataset) and not is_in_process(executor):
        raise ValueError("parallel device tasks need the saved dataset's folder, not an in-memory dataset")
    setup = worker.WorkerSetup(str(model_path), dataset if isinstance(dataset, CTRDataset) else str(dataset), config)
    yield from _on_workers(setup, executor, functools.partial(worker.call_with_worker, fn), tasks)
