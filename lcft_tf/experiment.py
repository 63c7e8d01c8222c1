"""The main job: cloud training -> .tflite -> device fleet -> metrics, report, figures.

``run_experiment`` writes ``<output_dir>/<name>/``:

* ``dataset/``                 the dataset, memory-mappable by the workers
* ``<model>_seed<k>/``         ``<model>.keras``, ``<model>.tflite`` + ``.json``,
                               ``cloud.json`` (training + hard search report),
                               ``fleet/`` (per-chunk results; resumable)
* ``results.json``             every number and the config that produced it
* ``report.md``                Table 2 (mean ± std over seeds) and the figures
* ``fig1_local_ctr.png``, ``fig2_auc_by_drift.png``, ``fig3_user_changes.png``
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from lcft_tf import __version__
from lcft_tf._io import atomic_write, to_json
from lcft_tf.cloud.hard import HardSearchConfig
from lcft_tf.cloud.train import CloudConfig
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.data.synthetic import SyntheticConfig
from lcft_tf.device.fleet import METHODS, FleetConfig, simulate
from lcft_tf.evaluation.report import Grouping, auc_table, summarize, write_report

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    dataset: str = "synthetic"
    data_dir: str | None = None
    data_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # MovieLens / Amazon options
    cache_dir: str | None = None
    synthetic: SyntheticConfig = SyntheticConfig()
    max_users: int | None = None  # a seeded random sample of users, for quick runs
    models: tuple[str, ...] = ("din", "wide_deep")
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0,)
    cloud: CloudConfig = CloudConfig()
    fleet: FleetConfig = FleetConfig()
    hard: HardSearchConfig = HardSearchConfig()
    export_batch_size: int = 32
    output_dir: str = "runs"
    name: str | None = None
    resume: bool = False

    def __post_init__(self) -> None:
        from lcft_tf.models import REGISTRY

        unknown = [m for m in self.models if m not in REGISTRY]
        if unknown or not self.models:
            raise ValueError(f"unknown models {unknown}; choose from {sorted(REGISTRY)}")
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        object.__setattr__(self, "fleet", dataclasses.replace(self.fleet, methods=tuple(self.methods)))

    @property
    def run_name(self) -> str:
        return self.name or self.dataset


def load_dataset(config: ExperimentConfig) -> CTRDataset:
    """The dataset the config names, limited to ``max_users`` if set."""
    if config.dataset == "synthetic":
        from lcft_tf.data.synthetic import generate

        dataset = generate(config.synthetic)
    else:
        from lcft_tf.data import load_real_dataset

        dataset = load_real_dataset(config.dataset, config.data_dir, config.cache_dir, **config.data_options)
    if config.max_users is not None and config.max_users < dataset.num_users:
        rng = np.random.default_rng(config.synthetic.seed)
        dataset = dataset.subset_users(np.sort(rng.choice(dataset.num_users, config.max_users, replace=False)))
    return dataset


def _cloud_stage(model_name: str, seed: int, dataset: CTRDataset, config: ExperimentConfig, run_dir: Path) -> dict:
    """Train, export and (for Hard) grid-search; reuse finished work on resume."""
    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.cloud.hard import search_hard_table
    from lcft_tf.cloud.train import save_cloud_model, train_cloud

    marker = run_dir / "cloud.json"
    if config.resume and marker.exists():
        return json.loads(marker.read_text())
    started = time.perf_counter()
    model = train_cloud(model_name, dataset, dataclasses.replace(config.cloud, seed=seed))
    trained = time.perf_counter() - started
    save_cloud_model(model, run_dir)
    export = ExportConfig(
        batch_size=config.export_batch_size, learning_rate=config.fleet.learning_rate, global_ctr=dataset.global_ctr
    )
    path = run_dir / f"{model_name}.tflite"
    export_tflite(model, path, export)
    hard = None
    if "hard" in config.methods:
        table, hard = search_hard_table(
            path, dataset, dataclasses.replace(config.hard, seed=seed), config.fleet.learning_rate, config.fleet.epochs
        )
        export_tflite(model, path, dataclasses.replace(export, hard_table=table))
    info = {"model": model_name, "seed": seed, "train_seconds": round(trained, 2), "hard_search": hard}
    atomic_write(marker, to_json(info))
    return info


def run_experiment(config: ExperimentConfig, executor=None) -> dict[str, Any]:
    """Run every model x seed; ``executor`` overrides the fleet's (see
    :mod:`lcft_tf.device.fleet`)."""
    out = Path(config.output_dir) / config.run_name
    out.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config)
    summary = dataset.summary()
    dataset_dir = out / "dataset"
    saved = dataset_dir / "dataset.json"
    if not (config.resume and saved.exists() and CTRDataset.load(dataset_dir).summary() == summary):
        dataset.save(dataset_dir)
    global_ctr = dataset.global_ctr
    log.info("dataset %s", summary)

    runs: dict[str, dict[int, dict[str, Any]]] = {}
    fleets: dict[str, dict[int, Any]] = {}
    for model_name in config.models:
        for seed in config.seeds:
            run_dir = out / f"{model_name}_seed{seed}"
            cloud = _cloud_stage(model_name, seed, dataset, config, run_dir)
            fleet = simulate(
                run_dir / f"{model_name}.tflite",
                dataset_dir,
                run_dir / "fleet",
                config.fleet,
                resume=config.resume,
                executor=executor,
            )
            fleets.setdefault(model_name, {})[seed] = fleet
            runs.setdefault(model_name, {})[seed] = {"fleet": fleet.stats, "cloud": cloud}

    report = summarize(fleets, global_ctr, config.methods, Grouping.from_info(dataset.info))
    results = {
        "package_version": __version__,
        "config": dataclasses.asdict(config),
        "dataset": summary,
        "global_ctr": global_ctr,
        "summary": report,
        "runs": {m: {str(s): ev for s, ev in r.items()} for m, r in runs.items()},
    }
    results = json.loads(to_json(results))  # what the file holds: NaN -> null
    atomic_write(out / "results.json", to_json(results))
    notes = [
        f"Dataset **{config.dataset}**: {summary['users']} users, {summary['samples']} samples. "
        f"Device fine-tuning: lr {config.fleet.learning_rate}, {config.fleet.epochs} epoch(s), "
        f"batch {config.export_batch_size}, all in the LiteRT interpreter."
    ]
    write_report(out, {"title": f"LCFT experiment: {config.run_name}", "dataset": config.dataset, "notes": notes}, report)
    results["table"] = auc_table(report, config.dataset)
    return results

