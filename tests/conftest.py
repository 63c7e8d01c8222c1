"""Shared fixtures: a tiny feature spec with every feature kind, random
batches for it, and each registry model exported once per session."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import pytest

from lcft_tf import models
from lcft_tf.cloud.export import ExportConfig, export_tflite
from lcft_tf.correction import HardCorrectionTable
from lcft_tf.features import DenseFeature, FeatureSpec, SequenceFeature, SparseFeature

logging.getLogger("absl").setLevel(logging.ERROR)

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
