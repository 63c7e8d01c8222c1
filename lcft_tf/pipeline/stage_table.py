"""The stage table: every stage of a run declared once, with the stages it
reads, its key and its build; one loop derives keys, input digests, reuse
and commit (docs/pipeline.md "Stages and their hashes")."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lcft_tf import methods
from lcft_tf._io import atomic_write, to_json
from lcft_tf.cloud.export import ExportConfig
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.fleet.simulate import simulate
from lcft_tf.keys import config_hash
from lcft_tf.pipeline.stages import Stage

from lcft_tf.pipeline.config import ExperimentConfig

log = logging.getLogger(__name__)


def run_id(model: str, seed: int) -> str:
    """The folder (and stage-name prefix) of one model x cloud seed."""
    return f"{model}_seed{seed}"


def load_dataset(config: ExperimentConfig) -> CTRDataset:
    """The dataset the config names, limited to ``max_users`` and its devices
    to ``max_local_samples`` if set."""
    if config.dataset == "synthetic":
        from lcft_tf.data.synthetic import generate

        dataset = generate(config.synthetic)
    else:
        from lcft_tf.data import load_real_dataset

        dataset = load_real_dataset(config.dataset, config.data_dir, config.cache_dir, **config.data_options)
    if config.max_users is not None and config.max_users < dataset.num_users:
        rng = np.random.default_rng(config.synthetic.seed)
        dataset = dataset.subset_users(np.sort(rng.choice(dataset.num_users, config.max_users, replace=False)))
    if config.max_local_samples is not None:
        dataset = dataclasses.replace(dataset, max_local_samples=config.max_local_samples)
    return dataset


def _export_config(config: ExperimentConfig, global_ctr: float | None = None, hard_table=None) -> ExportConfig:
    return dataclasses.replace(config.export, learning_rate=config.fleet.learning_rate,
                               global_ctr=0.5 if global_ctr is None else global_ctr, hard_table=hard_table)


# -- the stage table -------------------------------------------------------------
@dataclasses.dataclass
class RunContext:
    """What the builds of one run share: the config, the dataset, the
    executors, and per model x seed the loaded cloud model and what its
    stages report."""

    config: ExperimentConfig
    stages: dict[str, Stage]
    executor: Any = None
    hard_executor: Any = None
    dataset: CTRDataset | None = None
    keras_models: dict[str, Any] = dataclasses.field(default_factory=dict)

    def cloud_model(self, run: str, model: str):
        """The run's cloud model: trained in this process, else loaded from its stage."""
        if run not in self.keras_models:
            import keras

            self.keras_models[run] = keras.models.load_model(self.stages[f"{run}/cloud"].directory / f"{model}.keras")
        return self.keras_models[run]


@dataclasses.dataclass(frozen=True)
class StageKind:
    """One kind of stage, declared once.

    ``reads``: the stages whose outputs it consumes (``dataset`` or a stage
    of the same model x seed); their hashes join its key, None for one the
    run does not have. ``reads_unkeyed``: read too, but already in the key
    through another stage. ``key(config, model, seed)``: its own config.
    ``build(ctx, stage, model, seed, fresh)`` writes its outputs and returns
    ``(output files, info)``; ``fresh`` says whether anything upstream was
    rebuilt in this run. ``wanted(config)``: whether the run has it.
    """

    name: str
    reads: tuple[str, ...]
    key: Callable[[ExperimentConfig, str, int], dict[str, Any]]
    build: Callable[..., tuple[list[str], dict[str, Any]]]
    wanted: Callable[[ExperimentConfig], bool] = lambda config: True
    reads_unkeyed: tuple[str, ...] = ()
    always_build: bool = False  # the fleet: its own manifest decides what to reuse


def _dataset_key(config: ExperimentConfig, model: str, seed: int) -> dict[str, Any]:
    return {
        "dataset": config.dataset,
        "data_dir": str(Path(config.data_dir).resolve()) if config.data_dir else None,
        "data_options": config.data_options,
        "synthetic": config.synthetic if config.dataset == "synthetic" else None,
        "max_users": config.max_users,
        "subset_seed": config.synthetic.seed if config.max_users else None,
        "max_local_samples": config.max_local_samples,
    }


def _export_key(config: ExperimentConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(_export_config(config)).items() if k not in ("global_ctr", "hard_table")}


def _build_dataset(ctx: RunContext, stage: Stage, model: str, seed: int, fresh: bool):
    dataset = load_dataset(ctx.config)
    dataset.save(stage.directory)
    return [p.name for p in stage.directory.iterdir()], {"summary": dataset.summary()}


def _build_cloud(ctx: RunContext, stage: Stage, model: str, seed: int, fresh: bool):
    from lcft_tf.cloud.train import fit_cloud, save_cloud_model

    started = time.perf_counter()
    trained = fit_cloud(model, ctx.dataset, dataclasses.replace(ctx.config.cloud, seed=seed))
    ctx.keras_models[run_id(model, seed)] = trained.model
    save_cloud_model(trained.model, stage.directory)
    return [f"{trained.model.name}.keras"], {"train_seconds": round(time.perf_counter() - started, 2),
                                            "training": trained.info}


def _build_hard(ctx: RunContext, stage: Stage, model: str, seed: int, fresh: bool):
    from lcft_tf.cloud.export import export_tflite
    from lcft_tf.pipeline.hard_search import search_hard_table

    config = ctx.config
    search = stage.directory / f"{model}.tflite"
    # The search runs on the full model: no submodel to convert.
    export_tflite(ctx.cloud_model(run_id(model, seed), model), search,
                  dataclasses.replace(_export_config(config, ctx.dataset.global_ctr), submodel_capacity=0))
    table, report = search_hard_table(search, ctx.stages["dataset"].directory, dataclasses.replace(config.hard, seed=seed),
                                      config.fleet.learning_rate, config.fleet.epochs, ctx.hard_executor)
    atomic_write(stage.directory / "hard.json", to_json({"table": table.to_json(), "search": report}))
    return [search.name, search.with_suffix(".json").name, "hard.json"], {}


def _hard_table(ctx: RunContext, run: str):
    """The run's hard table from its hard stage (None without one)."""
    from lcft_tf.correction import HardCorrectionTable

    hard = ctx.stages.get(f"{run}/hard")
    if hard is None:
        return None
    return HardCorrectionTable.from_json(json.loads((hard.directory / "hard.json").read_text())["table"])


def _build_export(ctx: RunContext, stage: Stage, model: str, seed: int, fresh: bool):
    from lcft_tf.cloud.export import export_tflite

    run = run_id(model, seed)
    path = stage.directory / f"{model}.tflite"
    meta = export_tflite(ctx.cloud_model(run, model), path,
                         _export_config(ctx.config, ctx.dataset.global_ctr, _hard_table(ctx, run)))
    sub = meta.get("submodel")  # a per-device submodel beside the file (docs/submodels.md)
    extra = [sub["file"], str(Path(sub["file"]).with_suffix(".json"))] if sub else []
    return [path.name, path.with_suffix(".json").name, *extra], {}


def _build_coda(ctx: RunContext, stage: Stage, model: str, seed: int, fresh: bool):
    from lcft_tf.artifacts.coda_files import FILES
    from lcft_tf.cloud.coda_prepare import prepare_coda

    config = ctx.config
    cost = prepare_coda(ctx.cloud_model(run_id(model, seed), model), ctx.dataset, stage.directory, config.retrieval,
                        config.classifier, seed)
    return list(FILES), cost


def _build_fleet(ctx: RunContext, stage: Stage, model: str, seed: int, fresh: bool):
    run = run_id(model, seed)
    coda = ctx.stages.get(f"{run}/coda")
    fleet = simulate(
        ctx.stages[f"{run}/export"].directory / f"{model}.tflite",
        ctx.stages["dataset"].directory,
        stage.directory,
        ctx.config.fleet,
        resume=not fresh,  # chunks of an intact upstream are reused, after their checksums
        executor=ctx.executor,
        coda_dir=coda.directory if coda else None,
        name=f"fleet {run}",
    )
    return ["fleet.json"], {"seconds": fleet.stats.get("seconds"), "results": fleet}


def _has_hard(config: ExperimentConfig) -> bool:
    return "hard" in config.methods


def _has_coda(config: ExperimentConfig) -> bool:
    return bool(methods.of_kind(config.methods, "coda"))


STAGES: tuple[StageKind, ...] = (
    StageKind("dataset", (), _dataset_key, _build_dataset),
    StageKind("cloud", ("dataset",), lambda c, m, s: {"model": m, "cloud": dataclasses.replace(c.cloud, seed=s)},
              _build_cloud),
    StageKind("hard", ("cloud",), lambda c, m, s: {
        "export": _export_key(c), "hard": dataclasses.replace(c.hard, seed=s),
        "device": {"learning_rate": c.fleet.learning_rate, "epochs": c.fleet.epochs}}, _build_hard, _has_hard),
    StageKind("export", ("cloud", "hard"), lambda c, m, s: {"export": _export_key(c)}, _build_export),
    StageKind("coda", ("cloud",), lambda c, m, s: {
        "retrieval": dataclasses.replace(c.retrieval, seed=s), "classifier": c.classifier}, _build_coda, _has_coda,
        reads_unkeyed=("dataset",)),
    StageKind("fleet", ("export", "dataset", "coda"), lambda c, m, s: {"fleet": c.fleet.key()}, _build_fleet,
              always_build=True),
)


def _stage_name(kind: str, model: str | None, seed: int | None) -> str:
    return "dataset" if kind == "dataset" else f"{run_id(model, seed)}/{kind}"


def plan_stages(config: ExperimentConfig, out: Path) -> dict[str, Stage]:
    """Every stage of the run, upstream first, with its key (its config plus
    the hashes of the stages it reads), computed from the config alone."""
    stages: dict[str, Stage] = {}
    for model, seed in [(None, None)] + [(m, s) for m in config.models for s in config.seeds]:
        for kind in STAGES:
            if (kind.name == "dataset") != (model is None) or not kind.wanted(config):
                continue
            name = _stage_name(kind.name, model, seed)
            upstream = {u: stages.get(_stage_name(u, model, seed)) for u in kind.reads}
            key = {**{u: s.hash if s else None for u, s in upstream.items()}, **kind.key(config, model, seed)}
            stages[name] = Stage(name, out / name, key)
    return stages


def _digest(stage: Stage) -> str:
    return config_hash(stage.outputs())


def run_stage(ctx: RunContext, kind: StageKind, model: str | None, seed: int | None, rebuilt: set[str]) -> dict:
    """Reuse or build one stage; returns its info (and the fleet's results).
    ``rebuilt`` collects the names of stages built in this run: a stage whose
    upstream was rebuilt is rebuilt too."""
    stage = ctx.stages[_stage_name(kind.name, model, seed)]
    upstream = [ctx.stages.get(_stage_name(u, model, seed)) for u in kind.reads + kind.reads_unkeyed]
    stage.inputs = {s.name.rsplit("/", 1)[-1]: _digest(s) for s in upstream if s is not None}
    fresh = any(s is not None and s.name in rebuilt for s in upstream)
    if kind.always_build or fresh or not stage.reusable():
        if not kind.always_build:
            rebuilt.add(stage.name)
            _fresh(stage.directory)
        outputs, info = kind.build(ctx, stage, model, seed, fresh)
        results = info.pop("results", None)  # the fleet's, kept in memory, not in stage.json
        stage.commit(outputs, info)
        return stage.info() if results is None else {**stage.info(), "results": results}
    return stage.info()


def _fresh(directory: Path) -> None:
    """An empty stage folder (a rebuilt stage never mixes old and new files)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


