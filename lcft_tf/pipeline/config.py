"""The main job's configuration: one frozen, validated dataclass that holds
every stage's settings (docs/pipeline.md). Everything is checked when it is
built, so a run refuses bad input before it writes anything."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any


from lcft_tf import checks, methods
from lcft_tf.cloud.coda_prepare import ClassifierConfig
from lcft_tf.cloud.export import ExportConfig
from lcft_tf.cloud.retrieval import RetrievalConfig
from lcft_tf.cloud.train import CloudConfig
from lcft_tf.data.synthetic import SyntheticConfig
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.methods import DEFAULT_METHODS
from lcft_tf.pipeline.hard_search import HardSearchConfig

log = logging.getLogger(__name__)

DATASETS = ("synthetic", "movielens", "amazon")


def check_run_name(name: str) -> str:
    """``name`` if it is one plain folder name (not empty, ``.`` or ``..``, no
    path separator, no NUL); a run folder never escapes ``output_dir``, so
    ``--overwrite`` can only ever clear that one folder. Raises ``ValueError``."""
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name \
            or Path(name).is_absolute() or Path(name).name != name:
        raise ValueError(f"run name {name!r} must be one plain folder name (no '/', not '.' or '..')")
    return name


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One run of the main job: which data, models, seeds and methods, and
    every stage's settings (docs/pipeline.md).

    Raises ``ValueError`` on construction, before anything is written, for
    an unknown dataset or model, no models, seeds that are empty, repeated
    or not integers in [0, 2**32 - 1], unknown or repeated methods, methods
    without ``cloud``, ``max_users`` or ``max_local_samples`` not an integer >= 1, CoDA on a model
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
    max_local_samples: int | None = dataclasses.field(
        default=None, metadata={"help": "keep only each user's most recent N train samples on its device (an integer "
                                        ">= 1; the cloud's data, CoDA's pool and the test split stay whole); unset: all"})
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
            raise ValueError(f"seeds must be distinct integers >= 0 (a non-empty list), got {self.seeds!r}")
        for s in self.seeds:  # each becomes the seed of the cloud, hard-search and retrieval configs
            try:
                checks.seed(s, "seeds")
            except ValueError:
                raise ValueError(f"seeds must be distinct integers >= 0 (each <= {checks.MAX_SEED}), got "
                                 f"{list(self.seeds)}") from None
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers >= 0, got {list(self.seeds)}")
        methods.check_methods(self.methods)
        if "cloud" not in self.methods:
            raise ValueError(f"methods must include 'cloud' (every gain is measured against it), got {list(self.methods)}")
        for name in ("max_users", "max_local_samples"):
            if getattr(self, name) is not None:
                checks.integer(getattr(self, name), name, 1)
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


def check_inputs(config: ExperimentConfig) -> None:
    """Check every input the run reads before it writes anything: the raw
    files of a real dataset exist. Raises ``FileNotFoundError`` / ``ValueError``."""
    if config.dataset != "synthetic":
        from lcft_tf.data import raw_files

        raw_files(config.dataset, config.data_dir, **config.data_options)


