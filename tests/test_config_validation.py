"""Every config refuses, on construction, a value that makes its field
meaningless: one ``ValueError`` line naming the field and the value, before
a run writes anything (and through the CLI: one ``error:`` line, exit 2, no
output folder)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

import lcft_tf
from lcft_tf.cloud.coda_prepare import ClassifierConfig
from lcft_tf.cloud.export import ExportConfig
from lcft_tf.cloud.retrieval import RetrievalConfig
from lcft_tf.cloud.train import CloudConfig
from lcft_tf.data.amazon import AmazonOptions
from lcft_tf.data.movielens import MovieLensOptions
from lcft_tf.data.synthetic import SyntheticConfig
from lcft_tf.device.coda_fine_tune import CodaConfig
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.pipeline.config import ExperimentConfig
from lcft_tf.pipeline.hard_search import HardSearchConfig
from cloud_settings import fixed_epochs_cloud

NAN, INF = float("nan"), float("inf")
NOT_FINITE = [NAN, INF, -INF]

# config class -> field -> values its rule refuses
BAD: dict[type, dict[str, list]] = {
    SyntheticConfig: {
        "num_users": [0, -1, 5.0, True, 2**31],
        "num_items": [0, -3, 2.5],
        "num_categories": [0, -1, 3.0],
        "latent_dim": [0, -2],
        "dense_dim": [0, 1.0],
        "history_length": [0, -1],
        "min_samples_per_user": [1, 0, -5, 20.0],
        "mean_samples_per_user": [*NOT_FINITE, -1.0, 0.0, 19.0, "200"],
        "global_ctr": [*NOT_FINITE, 0.0, 1.0, -0.1, 1.5, "0.5"],
        "ctr_spread": [*NOT_FINITE, -0.1, 1e6],
        "taste_weight": [*NOT_FINITE, 1e300, -1e300],
        "popularity_spread": [*NOT_FINITE, -1.0, 1e4],
        "test_fraction": [*NOT_FINITE, 0.0, 1.0, -0.2, 1.2],
        "few_sample_share": [*NOT_FINITE, -0.1, 1.1],
        "few_sample_range": [(1, 5), (6, 5), (2,), (2.0, 5), ()],
        "taste_clusters": [-1, 2.0],
        "taste_noise": [*NOT_FINITE, -0.1, 1.01],
        "exposure_taste": [*NOT_FINITE, -0.5, 50.0],
        "seed": [-1, 2**32, 0.5],
    },
    MovieLensOptions: {
        "test_fraction": [*NOT_FINITE, 0.0, 1.0, "0.2"],
        "min_train": [0, -1, 2.0],
        "min_test": [0],
        "history_length": [0, -4],
        "use_genome": ["false", 0],
        "skip_bad_rows": ["no"],
        "cut_timestamp": [-1, 1.5],
    },
    AmazonOptions: {
        "test_fraction": [*NOT_FINITE, 0.0, 1.0],
        "negative_ratios": [(), (0,), (1.5,)],
        "min_train": [0],
        "seed": [-1],
        "skip_bad_rows": ["false"],
    },
    CloudConfig: {
        "batch_size": [0, -32, 32.0],
        "epochs": [-1, 1.5],
        "learning_rate": [*NOT_FINITE, -0.1, 1e39, "0.1"],
        "decay_per_epoch": [*NOT_FINITE, -1.0, -0.1, 1.5, 10.0],
        "optimizer": ["rmsprop", ""],
        "strategy": ["tpu"],
        "seed": [-1, 2**32],
        "shuffle": ["yes"],
        "model_kwargs": [None, {"seed": 3}],
    },
    ExportConfig: {
        "batch_size": [0, -1, 8.0],
        "optimizer": ["adagrad"],
        "learning_rate": [*NOT_FINITE, -0.01, 1e39],
        "global_ctr": [*NOT_FINITE, -0.1, 1.1],
        "adam_beta1": [*NOT_FINITE, -0.1, 1.0, 1.5, 0.99999999],  # the last rounds to 1 as a float32
        "adam_beta2": [*NOT_FINITE, -0.5, 1.0],
        "adam_epsilon": [*NOT_FINITE, 0.0, -1e-7, 1e-50],  # 1e-50 is 0 as a float32
        "clip_norm": [*NOT_FINITE, 0.0, -1.0, 1e39],
        "submodel_capacity": [-1, 10.5],
        "hard_table": ["identity"],
    },
    RetrievalConfig: {
        "k": [-1, 3.0],
        "index": ["lsh"],
        "pool_size": [0, -5, 10.0],
        "fields": [(), ("item_id", "item_id"), "item_id"],
        "threads": [-1],
        "ivf_lists": [0],
        "ivf_probe": [0],
        "hnsw_m": [0, -1],
        "hnsw_ef_search": [0],
        "seed": [-1],
    },
    ClassifierConfig: {
        "hidden_units": [(0,), (-4,), (8.0,), 8],
        "learning_rate": [*NOT_FINITE, -0.5, 1e39],
        "batch_size": [0, -1],
    },
    CodaConfig: {
        "keep": ["top"],
        "keep_value": [*NOT_FINITE, -0.1, 1.1],
        "classifier_epochs": [0, -1, 2.0],
        "classifier_lr": [*NOT_FINITE, -0.5, 1e39],
        "correction": ["soft3"],
        "use_classifier": ["true"],
    },
    FleetConfig: {
        "methods": [(), ("cloud", "cloud"), ("nope",)],
        "learning_rate": [*NOT_FINITE, -0.01, 1e39, "0.01"],
        "epochs": [-1, 1.0],
        "users_per_chunk": [0, -1],
        "workers": [-1, 2.0],
        "interpreter_threads": [0, -1],
        "submodel": ["sometimes"],
        "executor": ["threads"],
    },
    HardSearchConfig: {
        "edges": [(NAN,), (0.0,), (0.5, 0.2), (1.0,)],
        "alphas": [(), (NAN,), (1.0, INF), (1e39,)],
        "betas": [(), (NAN,), (-INF,)],
        "users_per_group": [0, -1, 2.0],
        "validation_fraction": [*NOT_FINITE, 0.0, 1.0, 1.5],
        "min_validation": [1, 0, -1],
        "seed": [-1],
    },
    ExperimentConfig: {
        "dataset": ["criteo"],
        "models": [(), ("nope",)],
        "methods": [("local",), ("cloud", "cloud"), ()],
        "seeds": [(), (-1,), (0, 0), (1.5,), (2**32,)],
        "max_users": [0, -1, 2.5],
        "data_options": [{"test_fraction": 0.2}],  # synthetic data takes no loader options
        "output_dir": [""],
        "resume": ["yes"],
    },
}
CASES = [pytest.param(cls, field, value, id=f"{cls.__name__}.{field}={value!r}")
         for cls, fields in BAD.items() for field, values in fields.items() for value in values]


@pytest.mark.parametrize("cls", list(BAD))
def test_defaults_are_valid(cls):
    cls()


@pytest.mark.parametrize("cls, field, value", CASES)
def test_a_bad_value_is_refused_in_one_line_naming_the_field(cls, field, value):
    with pytest.raises(ValueError) as info:
        cls(**{field: value})
    message = str(info.value)
    assert "\n" not in message
    assert field in message, message
    if not isinstance(value, (tuple, dict)):
        assert repr(value) in message or str(value) in message, message


# -- settings that would make a method another one -----------------------------------
@pytest.mark.parametrize("alphas, betas", [((1.0,), (0.0,)), ((1,), (0,)), ((1.0, 1.0), (0.0,))])
def test_a_hard_grid_of_raw_labels_only_is_refused(alphas, betas):
    with pytest.raises(ValueError, match="alphas x betas"):
        HardSearchConfig(alphas=alphas, betas=betas)


@pytest.mark.parametrize("fleet", [FleetConfig(learning_rate=0.0), FleetConfig(epochs=0)])
def test_an_experiment_whose_devices_never_train_is_refused(fleet):
    FleetConfig(learning_rate=0.0)  # a fleet alone may (tests pin devices to the cloud)
    with pytest.raises(ValueError, match="would equal cloud"):
        ExperimentConfig(fleet=fleet)
    ExperimentConfig(fleet=fleet, methods=("cloud",))  # nothing fine-tunes


def test_coda_that_keeps_or_retrieves_nothing_is_refused():
    with pytest.raises(ValueError, match="keep_value"):
        CodaConfig(keep="fraction", keep_value=0.0)
    CodaConfig(keep="threshold", keep_value=0.0)  # keeps everything: retrieval_only
    with pytest.raises(ValueError, match="k 0"):
        ExperimentConfig(models=("din",), methods=("cloud", "coda"), retrieval=RetrievalConfig(k=0))


def test_cross_field_rules_known_before_the_data_exists():
    with pytest.raises(ValueError, match="submodel_capacity 0"):
        ExperimentConfig(fleet=FleetConfig(submodel="on"), export=ExportConfig(submodel_capacity=0))
    with pytest.raises(ValueError, match="every table fits"):
        ExperimentConfig(fleet=FleetConfig(submodel="on"))  # 500 users, 300 items: no table over 4096
    with pytest.raises(ValueError, match="retrieval fields"):
        ExperimentConfig(models=("din",), methods=("cloud", "coda"), retrieval=RetrievalConfig(fields=("genome",)))
    with pytest.raises(ValueError, match="test_fraction"):
        ExperimentConfig(dataset="movielens", data_dir="x", data_options={"test_fraction": NAN})
    with pytest.raises(ValueError, match="no movielens loader options"):
        ExperimentConfig(dataset="movielens", data_dir="x", data_options={"negatives": "one_per_review"})


def test_replace_validates_again():
    with pytest.raises(ValueError, match="adam_beta1"):
        dataclasses.replace(ExportConfig(), adam_beta1=NAN)
    with pytest.raises(ValueError, match="seeds"):
        dataclasses.replace(ExperimentConfig(), seeds=(0, -1))


# -- through the command line ------------------------------------------------------------
TINY_FLAGS = ["--models=lr", "--seeds=0", "--methods=cloud,local", "--num_users=12", "--num_items=20",
              "--samples_per_user=20", "--synthetic_history_length=3", "--synthetic_dense_dim=2", "--cloud_epochs=1",
              "--workers=1", "--device_batch_size=8", "--name=x"]


@pytest.mark.parametrize("flags, field", [
    (["--device_adam_beta1", "nan"], "adam_beta1"),
    (["--cloud_decay_per_epoch=-1"], "decay_per_epoch"),
    (["--hard_alphas="], "alphas"),
    (["--hard_alphas", "nan"], "alphas"),
    (["--synthetic_test_fraction", "0"], "test_fraction"),
    (["--samples_per_user", "nan"], "mean_samples_per_user"),
])
def test_the_cli_refuses_in_one_error_line_before_writing(tmp_path, flags, field):
    out = tmp_path / "X"
    root = Path(lcft_tf.__file__).resolve().parents[1]  # the package under test, not another checkout
    env = {**os.environ, "PYTHONPATH": str(root), "CUDA_VISIBLE_DEVICES": ""}
    given = {f.split("=")[0] for f in flags}
    # A tiny run otherwise, so that a value let through fails the test quickly, not after a full experiment.
    tiny = [f for f in TINY_FLAGS if f.split("=")[0] not in given]
    proc = subprocess.run([sys.executable, "-m", "lcft_tf", "run", *tiny, *flags, "--output_dir", str(out)],
                          capture_output=True, text=True, cwd=root, env=env, timeout=300)
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and field in errors[0], errors
    assert not out.exists()


@pytest.mark.slow
def test_a_diverging_cloud_training_is_refused_before_any_stage_commits_it(tmp_path):
    from lcft_tf.cloud.train import train_cloud
    from lcft_tf.data.synthetic import SyntheticConfig, generate

    data = generate(SyntheticConfig(num_users=12, num_items=20, mean_samples_per_user=20, history_length=2, dense_dim=1))
    with pytest.raises(ValueError, match="diverged"):
        train_cloud("wide_deep", data, fixed_epochs_cloud(optimizer="sgd", epochs=1, learning_rate=1e30))
