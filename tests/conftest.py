"""Shared fixtures: a tiny feature spec with every feature kind, random
batches for it, each registry model exported once per session, and the one
recipe for a tiny pipeline (synthetic data -> cloud model -> .tflite file).

Lanes (markers are registered in pytest.ini)::

    python -m pytest -q          # everything (CI)
    python -m pytest -m fast     # the fast lane: not slow, ray, notebook or multiworker

``-m fast`` is an alias added below for
``-m "not slow and not ray and not notebook and not multiworker"``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import pytest

from lcft_tf import models
from lcft_tf.cloud.export import ExportConfig, export_tflite
from lcft_tf.cloud.train import train_cloud
from lcft_tf.correction import HardCorrectionTable
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.data.synthetic import SyntheticConfig, generate
from lcft_tf.features import DenseFeature, FeatureSpec, SequenceFeature, SparseFeature
from cloud_settings import fixed_epochs_cloud

logging.getLogger("absl").setLevel(logging.ERROR)

REPO = Path(__file__).resolve().parents[1]  # the repository root, wherever a test file sits under tests/
TESTS = REPO / "tests"

BATCH = 8
TINY_MODEL = {"embedding_dim": 4, "hidden_units": (8,), "seed": 3}
EXTRA = {"din": {"attention_units": (4,)}, "edgerec": {"gru_units": 4, "attention_units": (4,)}}
HARD_TABLE = HardCorrectionTable(edges=(0.2, 0.5), alphas=(1.5, 1.0, 0.6), betas=(0.1, 0.0, -0.05))


@pytest.fixture(scope="session")
def spec() -> FeatureSpec:
    return FeatureSpec(
        (
            SparseFeature("user_id", 20),
            SparseFeature("item_id", 30),
            SparseFeature("category", 5),
            SequenceFeature("pos_hist", 30, 4, embedding="item_id", query="item_id"),
            SequenceFeature("neg_hist", 30, 4, embedding="item_id", query="item_id"),
            DenseFeature("genome", 3),
        )
    )


def random_features(spec: FeatureSpec, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid features: ids in range, sequences partly padded, dense in [0, 1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for f in spec.sparse:
        out[f.name] = rng.integers(1, f.vocab_size, n).astype(np.int32)
    for f in spec.sequences:
        ids = rng.integers(1, f.vocab_size, (n, f.length)).astype(np.int32)
        lengths = rng.integers(0, f.length + 1, n)
        ids[np.arange(f.length)[None, :] >= lengths[:, None]] = f.padding_id
        out[f.name] = ids
    for f in spec.dense:
        out[f.name] = rng.random((n, f.dim)).astype(np.float32)
    return out


def build_tiny(name: str, spec: FeatureSpec):
    return models.build(name, spec, **TINY_MODEL, **EXTRA.get(name, {}))


@pytest.fixture(scope="session")
def exported(spec, tmp_path_factory):
    """name -> (keras model as exported, path of its .tflite). The Keras model
    may be trained further by a test; the file is a snapshot."""
    out = tmp_path_factory.mktemp("exported")
    result = {}
    for name in models.REGISTRY:
        model = build_tiny(name, spec)
        path = out / f"{name}.tflite"
        export_tflite(model, path, ExportConfig(batch_size=BATCH, learning_rate=0.05, global_ctr=0.4, hard_table=HARD_TABLE))
        result[name] = (model, path)
    return result


# -- the tiny pipeline: one recipe ------------------------------------------------
# Tests that need *some* trained tiny model use these; tests whose numbers were
# measured in a setting of their own keep their own config.
TINY_DATA = SyntheticConfig(num_users=24, num_items=40, mean_samples_per_user=40, history_length=4, dense_dim=3, seed=1)
TINY_CLOUD = fixed_epochs_cloud(optimizer="sgd", epochs=1, learning_rate=0.5, model_kwargs={"embedding_dim": 4, "hidden_units": (8,)})
TINY_EXPORT_BATCH = 16


class TinyData(NamedTuple):
    data: CTRDataset
    folder: Path  # the same dataset, saved (for the fleet and process pools)


class TinyExport(NamedTuple):
    data: CTRDataset
    folder: Path
    model: models.CTRModel  # the trained Keras model; do not train it further
    path: Path  # its .tflite file (with the .json metadata beside it)


def _key(changes: dict) -> tuple:
    return tuple(sorted(changes.items(), key=lambda kv: kv[0]))


def _cached(build):
    cache = {}

    def get(*args, **changes):
        key = (args, _key(changes))
        if key not in cache:
            cache[key] = build(*args, **changes)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """``tiny_dataset(**changes)``: TINY_DATA (with ``changes`` to its fields)
    generated and saved once per session."""

    def build(**changes) -> TinyData:
        data = generate(dataclasses.replace(TINY_DATA, **changes))
        folder = tmp_path_factory.mktemp("tiny_data") / "dataset"
        data.save(folder)
        return TinyData(data, folder)

    return _cached(build)


@pytest.fixture(scope="session")
def tiny_cloud_model(tiny_dataset):
    """``tiny_cloud_model(name="wide_deep", **changes)``: a registry model
    trained on ``tiny_dataset()`` with TINY_CLOUD (``changes`` to its fields),
    once per session."""

    def build(name: str = "wide_deep", **changes):
        return train_cloud(name, tiny_dataset().data, dataclasses.replace(TINY_CLOUD, **changes))

    return _cached(build)


@pytest.fixture(scope="session")
def tiny_export(tiny_dataset, tiny_cloud_model, tmp_path_factory):
    """``tiny_export(name="wide_deep", **changes)``: ``tiny_cloud_model(name)``
    exported with ExportConfig(batch_size=16, global_ctr=the data's, **changes),
    once per session."""

    def build(name: str = "wide_deep", **changes) -> TinyExport:
        data, folder = tiny_dataset()
        model = tiny_cloud_model(name)
        config = ExportConfig(**{"batch_size": TINY_EXPORT_BATCH, "global_ctr": data.global_ctr, **changes})
        path = tmp_path_factory.mktemp("tiny_export") / f"{name}.tflite"
        export_tflite(model, path, config)
        return TinyExport(data, folder, model, path)

    return _cached(build)


# -- lanes ----------------------------------------------------------------------------
FAST_LANE = "not slow and not ray and not notebook and not multiworker"


def pytest_configure(config):
    if config.option.markexpr == "fast":
        config.option.markexpr = FAST_LANE


def slow_cases(cases, keep=()):
    """Parametrize cases, each marked slow except the ones at indices ``keep``:
    the fast lane keeps a sample of an expensive parametrized test."""
    return [c if i in keep else pytest.param(*(c if isinstance(c, tuple) else (c,)), marks=pytest.mark.slow)
            for i, c in enumerate(cases)]


# test_bundle_and_benchmark.py is edited elsewhere; its slow tests are marked here.
_SLOW_ELSEWHERE = {
    "test_bundle_and_benchmark.py::test_coda_benchmark_cli",
    "test_bundle_and_benchmark.py::test_bundle_rebuild_is_deterministic",
    "test_bundle_and_benchmark.py::test_benchmark_cli_writes_table_json_and_chart",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(item.nodeid.endswith(name) for name in _SLOW_ELSEWHERE):
            item.add_marker(pytest.mark.slow)
