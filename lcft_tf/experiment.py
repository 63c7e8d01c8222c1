"""The main job: cloud training -> .tflite -> device fleet -> metrics, report, figures.

``run_experiment`` writes ``<output_dir>/<name>/`` (docs/pipeline.md):

* ``run.json``                 the plan: every stage's config key and hash
* ``dataset/``                 the dataset, memory-mappable by the workers
* ``<model>_seed<k>/cloud/``   ``<model>.keras``
* ``<model>_seed<k>/hard/``    the hard-table grid search (its own export + ``hard.json``)
* ``<model>_seed<k>/coda/``    CoDA's embeddings, retrieval and sample classifier
* ``<model>_seed<k>/export/``  ``<model>.tflite`` + ``.json`` (with the hard table)
* ``<model>_seed<k>/fleet/``   per-chunk results + manifest (resumable)
* ``results.json``             every number, the config and the stage hashes
* ``report.md`` and figures

Every stage is keyed by a hash of its config and of the stages it reads
(:mod:`lcft_tf.stages`). A folder that already holds a run is only reused
with ``resume=True`` (finished stages whose hashes match; a changed config
is refused naming the field, before anything is written) or replaced with
``overwrite=True``. The folder is locked for the whole run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from lcft_tf import __version__
from lcft_tf._io import atomic_write, to_json
from lcft_tf.cloud.coda import ClassifierConfig
from lcft_tf.cloud.export import ExportConfig
from lcft_tf.cloud.hard import HardSearchConfig
from lcft_tf.cloud.retrieval import RetrievalConfig
from lcft_tf.cloud.train import CloudConfig
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.data.synthetic import SyntheticConfig
from lcft_tf.device.fleet import CODA_METHODS, DEFAULT_METHODS, FleetConfig, default_executor, simulate
from lcft_tf.evaluation.report import Grouping, auc_table, summarize, write_report
from lcft_tf.stages import ConfigChangedError, RunLock, Stage, canonical, changed_fields, config_hash

log = logging.getLogger(__name__)

RUN_FORMAT = "lcft-run-v2"
DATASETS = ("synthetic", "movielens", "amazon")


class RunExistsError(ValueError):
    """The run folder already holds a run and neither resume nor overwrite was asked."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    dataset: str = "synthetic"
    data_dir: str | None = None
    data_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # MovieLens / Amazon options
    cache_dir: str | None = None
    synthetic: SyntheticConfig = SyntheticConfig()
    max_users: int | None = None  # a seeded random sample of users, for quick runs
    models: tuple[str, ...] = ("din", "wide_deep")
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] = (0, 1, 2)  # cloud-training seeds; tables report mean ± std over them
    cloud: CloudConfig = CloudConfig()
    fleet: FleetConfig = FleetConfig()
    hard: HardSearchConfig = HardSearchConfig()
    # How the device step is compiled (batch, optimizer); its learning rate
    # is the fleet's and its global CTR the dataset's.
    export: ExportConfig = ExportConfig()
    # CoDA's cloud side (used when a CoDA method runs): retrieval and the
    # sample classifier every device starts from.
    retrieval: RetrievalConfig = RetrievalConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    output_dir: str = "runs"
    name: str | None = None
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        from lcft_tf.models import REGISTRY

        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose from {list(DATASETS)}")
        unknown = [m for m in self.models if m not in REGISTRY]
        if unknown or not self.models:
            raise ValueError(f"unknown models {unknown or '(none given)'}; choose from {sorted(REGISTRY)}")
        if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers >= 0, got {list(self.seeds)}")
        if "cloud" not in self.methods:
            raise ValueError(f"methods must include 'cloud' (every gain is measured against it), got {list(self.methods)}")
        if self.max_users is not None and self.max_users < 1:
            raise ValueError(f"max_users must be >= 1, got {self.max_users}")
        coda = [m for m in self.methods if m in CODA_METHODS]
        flat = [m for m in self.models if not REGISTRY[m].needs_embeddings]
        if coda and flat:
            raise ValueError(f"CoDA ({', '.join(coda)}) retrieves with the model's embeddings; {', '.join(flat)} has none")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        object.__setattr__(self, "fleet", dataclasses.replace(self.fleet, methods=tuple(self.methods)))

    @property
    def run_name(self) -> str:
        """``--name``, else the dataset and, for raw files, their folder's name."""
        if self.name:
            return self.name
        return self.dataset if not self.data_dir else f"{self.dataset}-{Path(self.data_dir).resolve().name}"


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


# -- the plan: every stage's key, computed from the config alone ---------------
def _export_config(config: ExperimentConfig, global_ctr: float | None = None, hard_table=None) -> ExportConfig:
    return dataclasses.replace(config.export, learning_rate=config.fleet.learning_rate,
                               global_ctr=0.5 if global_ctr is None else global_ctr, hard_table=hard_table)


def plan_stages(config: ExperimentConfig, out: Path) -> dict[str, Stage]:
    """Every stage of the run with its key (config + upstream stage hashes)."""
    data_key = {
        "dataset": config.dataset,
        "data_dir": str(Path(config.data_dir).resolve()) if config.data_dir else None,
        "data_options": config.data_options,
        "synthetic": config.synthetic if config.dataset == "synthetic" else None,
        "max_users": config.max_users,
        "subset_seed": config.synthetic.seed if config.max_users else None,
    }
    stages = {"dataset": Stage("dataset", out / "dataset", data_key)}
    export = {k: v for k, v in dataclasses.asdict(_export_config(config)).items() if k not in ("global_ctr", "hard_table")}
    fleet = config.fleet.key()
    for model in config.models:
        for seed in config.seeds:
            run = f"{model}_seed{seed}"
            cloud = Stage(f"{run}/cloud", out / run / "cloud", {
                "dataset": stages["dataset"].hash, "model": model,
                "cloud": dataclasses.replace(config.cloud, seed=seed)})
            stages[cloud.name] = cloud
            hard_hash = None
            if "hard" in config.methods:
                hard = Stage(f"{run}/hard", out / run / "hard", {
                    "cloud": cloud.hash, "export": export,
                    "hard": dataclasses.replace(config.hard, seed=seed),
                    "device": {"learning_rate": config.fleet.learning_rate, "epochs": config.fleet.epochs}})
                stages[hard.name] = hard
                hard_hash = hard.hash
            exported = Stage(f"{run}/export", out / run / "export", {"cloud": cloud.hash, "hard": hard_hash, "export": export})
            stages[exported.name] = exported
            coda_hash = None
            if any(m in CODA_METHODS for m in config.methods):
                coda = Stage(f"{run}/coda", out / run / "coda", {
                    "cloud": cloud.hash, "retrieval": dataclasses.replace(config.retrieval, seed=seed),
                    "classifier": config.classifier})
                stages[coda.name] = coda
                coda_hash = coda.hash
            stages[f"{run}/fleet"] = Stage(f"{run}/fleet", out / run / "fleet", {
                "export": exported.hash, "dataset": stages["dataset"].hash, "coda": coda_hash, "fleet": fleet})
    return stages


def _check_run_folder(config: ExperimentConfig, out: Path, stages: dict[str, Stage]) -> None:
    """Decide, before anything is written, whether this run may use ``out``."""
    plan_path = out / "run.json"
    present = [p for p in out.iterdir() if p.name != ".lock"] if out.is_dir() else []
    if not present:
        return
    if config.overwrite:
        log.warning("overwriting %s", out)
        for p in present:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return
    if not config.resume:
        raise RunExistsError(
            f"{out} already holds a run; pass --resume to continue it, --overwrite to replace it, or another --name"
        )
    if not plan_path.is_file():
        raise RunExistsError(f"cannot resume {out}: it has no run.json (not a run of this version); use --overwrite")
    previous = json.loads(plan_path.read_text())
    if previous.get("format") != RUN_FORMAT:
        raise RunExistsError(f"cannot resume {out}: run format {previous.get('format')!r}; use --overwrite")
    old = previous.get("stages", {})
    for name, stage in stages.items():  # upstream first: the first change is the cause
        if name in old and old[name]["hash"] != stage.hash:
            changes = changed_fields(old[name]["key"], stage.key) or ["(unknown)"]
            raise ConfigChangedError(
                f"cannot resume {out}: stage {name} changed ({'; '.join(changes[:4])}); "
                "use another --name, or --overwrite to start the run again"
            )
    added, dropped = sorted(set(stages) - set(old)), sorted(set(old) - set(stages))
    if added or dropped:
        raise ConfigChangedError(
            f"cannot resume {out}: the run's stages differ (new {added[:3]}, gone {dropped[:3]}); "
            "use another --name, or --overwrite to start the run again"
        )


def _digest(stage: Stage) -> str:
    return config_hash(stage.outputs())


def _dataset_stage(config: ExperimentConfig, stage: Stage) -> tuple[CTRDataset, bool]:
    """The run's dataset (reused from the folder when intact); True if built now."""
    if stage.reusable():
        return CTRDataset.load(stage.directory), False
    dataset = load_dataset(config)
    if stage.directory.exists():
        shutil.rmtree(stage.directory)
    dataset.save(stage.directory)
    stage.commit([p.name for p in stage.directory.iterdir()], {"summary": dataset.summary()})
    return CTRDataset.load(stage.directory), True


def _model_stages(model_name: str, seed: int, dataset: CTRDataset, config: ExperimentConfig,
                  stages: dict[str, Stage], rebuilt: bool, executor=None) -> tuple[Path, dict[str, Any], bool]:
    """Cloud training, hard search and export of one model x seed, each reused
    when its stage is intact; returns the exported file, a report, and whether
    anything was rebuilt (the fleet must then start afresh)."""
    import keras

    from lcft_tf.cloud.export import export_tflite
    from lcft_tf.cloud.hard import search_hard_table
    from lcft_tf.cloud.train import save_cloud_model, train_cloud
    from lcft_tf.correction import HardCorrectionTable

    run = f"{model_name}_seed{seed}"
    cloud, exported = stages[f"{run}/cloud"], stages[f"{run}/export"]
    hard = stages.get(f"{run}/hard")
    info: dict[str, Any] = {"model": model_name, "seed": seed}
    cloud.inputs = {"dataset": _digest(stages["dataset"])}
    model = None
    if rebuilt or not cloud.reusable():
        rebuilt = True
        started = time.perf_counter()
        model = train_cloud(model_name, dataset, dataclasses.replace(config.cloud, seed=seed))
        _fresh(cloud.directory)
        save_cloud_model(model, cloud.directory)
        cloud.commit([f"{model.name}.keras"], {"train_seconds": round(time.perf_counter() - started, 2)})
    info["cloud"] = cloud.info()
    keras_path = cloud.directory / f"{model_name}.keras"
    load = lambda: model if model is not None else keras.models.load_model(keras_path)

    table = None
    if hard is not None:
        hard.inputs = {"cloud": _digest(cloud)}
        if rebuilt or not hard.reusable():
            rebuilt = True
            model = load()
            _fresh(hard.directory)
            search = hard.directory / f"{model_name}.tflite"
            # The search runs on the full model: no submodel to convert.
            export_tflite(model, search, dataclasses.replace(_export_config(config, dataset.global_ctr), submodel_capacity=0))
            table, report = search_hard_table(search, stages["dataset"].directory,
                                              dataclasses.replace(config.hard, seed=seed),
                                              config.fleet.learning_rate, config.fleet.epochs, executor)
            atomic_write(hard.directory / "hard.json", to_json({"table": table.to_json(), "search": report}))
            hard.commit([search.name, search.with_suffix(".json").name, "hard.json"])
        saved = json.loads((hard.directory / "hard.json").read_text())
        table = HardCorrectionTable.from_json(saved["table"])
        info["hard_search"] = saved["search"]

    exported.inputs = {"cloud": _digest(cloud), **({"hard": _digest(hard)} if hard is not None else {})}
    path = exported.directory / f"{model_name}.tflite"
    if rebuilt or not exported.reusable():
        rebuilt = True
        model = load()
        _fresh(exported.directory)
        meta = export_tflite(model, path, _export_config(config, dataset.global_ctr, table))
        sub = meta.get("submodel")  # a per-device submodel beside the file (docs/submodels.md)
        extra = [sub["file"], str(Path(sub["file"]).with_suffix(".json"))] if sub else []
        exported.commit([path.name, path.with_suffix(".json").name, *extra])

    coda = stages.get(f"{run}/coda")
    if coda is not None:
        from lcft_tf.cloud.coda import FILES, prepare_coda

        coda.inputs = {"cloud": _digest(cloud), "dataset": _digest(stages["dataset"])}
        if rebuilt or not coda.reusable():
            rebuilt = True
            _fresh(coda.directory)
            cost = prepare_coda(load(), dataset, coda.directory, config.retrieval, config.classifier, seed)
            coda.commit(FILES, cost)
        info["coda"] = coda.info()
    return path, info, rebuilt


def _fresh(directory: Path) -> None:
    """An empty stage folder (a rebuilt stage never mixes old and new files)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def run_experiment(config: ExperimentConfig, executor=None) -> dict[str, Any]:
    """Run every model x seed; ``executor`` overrides the fleet's (see
    :mod:`lcft_tf.device.fleet`). The hard search runs on the executor
    ``config.fleet`` names (docs/scaling.md)."""
    out = Path(config.output_dir) / config.run_name
    with RunLock(out):
        stages = plan_stages(config, out)
        _check_run_folder(config, out, stages)
        plan = {"format": RUN_FORMAT, "package_version": __version__,
                "stages": {n: {"hash": s.hash, "key": canonical(s.key)} for n, s in stages.items()}}
        atomic_write(out / "run.json", to_json(plan))
        own = default_executor(config.fleet)  # one for the run: Ray, if asked, starts once
        try:
            return _run(config, out, stages, executor or own, own)
        finally:
            own.close()


def _run(config: ExperimentConfig, out: Path, stages: dict[str, Stage], executor, hard_executor) -> dict[str, Any]:
    dataset, rebuilt_data = _dataset_stage(config, stages["dataset"])
    summary = dataset.summary()
    global_ctr = dataset.global_ctr
    log.info("dataset %s (%s)", summary, "built" if rebuilt_data else "reused")

    runs: dict[str, dict[int, dict[str, Any]]] = {}
    fleets: dict[str, dict[int, Any]] = {}
    for model_name in config.models:
        for seed in config.seeds:
            run = f"{model_name}_seed{seed}"
            path, cloud_info, rebuilt = _model_stages(model_name, seed, dataset, config, stages, rebuilt_data,
                                                      hard_executor)
            fleet_stage = stages[f"{run}/fleet"]
            coda = stages.get(f"{run}/coda")
            fleet_stage.inputs = {"export": _digest(stages[f"{run}/export"]), "dataset": _digest(stages["dataset"]),
                                  **({"coda": _digest(coda)} if coda else {})}
            fleet = simulate(
                path,
                stages["dataset"].directory,
                fleet_stage.directory,
                config.fleet,
                resume=not rebuilt,  # chunks of an intact upstream are reused, after their checksums
                executor=executor,
                coda_dir=coda.directory if coda else None,
                name=f"fleet {run}",
            )
            fleet_stage.commit(["fleet.json"], {"seconds": fleet.stats.get("seconds")})
            fleets.setdefault(model_name, {})[seed] = fleet
            runs.setdefault(model_name, {})[seed] = {"fleet": fleet.stats, "cloud": cloud_info}

    report = summarize(fleets, global_ctr, config.methods, Grouping.from_info(dataset.info))
    results = {
        "package_version": __version__,
        "config": dataclasses.asdict(config),
        "stages": {n: s.hash for n, s in stages.items()},
        "dataset": summary,
        "global_ctr": global_ctr,
        "summary": report,
        "runs": {m: {str(s): ev for s, ev in r.items()} for m, r in runs.items()},
    }
    results = json.loads(to_json(results))  # what the file holds: NaN -> null
    atomic_write(out / "results.json", to_json(results))
    notes = [
        f"Dataset **{config.dataset}**: {summary['users']} users, {summary['samples']} samples. "
        f"Cloud training: {config.cloud.optimizer}, lr {config.cloud.rate}, {config.cloud.epochs} epoch(s), "
        f"batch {config.cloud.batch_size}. Device fine-tuning: lr {config.fleet.learning_rate}, {config.fleet.epochs} epoch(s), "
        f"batch {config.export.batch_size}, {config.export.optimizer}, all in the LiteRT interpreter."
    ]
    write_report(out, {"title": f"LCFT experiment: {config.run_name}", "dataset": config.dataset, "notes": notes}, report)
    results["table"] = auc_table(report, config.dataset)
    return results

