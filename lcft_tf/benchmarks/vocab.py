"""Vocabulary suite: the full model vs the per-device submodel at growing
item vocabularies (docs/submodels.md): file size, step / infer / restore
latency per runtime, the pack's size, and fleet users/s."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lcft_tf.benchmarks.timing import (interleaved, interpreter_memory, latency_stats, measure_memory_field,
                                       repeats_field, timed, warmup_field)
from lcft_tf.checks import positive
from lcft_tf.fleet.profile import format_profile

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class VocabBenchmarkConfig:
    """What the vocabulary suite exports and times.

    Raises ``ValueError`` on construction for an unknown model or runtime, a
    size or repeat count below 1, ``user_items`` + 1 over ``capacity``, or a
    negative ``warmup`` or ``fleet_users``.
    """

    models: tuple[str, ...] = dataclasses.field(default=("din", "wide_deep"), metadata={"help": "registry models."})
    vocab_sizes: tuple[int, ...] = dataclasses.field(
        default=(300, 20_000, 200_000, 1_000_000), metadata={"help": "item vocabularies to export and time (ids)."})
    capacity: int = dataclasses.field(default=4096, metadata={"help": "submodel rows per table."})
    batch_size: int = dataclasses.field(default=32, metadata={"help": "static batch of the exported files (samples)."})
    runtimes: tuple[str, ...] = dataclasses.field(
        default=("interpreter", "compiled"), metadata={"help": "LiteRT runtimes: interpreter and/or compiled."})
    user_items: int = dataclasses.field(
        default=200, metadata={"help": "distinct items in the benchmarked user's pack."})
    warmup: int = warmup_field(3)
    repeats: int = repeats_field(30)
    fleet_users: int = dataclasses.field(
        default=256, metadata={"help": "users of the fleet comparison (0: skip it); worker start-up is timed apart."})
    fleet_vocab_sizes: tuple[int, ...] = dataclasses.field(
        default=(300, 200_000, 1_000_000),
        metadata={"help": "item vocabularies of the fleet comparison: the full model at the first, submodels "
                          "at the others (the full model at 1M items takes minutes per 100 users)."})
    fleet_samples_per_user: float = dataclasses.field(
        default=40.0, metadata={"help": "mean synthetic samples per user of the fleet comparison."})
    fleet_repeats: int = dataclasses.field(
        default=5, metadata={"help": "timed passes of each fleet over its users, interleaved (A B C A B C ...) "
                                     "after one untimed pass each."})
    measure_memory: bool = measure_memory_field()
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the data and the initial weights."})

    def __post_init__(self) -> None:
        from lcft_tf.device.model import RUNTIMES
        from lcft_tf.models import check_names  # TensorFlow: imported on use

        check_names(self.models)
        positive("vocab_sizes", *self.vocab_sizes)
        positive("capacity", self.capacity)
        positive("batch_size", self.batch_size)
        positive("repeats", self.repeats)
        positive("user_items", self.user_items)
        if self.user_items + 1 > self.capacity:
            raise ValueError(f"user_items ({self.user_items}) + the padding row must fit capacity {self.capacity}")
        if not self.runtimes or any(r not in RUNTIMES for r in self.runtimes):
            raise ValueError(f"runtimes must be some of {RUNTIMES}, got {list(self.runtimes)}")
        if self.warmup < 0 or self.fleet_users < 0:
            raise ValueError("warmup and fleet_users must be >= 0")
        positive("fleet_vocab_sizes", *self.fleet_vocab_sizes)
        positive("fleet_repeats", self.fleet_repeats)


def _vocab_user(spec, n: int, items: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` samples of one user whose item ids come from ``items``: int32
    ids ``[n]`` / ``[n, length]``, float32 dense ``[n, dim]``."""
    out = {}
    for f in spec.sparse:
        out[f.name] = (rng.choice(items, n) if f.table == "item_id" else rng.integers(1, f.vocab_size, n)).astype(np.int32)
    for f in spec.sequences:
        out[f.name] = rng.choice(items, (n, f.length)).astype(np.int32)
    for f in spec.dense:
        out[f.name] = rng.random((n, f.dim)).astype(np.float32)
    return out


def _variants(path: Path, metadata: dict, runtime: str, batch: dict[str, np.ndarray]) -> dict[str, tuple]:
    """``{"full": ..., "submodel": ...}`` (the submodel only when the export
    wrote one), each ``(device, feed, restore, pack_bytes)``: the model, the
    batch as it takes it, one user's restore and the pack's size (bytes;
    None for the full model)."""
    from lcft_tf.artifacts.pack import make_pack
    from lcft_tf.device.model import OnDeviceModel
    from lcft_tf.device.submodel import SubmodelDevice

    full = OnDeviceModel(path, runtime=runtime)
    state = full.save()
    variants = {"full": (full, batch, lambda: full.restore(state), None)}
    if metadata["submodel"]:
        sub = SubmodelDevice(path, state, runtime=runtime)
        pack = sub.pack(batch)
        # a user's restore = cutting the pack from the global state + restoring it
        restore = lambda: sub.device.restore(make_pack(sub.layout, sub.global_state, batch).state)
        variants["submodel"] = (sub.device, pack.remap(batch), restore, len(pack.to_bytes()))
    return variants


def _step_times(device, feed: dict[str, np.ndarray], restore: Callable[[], None], train_extra: dict,
                config: VocabBenchmarkConfig) -> dict[str, float]:
    """Median times (``<step>_ms``) of train and infer at the static batch,
    infer_one on the first row, and one user's restore."""
    one = {k: v[:1] for k, v in feed.items()}
    fns = {
        "train": lambda: device.run_signature("train", {**feed, **train_extra}),
        "infer": lambda: device.run_signature("infer", feed),
        "infer_one": lambda: device.run_signature("infer_one", one),
        "restore": restore,
    }
    times = interleaved(fns, config.warmup, config.repeats)
    return {f"{k}_ms": latency_stats(v)["p50_ms"] for k, v in times.items()}


def benchmark_vocab(name: str, vocab: int, config: VocabBenchmarkConfig, workdir: Path) -> list[dict]:
    """Rows for one model at one item vocabulary: the full model and the
    submodel, per runtime. A row has ``model``, ``vocab``, ``variant``
    (full / submodel), ``runtime``, ``file_mib``, ``conversion_s``,
    ``pack_kib`` (None for the full model), the median ``train_ms``,
    ``infer_ms`` (batch B), ``infer_one_ms`` and per-user ``restore_ms``, and
    with ``measure_memory`` under the interpreter ``rss_mb`` (MiB)."""
    from lcft_tf import models
    from lcft_tf.artifacts.tflite import submodel_path
    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.data.synthetic import SyntheticConfig, synthetic_spec

    spec = synthetic_spec(SyntheticConfig(num_items=vocab, seed=config.seed))
    path = workdir / f"{name}_{vocab}.tflite"
    export = ExportConfig(batch_size=config.batch_size, submodel_capacity=config.capacity)
    metadata, conversion = timed(export_tflite, models.build(name, spec, seed=config.seed), path, export)
    rng = np.random.default_rng(config.seed)
    items = rng.choice(np.arange(1, spec["item_id"].vocab_size), min(config.user_items, vocab), replace=False)
    batch = _vocab_user(spec, config.batch_size, items, rng)
    labels = (rng.random(config.batch_size) < 0.5).astype(np.float32)
    train_extra = {"label": labels, "sample_weight": np.ones(config.batch_size, np.float32),
                   "learning_rate": np.float32(0.01)}
    rows = []
    for runtime in config.runtimes:
        for variant, (device, feed, restore, pack_bytes) in _variants(path, metadata, runtime, batch).items():
            file = submodel_path(path) if variant == "submodel" else path
            row = {"model": name, "vocab": vocab, "variant": variant, "runtime": runtime,
                   "file_mib": file.stat().st_size / 2**20, "conversion_s": conversion,
                   "pack_kib": None if pack_bytes is None else pack_bytes / 1024,
                   **_step_times(device, feed, restore, train_extra, config)}
            if config.measure_memory and runtime == "interpreter":
                meta = json.loads(file.with_suffix(".json").read_text())
                row["rss_mb"] = interpreter_memory(file, 1, meta)["interpreter_rss_mb"]
            rows.append(row)
    return rows


def _fleet_worker(name: str, vocab: int, mode: str, config: VocabBenchmarkConfig, workdir: Path):
    """``(worker, seconds to start it)``: a fleet worker (the public
    :class:`~lcft_tf.fleet.worker.DeviceWorker`) of an untrained ``name`` at
    ``vocab`` items (the timing does not depend on the weights), methods
    cloud and local, submodel ``mode``, one interpreter thread."""
    from lcft_tf import models
    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.data.synthetic import SyntheticConfig, generate
    from lcft_tf.fleet.config import FleetConfig
    from lcft_tf.fleet.worker import DeviceWorker, WorkerSetup

    data_dir = workdir / f"data_{vocab}"
    if not data_dir.exists():
        generate(SyntheticConfig(num_users=config.fleet_users, num_items=vocab, seed=config.seed,
                                 mean_samples_per_user=config.fleet_samples_per_user)).save(data_dir)
    path = workdir / f"fleet_{name}_{vocab}.tflite"
    if not path.exists():
        from lcft_tf.data.dataset import CTRDataset

        data = CTRDataset.load(data_dir)
        export_tflite(models.build(name, data.spec, seed=config.seed), path,
                      ExportConfig(batch_size=config.batch_size, global_ctr=data.global_ctr,
                                   submodel_capacity=config.capacity))
    chunks = workdir / f"chunks_{name}_{vocab}_{mode}"
    chunks.mkdir(exist_ok=True)
    setup = WorkerSetup(str(path), str(data_dir), FleetConfig(methods=("cloud", "local"), workers=1, submodel=mode),
                        str(chunks), in_child=False)
    return timed(DeviceWorker, setup)


def vocab_fleets(name: str, config: VocabBenchmarkConfig, workdir: Path) -> list[dict[str, Any]]:
    """Fleet users/s of ``name``: the full model at the first of
    ``fleet_vocab_sizes``, submodels at the others, each a worker in this
    process running every user in chunks of 32 (the fleet's own
    ``run_chunk``: packs, restores, fine-tunes, chunk files). One untimed
    pass each, then ``fleet_repeats`` rounds timing every fleet once in turn,
    the order rotated each round. Returns one dict per fleet: ``model``,
    ``vocab``, ``variant``, ``start_seconds`` (the worker's start-up: loading
    the files and the dataset, O(catalogue), once per worker), ``users``,
    ``users_per_s`` (one per round), their ``median``/``min``/``max``, the
    users on the submodel / the full model, and ``profile`` (the timed
    passes' :func:`lcft_tf.fleet.profile.summarize`)."""
    from lcft_tf.artifacts.fleet_chunks import add_stats
    from lcft_tf.fleet.profile import summarize

    vocabs = config.fleet_vocab_sizes
    plan = [("full", vocabs[0], "off")] + [("submodel", v, "on") for v in vocabs[1:]]
    fleets = []
    for variant, vocab, mode in plan:
        worker, start = _fleet_worker(name, vocab, mode, config, workdir)
        fleets.append({"model": name, "vocab": vocab, "variant": variant, "start_seconds": start,
                       "worker": worker, "users_per_s": [], "profile": {}, "stats": {}})

    def one_pass(fleet: dict[str, Any], record: bool) -> None:
        worker = fleet["worker"]
        users = worker.dataset.num_users
        began = time.perf_counter()
        for a in range(0, users, 32):
            entry = worker.run_chunk((a, min(a + 32, users)))
            if record:
                add_stats(fleet["profile"], entry["profile"])
                add_stats(fleet["stats"], entry["stats"])
        if record:
            fleet["users_per_s"].append(users / (time.perf_counter() - began))

    for fleet in fleets:
        one_pass(fleet, record=False)
    for r in range(config.fleet_repeats):
        for fleet in fleets[r % len(fleets):] + fleets[: r % len(fleets)]:
            one_pass(fleet, record=True)
    out = []
    for fleet in fleets:
        ups = fleet["users_per_s"]
        out.append({k: fleet[k] for k in ("model", "vocab", "variant", "start_seconds", "users_per_s")}
                   | {"users": fleet["worker"].dataset.num_users, "median": float(np.median(ups)), "min": min(ups),
                      "max": max(ups), "users_on_submodel": fleet["stats"].get("submodel_users", 0),
                      "users_on_full_model": fleet["stats"].get("full_users", 0),
                      "profile": summarize(fleet["profile"])})
    return out


def run_vocab_benchmark(config: VocabBenchmarkConfig, workdir: Path) -> dict[str, Any]:
    """Every model at every vocabulary (:func:`benchmark_vocab`) and, unless
    ``fleet_users`` is 0, its fleets (:func:`vocab_fleets`); files under
    ``workdir``. Returns ``{"config", "rows", "fleet", "goals"}``
    (:func:`vocab_goals`)."""
    rows, fleets = [], []
    for name in config.models:
        for vocab in config.vocab_sizes:
            log.info("vocab benchmark: %s at %d items", name, vocab)
            rows += benchmark_vocab(name, vocab, config, workdir)
        if config.fleet_users:
            log.info("vocab benchmark: %s fleets at %s items", name, list(config.fleet_vocab_sizes))
            fleets += vocab_fleets(name, config, workdir)
    return {"config": dataclasses.asdict(config), "rows": rows, "fleet": fleets, "goals": vocab_goals(rows, fleets)}


def vocab_goals(rows: list[dict], fleets: list[dict]) -> dict[str, Any]:
    """The issue's targets as measured ratios (no pass/fail: timings are
    machine-dependent): submodel step at the largest vocabulary over the full
    step at the smallest, the slowest per-user submodel restore (ms), and per
    submodel fleet its users/s over the full fleet's at the smallest
    vocabulary, taken round by round (both timed in the same round) with
    their median, min and max, and its workers' interpreter share. Keys
    ``<model>/<runtime>`` and ``<model>/fleet``."""
    out: dict[str, Any] = {}
    pick = lambda **kw: [r for r in rows if all(r[k] == v for k, v in kw.items())]
    for model in sorted({r["model"] for r in rows} | {f["model"] for f in fleets}):
        for runtime in sorted({r["runtime"] for r in rows}):
            vocabs = sorted({r["vocab"] for r in pick(model=model, runtime=runtime)})
            small = pick(model=model, runtime=runtime, vocab=vocabs[0], variant="full")
            big = pick(model=model, runtime=runtime, vocab=vocabs[-1], variant="submodel")
            subs = pick(model=model, runtime=runtime, variant="submodel")
            out[f"{model}/{runtime}"] = {
                f"submodel_step_at_{vocabs[-1]}_over_full_step_at_{vocabs[0]}":
                    big[0]["train_ms"] / small[0]["train_ms"] if big and small else None,
                "max_submodel_restore_ms": max((r["restore_ms"] for r in subs), default=None),
            }
        base = next((f for f in fleets if f["model"] == model and f["variant"] == "full"), None)
        subs = [f for f in fleets if f["model"] == model and f["variant"] == "submodel"]
        if base and subs:
            goal = {}
            for f in subs:
                ratios = [a / b for a, b in zip(f["users_per_s"], base["users_per_s"])]
                goal[f"submodel_at_{f['vocab']}_over_full_at_{base['vocab']}"] = {
                    "median": float(np.median(ratios)), "min": min(ratios), "max": max(ratios)}
                goal[f"interpreter_share_at_{f['vocab']}"] = f["profile"].get("signature_share")
            out[f"{model}/fleet"] = goal
    return out


def format_vocab_table(result: dict[str, Any]) -> str:
    """:func:`run_vocab_benchmark`'s result as text: a ``|``-separated row
    per file variant (MiB, KiB, ms; ``-`` where absent), a line per fleet
    comparison, and the goals as JSON."""
    cols = ("model", "vocab", "variant", "runtime", "file_mib", "pack_kib", "train_ms", "infer_ms", "infer_one_ms",
            "restore_ms", "rss_mb")
    fmt = lambda v: "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
    lines = [" | ".join(cols)] + [" | ".join(fmt(r.get(c)) for c in cols) for r in result["rows"]]
    for f in result["fleet"]:
        lines.append(f"fleet {f['model']} {f['vocab']} {f['variant']}: users/s median {f['median']:.0f} "
                     f"(min {f['min']:.0f}, max {f['max']:.0f}; {len(f['users_per_s'])} runs of {f['users']} users), "
                     f"start {f['start_seconds']:.2f} s; {format_profile(f['profile'])}")
    lines.append("goals: " + json.dumps(result["goals"], indent=1))
    return "\n".join(lines)
