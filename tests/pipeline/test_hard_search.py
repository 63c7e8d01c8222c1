"""The hard-table search as fleet work (lcft_tf/pipeline/hard_search.py): the same
table and validation AUCs as the search it replaced (kept below as the
reference: every fine-tune one after another in this process), serially and
on the process pool."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lcft_tf.pipeline.hard_search import HardSearchConfig, search_hard_table
from lcft_tf.correction import HardCorrectionTable
from lcft_tf.fleet.executors import ProcessExecutor, SerialExecutor
from lcft_tf.device.fine_tune import fine_tune_and_predict
from lcft_tf.device.model import OnDeviceModel
from lcft_tf.evaluation.metrics import user_weighted_auc

HARD = HardSearchConfig(users_per_group=3, alphas=(0.5, 1.0, 2.0), betas=(0.0, 0.2), seed=4, selection="argmax",
                        soft_candidates=False)  # the plain grid search the reference below implements


def reference_search(model_path, dataset, config, learning_rate, epochs):
    """The search before it became fleet work (commit 0f16623), verbatim
    but for the progress bar and timings: (table, per-group report)."""
    device = OnDeviceModel(model_path)
    cloud = device.save()
    rng = np.random.default_rng(config.seed)
    w = dataset.local_ctrs()
    groups = np.searchsorted(np.asarray(config.edges), w, side="right")
    grid = [(1.0, 0.0)] + [p for p in itertools.product(config.alphas, config.betas) if p != (1.0, 0.0)]
    alphas, betas, report = [], [], []
    for g in range(len(config.edges) + 1):
        members = np.flatnonzero((groups == g) & np.isfinite(w))
        chosen = rng.permutation(members)[: config.users_per_group]
        users = []
        for u in chosen:
            view = dataset.user(int(u))
            n = len(view.train_labels)
            cut = n - max(int(round(n * config.validation_fraction)), config.min_validation)
            valid = view.train_labels[cut:]
            if cut < 1 or valid.min() == valid.max():
                continue
            fit = {k: v[:cut] for k, v in view.train_features.items()}
            val = {k: v[cut:] for k, v in view.train_features.items()}
            users.append((fit, view.train_labels[:cut], val, valid))
        scores = []
        for alpha, beta in grid if users else []:
            preds, labels, ids = [], [], []
            for i, (fit, y, val, y_val) in enumerate(users):
                targets = np.where(y == 1, alpha, beta).astype(np.float32)
                preds.append(fine_tune_and_predict(device, cloud, fit, targets, val, learning_rate, epochs))
                labels.append(y_val)
                ids.append(np.full(len(y_val), i))
            scores.append(user_weighted_auc(np.concatenate(ids), np.concatenate(labels), np.concatenate(preds)).value)
        best = int(np.argmax(scores)) if scores else 0
        alphas.append(grid[best][0])
        betas.append(grid[best][1])
        report.append({
            "interval": [([0.0] + list(config.edges))[g], (list(config.edges) + [1.0])[g]],
            "users_in_group": int(len(members)), "users_searched": len(users),
            "alpha": grid[best][0], "beta": grid[best][1],
            "validation_auc": scores[best] if scores else None,
            "validation_auc_raw_labels": scores[0] if scores else None,
        })
    return HardCorrectionTable(config.edges, tuple(alphas), tuple(betas)), report


@pytest.fixture(scope="module")
def setup(tiny_export):
    """The tiny recipe: data, its export and the saved dataset's folder."""
    data, folder, _, path = tiny_export("wide_deep")
    return data, path, folder


@pytest.mark.parametrize("epochs", [1, 2])
def test_search_equals_the_old_serial_search(setup, epochs):
    data, path, dataset = setup
    expected_table, expected = reference_search(path, data, HARD, 0.3, epochs)
    assert sum(g["users_searched"] for g in expected) >= 6  # a search with something to choose
    assert len({g["validation_auc"] for g in expected if g["validation_auc"] is not None}) > 1
    for source in (data, dataset):  # in memory, and from the saved folder
        table, report = search_hard_table(path, source, HARD, learning_rate=0.3, epochs=epochs)
        assert table == expected_table
        assert report["groups"] == expected  # AUCs equal as floats: tolerance 0
        assert report["cost"]["fine_tunes"] == sum(g["users_searched"] for g in expected) * report["cost"]["grid_size"]


def test_search_on_the_process_pool_equals_serial(setup):
    data, path, dataset = setup
    serial = search_hard_table(path, dataset, HARD, learning_rate=0.3, executor=SerialExecutor())
    pool = search_hard_table(path, dataset, HARD, learning_rate=0.3, executor=ProcessExecutor(2))
    assert pool[0] == serial[0]
    assert pool[1]["groups"] == serial[1]["groups"]


def test_parallel_search_refuses_an_in_memory_dataset(setup):
    data, path, _ = setup
    with pytest.raises(ValueError, match="saved dataset's folder"):
        search_hard_table(path, data, HARD, executor=ProcessExecutor(2))
