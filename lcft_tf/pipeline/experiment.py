"""The main job: cloud training -> .tflite -> device fleet -> metrics, report, figures.

``run_experiment`` writes ``<output_dir>/<name>/`` (docs/pipeline.md):

* ``run.json``                 the plan: every stage's config key and hash
* ``dataset/``                 the dataset, memory-mappable by the workers
* ``<model>_seed<k>/cloud/``   ``<model>.keras``
* ``<model>_seed<k>/hard/``    the hard-table grid search (its own export + ``hard.json``)
* ``<model>_seed<k>/export/``  ``<model>.tflite`` + ``.json`` (with the hard table)
* ``<model>_seed<k>/coda/``    CoDA's embeddings, retrieval and sample classifier
* ``<model>_seed<k>/fleet/``   per-chunk results + manifest (resumable)
* ``results.json``             every number, the config and the stage hashes
* ``report.md`` and figures

The stages are declared once, in :data:`STAGES`: each with the stages it
reads, its key (its own config; the hashes of those stages are added) and
its build. One loop (:func:`_run_stage`) derives every key, input digest,
reuse and commit (:mod:`lcft_tf.pipeline.stages`). A folder that already
holds a run is only reused with ``resume=True`` (finished stages whose
hashes match; a changed config is refused naming the field, before anything
is written) or replaced with ``overwrite=True``. The folder is locked for
the whole run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lcft_tf import __version__, checks, methods
from lcft_tf._io import atomic_write, to_json
from lcft_tf.cloud.coda_prepare import ClassifierConfig
from lcft_tf.cloud.export import ExportConfig
from lcft_tf.cloud.retrieval import RetrievalConfig
from lcft_tf.cloud.train import CloudConfig
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.data.synthetic import SyntheticConfig
from lcft_tf.evaluation.report import Grouping, auc_table, summarize, write_report
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.fleet.executors import make_executor
from lcft_tf.fleet.simulate import simulate
from lcft_tf.keys import ConfigChangedError, canonical, changed_fields, config_hash
from lcft_tf.methods import DEFAULT_METHODS
from lcft_tf.pipeline.hard_search import HardSearchConfig
from lcft_tf.pipeline.stages import RunLock, Stage

log = logging.getLogger(__name__)

RUN_FORMAT = "lcft-run-v2"
DATASETS = ("synthetic", "movielens", "amazon")


class RunExistsError(ValueError):
    """The run folder already holds a run and neither resume nor overwrite was asked."""


class RolledBackError(ValueError):
    """Most device steps of a method were rolled back, so its numbers mean
    little; raised after results.json and report.md are written (they say so)."""


# A method whose device steps were rolled back more often than this (share of
# its steps, any model x seed) is flagged: its "fine-tuned" numbers are mostly
# the cloud model's (docs/loss_and_correction.md).
ROLLED_BACK_LIMIT = 0.5


def check_run_name(name: str) -> str:
    """``name`` if it is one plain folder name (not empty, ``.`` or ``..``, no
    path separator, no NUL); a run folder never escapes ``output_dir``, so
    ``--overwrite`` can only ever clear that one folder. Raises ``ValueError``."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name \
            or Path(name).is_absolute() or Path(name).name != name:
        raise ValueError(f"run name {name!r} must be one plain folder name (no '/', not '.' or '..')")
    return name


def run_id(model: str, seed: int) -> str:
    """The folder (and stage-name prefix) of one model x cloud seed."""
    return f"{model}_seed{seed}"


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One run of the main job: which data, models, seeds and methods, and
    every stage's settings (docs/pipeline.md).

    Raises ``ValueError`` on construction, before anything is written, for
    an unknown dataset or model, no models, seeds that are empty, repeated
    or not integers in [0, 2**32 - 1], unknown or repeated methods, methods
    without ``cloud``, ``max_users`` not an integer >= 1, CoDA on a model
    without embeddings, ``data_options`` that are not the chosen real
    dataset's valid loader options (synthetic takes none), a nested config
    of the wrong type, resume with overwrite, or settings that make a method
    another one: a fine-tuning method with device learning rate 0 or 0
    epochs (it would equal cloud), a CoDA method with retrieval ``k`` 0 (it
    would equal local). The nested configs raise their own on construction.
    """

    dataset: str = dataclasses.field(default="synthetic", metadata={"help": "synthetic, movielens or amazon"})
    data_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "folder with the raw files of a real dataset (nothing is downloaded)"})
    data_options: dict[str, Any] = dataclasses.field(
        default_factory=dict, metadata={"help": "MovieLens / Amazon loader options (MovieLensOptions, AmazonOptions)"})
    cache_dir: str | None = dataclasses.field(
        default=None, metadata={"help": "where prepared real datasets are cached; unset: $LCFT_CACHE or "
                                        "~/.cache/lcft_tf"})
    synthetic: SyntheticConfig = dataclasses.field(
        default=SyntheticConfig(), metadata={"help": "the synthetic dataset's generator settings"})
    max_users: int | None = dataclasses.field(
        default=None, metadata={"help": "use a random sample of this many users (an integer >= 1, seeded by --data_seed), "
                                        "for quick runs; unset: all"})
    models: tuple[str, ...] = dataclasses.field(
        default=("din", "wide_deep"), metadata={"help": "registry models (lcft_tf.models.REGISTRY), or 'all'"})
    methods: tuple[str, ...] = dataclasses.field(
        default=DEFAULT_METHODS, metadata={"help": "methods to compare (cloud is required: gains are measured "
                                                   "against it)"})
    seeds: tuple[int, ...] = dataclasses.field(
        default=(0, 1, 2), metadata={"help": "cloud-training seeds, distinct integers in [0, 2**32 - 1]; tables report mean ± std over them"})
    cloud: CloudConfig = dataclasses.field(default=CloudConfig(), metadata={"help": "cloud training"})
    fleet: FleetConfig = dataclasses.field(
        default=FleetConfig(), metadata={"help": "the device fleet (its methods are set from methods)"})
    hard: HardSearchConfig = dataclasses.field(
        default=HardSearchConfig(), metadata={"help": "the hard-correction grid search"})
    export: ExportConfig = dataclasses.field(
        default=ExportConfig(), metadata={"help": "how the device step is compiled (batch, optimizer); its learning "
                                                  "rate is the fleet's and its global CTR the dataset's"})
    retrieval: RetrievalConfig = dataclasses.field(
        default=RetrievalConfig(), metadata={"help": "CoDA's cloud retrieval (used when a CoDA method runs)"})
    classifier: ClassifierConfig = dataclasses.field(
        default=ClassifierConfig(), metadata={"help": "the CoDA sample classifier every device starts from"})
    output_dir: str = dataclasses.field(default="runs", metadata={"help": "where runs/<name>/ goes"})
    name: str | None = dataclasses.field(
        default=None, metadata={"help": "run name; unset: the dataset, plus the raw files' folder name"})
    resume: bool = dataclasses.field(
        default=False, metadata={"help": "continue the run in <output_dir>/<name>/: reuse finished stages whose "
                                         "config hash matches"})
    overwrite: bool = dataclasses.field(default=False, metadata={"help": "replace the run in <output_dir>/<name>/"})
    allow_rolled_back: bool = dataclasses.field(default=False, metadata={
        "help": "finish with exit 0 even when most of a method's device steps were rolled back (non-finite); "
                "the report says so either way"})

    def __post_init__(self) -> None:
        from lcft_tf.models import REGISTRY, check_names

        checks.choice(self.dataset, "dataset", DATASETS)
        for name in ("data_dir", "cache_dir"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be unset or a folder path, got {value!r}")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ValueError(f"output_dir must be a folder path, got {self.output_dir!r}")
        for name, kind in (("synthetic", SyntheticConfig), ("cloud", CloudConfig), ("fleet", FleetConfig),
                           ("hard", HardSearchConfig), ("export", ExportConfig), ("retrieval", RetrievalConfig),
                           ("classifier", ClassifierConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__name__}, got {getattr(self, name)!r}")
        self._check_data_options()
        if isinstance(self.models, str) or not isinstance(self.models, (tuple, list)):
            raise ValueError(f"models must be a list of model names, got {self.models!r}")
        check_names(self.models)
        if isinstance(self.seeds, str) or not isinstance(self.seeds, (tuple, list)) or not self.seeds:
            raise ValueError(f"seeds must be a non-empty list of distinct integers >= 0, got {self.seeds!r}")
        for s in self.seeds:  # each becomes the seed of the cloud, hard-search and retrieval configs
            checks.seed(s, "seeds")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers >= 0, got {list(self.seeds)}")
        methods.check_methods(self.methods)
        if "cloud" not in self.methods:
            raise ValueError(f"methods must include 'cloud' (every gain is measured against it), got {list(self.methods)}")
        if self.max_users is not None:
            checks.integer(self.max_users, "max_users", 1)
        self._check_methods_have_meaning()
        coda = methods.of_kind(self.methods, "coda")
        flat = [m for m in self.models if not REGISTRY[m].needs_embeddings]
        if coda and flat:
            raise ValueError(f"CoDA ({', '.join(coda)}) retrieves with the model's embeddings; {', '.join(flat)} has none")
        checks.flag(self.resume, "resume")
        checks.flag(self.overwrite, "overwrite")
        checks.flag(self.allow_rolled_back, "allow_rolled_back")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        if self.name is not None:
            check_run_name(self.name)
        if self.dataset != "synthetic" and not self.data_dir:
            raise ValueError(f"dataset {self.dataset!r} reads raw files: give data_dir (nothing is downloaded)")
        device_methods = tuple(m for m in self.methods if m in methods.DEVICE_METHODS)
        object.__setattr__(self, "fleet", dataclasses.replace(self.fleet, methods=device_methods))

    def _check_data_options(self) -> None:
        """``data_options`` are the chosen real dataset's loader options,
        checked now (no file is read); synthetic data takes none."""
        if not isinstance(self.data_options, dict):
            raise ValueError(f"data_options must be a dict of loader options, got {self.data_options!r}")
        if self.dataset == "synthetic":
            if self.data_options:
                raise ValueError(f"data_options {sorted(self.data_options)} apply to movielens or amazon, not "
                                 "synthetic (its settings are the synthetic config)")
            return
        from lcft_tf.data.amazon import AmazonOptions
        from lcft_tf.data.movielens import MovieLensOptions

        kind = MovieLensOptions if self.dataset == "movielens" else AmazonOptions
        known = {f.name for f in dataclasses.fields(kind)}
        unknown = sorted(set(self.data_options) - known)
        if unknown:
            raise ValueError(f"data_options {unknown} are no {self.dataset} loader options; choose from {sorted(known)}")
        kind(**self.data_options)

    def _check_methods_have_meaning(self) -> None:
        """Settings under which a method would silently be another one."""
        tuned = [m for m in self.methods if methods.get(m).fine_tunes]
        if tuned and (self.fleet.learning_rate == 0 or self.fleet.epochs == 0):
            what = f"learning_rate {self.fleet.learning_rate}" if self.fleet.learning_rate == 0 else "epochs 0"
            raise ValueError(f"device {what} never changes the cloud weights: {', '.join(tuned)} would equal cloud; "
                             "give a device learning rate > 0 and epochs >= 1")
        coda = methods.of_kind(self.methods, "coda")
        if coda and self.retrieval.k == 0:
            raise ValueError(f"retrieval k 0 retrieves nothing: {', '.join(coda)} would equal local; give k >= 1")
        if self.fleet.submodel == "on" and self.export.submodel_capacity == 0:
            raise ValueError("fleet submodel 'on' needs a submodel, but export submodel_capacity 0 never writes one")
        if self.dataset != "synthetic":
            return
        # Synthetic data's feature spec is known now: check what reads it.
        from lcft_tf.cloud.submodel import needs_submodel
        from lcft_tf.data.synthetic import synthetic_spec

        spec = synthetic_spec(self.synthetic)
        if self.fleet.submodel == "on" and not needs_submodel(spec, self.export.submodel_capacity):
            raise ValueError(f"fleet submodel 'on' needs a submodel, but every table fits submodel_capacity "
                             f"{self.export.submodel_capacity}, so none is written")
        embeddable = {f.name for f in spec.sparse + spec.sequences}
        if coda and self.retrieval.fields is not None and not set(self.retrieval.fields) <= embeddable:
            raise ValueError(f"retrieval fields {list(self.retrieval.fields)} must be sparse or sequence features of "
                             f"the synthetic data: {sorted(embeddable)}")

    @property
    def run_name(self) -> str:
        """``--name``, else the dataset and, for raw files, their folder's name
        (always one plain folder name, :func:`check_run_name`)."""
        if self.name is not None:
            return self.name
        folder = Path(self.data_dir).resolve().name if self.data_dir else ""
        return check_run_name(f"{self.dataset}-{folder}" if folder not in ("", ".", "..") else self.dataset)


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


def _export_config(config: ExperimentConfig, global_ctr: float | None = None, hard_table=None) -> ExportConfig:
    return dataclasses.replace(config.export, learning_rate=config.fleet.learning_rate,
                               global_ctr=0.5 if global_ctr is None else global_ctr, hard_table=hard_table)


# -- the stage table -------------------------------------------------------------
@dataclasses.dataclass
class _Context:
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
    }


def _export_key(config: ExperimentConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(_export_config(config)).items() if k not in ("global_ctr", "hard_table")}


def _build_dataset(ctx: _Context, stage: Stage, model: str, seed: int, fresh: bool):
    dataset = load_dataset(ctx.config)
    dataset.save(stage.directory)
    return [p.name for p in stage.directory.iterdir()], {"summary": dataset.summary()}


def _build_cloud(ctx: _Context, stage: Stage, model: str, seed: int, fresh: bool):
    from lcft_tf.cloud.train import save_cloud_model, train_cloud

    started = time.perf_counter()
    keras_model = train_cloud(model, ctx.dataset, dataclasses.replace(ctx.config.cloud, seed=seed))
    ctx.keras_models[run_id(model, seed)] = keras_model
    save_cloud_model(keras_model, stage.directory)
    return [f"{keras_model.name}.keras"], {"train_seconds": round(time.perf_counter() - started, 2)}


def _build_hard(ctx: _Context, stage: Stage, model: str, seed: int, fresh: bool):
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


def _hard_table(ctx: _Context, run: str):
    """The run's hard table from its hard stage (None without one)."""
    from lcft_tf.correction import HardCorrectionTable

    hard = ctx.stages.get(f"{run}/hard")
    if hard is None:
        return None
    return HardCorrectionTable.from_json(json.loads((hard.directory / "hard.json").read_text())["table"])


def _build_export(ctx: _Context, stage: Stage, model: str, seed: int, fresh: bool):
    from lcft_tf.cloud.export import export_tflite

    run = run_id(model, seed)
    path = stage.directory / f"{model}.tflite"
    meta = export_tflite(ctx.cloud_model(run, model), path,
                         _export_config(ctx.config, ctx.dataset.global_ctr, _hard_table(ctx, run)))
    sub = meta.get("submodel")  # a per-device submodel beside the file (docs/submodels.md)
    extra = [sub["file"], str(Path(sub["file"]).with_suffix(".json"))] if sub else []
    return [path.name, path.with_suffix(".json").name, *extra], {}


def _build_coda(ctx: _Context, stage: Stage, model: str, seed: int, fresh: bool):
    from lcft_tf.artifacts.coda_files import FILES
    from lcft_tf.cloud.coda_prepare import prepare_coda

    config = ctx.config
    cost = prepare_coda(ctx.cloud_model(run_id(model, seed), model), ctx.dataset, stage.directory, config.retrieval,
                        config.classifier, seed)
    return list(FILES), cost


def _build_fleet(ctx: _Context, stage: Stage, model: str, seed: int, fresh: bool):
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
    old = _read_plan(plan_path)
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


def _read_plan(path: Path) -> dict[str, dict[str, Any]]:
    """The stages a ``run.json`` lists; a file that is not valid JSON or not a
    plan of this format is refused in one line naming it."""
    try:
        plan = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise RunExistsError(f"cannot resume: {path} is damaged ({err}); use --overwrite") from None
    if not isinstance(plan, dict) or plan.get("format") != RUN_FORMAT:
        found = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
        raise RunExistsError(f"cannot resume: {path} has run format {found!r}, this package writes {RUN_FORMAT!r}; "
                             "use --overwrite")
    stages = plan.get("stages")
    if not isinstance(stages, dict) or not all(isinstance(s, dict) and isinstance(s.get("hash"), str)
                                               and isinstance(s.get("key"), dict) for s in stages.values()):
        raise RunExistsError(f"cannot resume: {path} is damaged (stages without hash or key); use --overwrite")
    return stages


def _digest(stage: Stage) -> str:
    return config_hash(stage.outputs())


def _run_stage(ctx: _Context, kind: StageKind, model: str | None, seed: int | None, rebuilt: set[str]) -> dict:
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
        extra = {k: info.pop(k) for k in ("results",) if k in info}
        stage.commit(outputs, info)
        return {**stage.info(), **extra}
    return stage.info()


def _add_baselines(dataset: CTRDataset, fleets: dict[str, dict[int, Any]]) -> dict[str, Any]:
    """Score the reference baselines (:mod:`lcft_tf.evaluation.baselines`) for
    every fleet's users, into its predictions; returns how they were chosen."""
    from lcft_tf.evaluation.baselines import SMOOTHING_GRID, VALIDATION_FRACTION, baseline_scores, choose_smoothing

    smoothing, validation = choose_smoothing(dataset)
    for seeds in fleets.values():
        for fleet in seeds.values():
            fleet.predictions.update(baseline_scores(dataset, fleet.users, smoothing))
    return {"popularity": {"smoothing": smoothing, "grid": list(SMOOTHING_GRID), "validation_auc": validation,
                           "validation_fraction": VALIDATION_FRACTION, "chosen_on": "validation (train period)"}}


def _baseline_headline(report: dict[str, Any]) -> list[str]:
    """One line per model: does its cloud model beat popularity (paired CI)?"""
    lines = []
    for model, numbers in report["models"].items():
        gain = numbers["gains"].get("vs_cloud", {}).get("popularity")
        if gain is None:
            continue
        low, high = gain["ci"]
        verdict = "beats" if high < 0 else ("loses to" if low > 0 else "does not clearly beat")
        lines.append(f"**{model}**: Cloud {numbers['methods']['cloud']['mean']:.4f} {verdict} popularity "
                     f"{numbers['methods']['popularity']['mean']:.4f} (popularity − Cloud {gain['estimate']:+.4f}, "
                     f"95 % CI [{low:+.4f}, {high:+.4f}]).")
    return lines


def rolled_back_warnings(runs: dict[str, dict[int, dict[str, Any]]]) -> list[str]:
    """One line per model x seed x method whose device steps were rolled back
    more often than :data:`ROLLED_BACK_LIMIT` (from each fleet's statistics)."""
    out = []
    for model, seeds in runs.items():
        for seed, run in seeds.items():
            steps = run["fleet"].get("device_train_steps_by_method", {})
            rolled = run["fleet"].get("device_steps_rolled_back_by_method", {})
            for method, n in steps.items():
                if n and rolled.get(method, 0) > ROLLED_BACK_LIMIT * n:
                    out.append(f"{model} seed {seed}: {rolled[method]} of {n} device steps of method {method!r} were "
                               "rolled back (non-finite loss or weights); its numbers are mostly the cloud model's")
    return out


def _fresh(directory: Path) -> None:
    """An empty stage folder (a rebuilt stage never mixes old and new files)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)


def run_experiment(config: ExperimentConfig, executor=None) -> dict[str, Any]:
    """Run every model x seed; ``executor`` overrides the fleet's (see
    :mod:`lcft_tf.fleet.executors`). The hard search runs on the executor
    ``config.fleet`` names (docs/scaling.md). Returns ``results.json``'s
    content plus the printed ``table``. Raises :class:`RunExistsError`,
    :class:`ConfigChangedError` or :class:`lcft_tf.pipeline.stages.RunInUseError`
    before anything is written when the folder cannot be used."""
    out = Path(config.output_dir) / config.run_name
    check_inputs(config)
    own = make_executor(config.fleet.executor, config.fleet.workers, config.fleet.ray_address)  # Ray starts once
    try:
        own.start()  # a bad Ray address fails here, before anything is written
        with RunLock(out):
            stages = plan_stages(config, out)
            _check_run_folder(config, out, stages)
            plan = {"format": RUN_FORMAT, "package_version": __version__,
                    "stages": {n: {"hash": s.hash, "key": canonical(s.key)} for n, s in stages.items()}}
            atomic_write(out / "run.json", to_json(plan))
            return _run(_Context(config, stages, executor or own, own), out)
    finally:
        own.close()


def check_inputs(config: ExperimentConfig) -> None:
    """Check every input the run reads before it writes anything: the raw
    files of a real dataset exist. Raises ``FileNotFoundError`` / ``ValueError``."""
    if config.dataset != "synthetic":
        from lcft_tf.data import raw_files

        raw_files(config.dataset, config.data_dir, **config.data_options)


def _run(ctx: _Context, out: Path) -> dict[str, Any]:
    config, stages = ctx.config, ctx.stages
    rebuilt: set[str] = set()
    _run_stage(ctx, STAGES[0], None, None, rebuilt)
    ctx.dataset = dataset = CTRDataset.load(stages["dataset"].directory)
    summary = dataset.summary()
    global_ctr = dataset.global_ctr
    log.info("dataset %s (%s)", summary, "built" if rebuilt else "reused")
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    fleets: dict[str, dict[int, Any]] = {}
    for model_name in config.models:
        for seed in config.seeds:
            info: dict[str, Any] = {"model": model_name, "seed": seed}
            for kind in STAGES[1:]:
                if kind.wanted(config):
                    info[kind.name] = _run_stage(ctx, kind, model_name, seed, rebuilt)
            ctx.keras_models.clear()
            fleets.setdefault(model_name, {})[seed] = fleet = info.pop("fleet")["results"]
            info.pop("export")
            if "hard" in info:
                info["hard_search"] = json.loads((stages[f"{run_id(model_name, seed)}/hard"].directory
                                                  / "hard.json").read_text())["search"]
                info.pop("hard")
            runs.setdefault(model_name, {})[seed] = {"fleet": fleet.stats, "cloud": info}

    baselines = _add_baselines(dataset, fleets)
    scored = (*config.methods, *(b for b in methods.BASELINES if b not in config.methods))
    report = summarize(fleets, global_ctr, scored, Grouping.from_info(dataset.info))
    results = {
        "package_version": __version__,
        "config": dataclasses.asdict(config),
        "stages": {n: s.hash for n, s in stages.items()},
        "dataset": summary,
        "global_ctr": global_ctr,
        "summary": report,
        "baselines": baselines,
        "runs": {m: {str(s): ev for s, ev in r.items()} for m, r in runs.items()},
    }
    results["warnings"] = warnings = rolled_back_warnings(runs)
    results = json.loads(to_json(results))  # what the file holds: NaN -> null
    atomic_write(out / "results.json", to_json(results))
    notes = [f"**Warning**: {w}" for w in warnings] + _baseline_headline(report) + [
        f"Dataset **{config.dataset}**: {summary['users']} users, {summary['samples']} samples. "
        f"Cloud training: {config.cloud.optimizer}, lr {config.cloud.rate}, {config.cloud.epochs} epoch(s), "
        f"batch {config.cloud.batch_size}. Device fine-tuning: lr {config.fleet.learning_rate}, {config.fleet.epochs} epoch(s), "
        f"batch {config.export.batch_size}, {config.export.optimizer}, all in the LiteRT interpreter."
    ]
    write_report(out, {"title": f"LCFT experiment: {config.run_name}", "dataset": config.dataset, "notes": notes}, report)
    if warnings and not config.allow_rolled_back:
        raise RolledBackError(f"{warnings[0]} (results.json and report.md are written; "
                              "pass --allow_rolled_back to accept such a run)")
    results["table"] = auc_table(report, config.dataset)
    return results

