"""Cloud training chosen on validation (lcft_tf.cloud.train, docs/cloud_base.md):
the held-out block, early stopping at the best epoch, the learning-rate
choice, and that the test split is never read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from lcft_tf.cloud import train as cloud_train
from lcft_tf.cloud.train import CloudConfig, fit_cloud
from lcft_tf.data.dataset import per_user_split, user_index, validation_split
from lcft_tf.evaluation.metrics import WeightedAUC

SMALL = {"embedding_dim": 4, "hidden_units": (8,)}
SEARCH = CloudConfig(optimizer="sgd", learning_rate_grid=(0.5,), epochs=5, patience=3, batch_size=32, shuffle=False,
                     model_kwargs=SMALL)


@pytest.fixture(autouse=True)
def _deterministic():
    tf.config.experimental.enable_op_determinism()


def _scripted_auc(monkeypatch, curve):
    """Validation AUC after epoch e is ``curve[e]``, whatever the model predicts."""
    calls = iter(curve)
    monkeypatch.setattr(cloud_train, "user_weighted_auc", lambda *a: WeightedAUC(next(calls), 1, 1))


def _weights(model):
    return model.get_weights()


def _same(a, b):
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_validation_block_is_each_users_last_train_share_and_never_test(tiny_dataset):
    data = tiny_dataset().data
    start = validation_split(data, 0.2)
    first, n_train = data.offsets[:-1], data.split - data.offsets[:-1]
    # Independent reference: per_user_split on each user's train block alone.
    for u in range(data.num_users):
        block = np.array([0, n_train[u]])
        expected = first[u] + per_user_split(block, 0.2, data.timestamps[first[u]:data.split[u]])[0]
        assert start[u] == expected
    assert np.all(start <= data.split) and np.all(start >= first)
    global_data = dataclasses.replace(data, info={**data.info, "split": "global"})
    cut = validation_split(global_data, 0.25)
    train = data.train_mask
    held = (np.arange(data.num_samples) >= cut[user_index(data.offsets)]) & train
    assert 0.2 < held.sum() / train.sum() < 0.3  # the last quarter of the train period, by time
    assert data.timestamps[held].min() >= data.timestamps[train & ~held].max()


def test_early_stopping_keeps_the_best_epoch(tiny_dataset, monkeypatch):
    """Validation AUC peaks at epoch 2 of 5: the search stops at epoch 2 +
    patience 3 = 5, chooses 2 epochs, and (refit off) returns exactly the
    weights after epoch 2 (reference: 2 epochs on the same fit block)."""
    data = tiny_dataset().data
    _scripted_auc(monkeypatch, [0.60, 0.70, 0.65, 0.64, 0.66])
    fit = fit_cloud("wide_deep", data, dataclasses.replace(SEARCH, refit=False))
    assert fit.info["epochs"] == 2 and fit.info["candidates"][0]["validation_auc"] == [0.6, 0.7, 0.65, 0.64, 0.66]
    assert len(fit.info["candidates"][0]["loss"]) == 5
    fit_part = dataclasses.replace(data, split=validation_split(data, 0.2))
    reference = fit_cloud("wide_deep", fit_part, dataclasses.replace(SEARCH, epochs=2, learning_rate=0.5, validation_fraction=0.0))
    _same(_weights(fit.model), _weights(reference.model))
    after_five = fit_cloud("wide_deep", fit_part, dataclasses.replace(SEARCH, epochs=5, learning_rate=0.5, validation_fraction=0.0))
    assert not np.array_equal(_weights(fit.model)[0], _weights(after_five.model)[0])  # the restore did something


def test_patience_stops_early_and_refit_trains_the_chosen_epochs_on_all_train(tiny_dataset, monkeypatch):
    data = tiny_dataset().data
    _scripted_auc(monkeypatch, [0.70, 0.68, 0.69, 0.99])  # peak at 1; patience 2 stops after epoch 3
    fit = fit_cloud("wide_deep", data, dataclasses.replace(SEARCH, patience=2))
    assert fit.info["candidates"][0]["validation_auc"] == [0.70, 0.68, 0.69] and fit.info["epochs"] == 1
    reference = fit_cloud("wide_deep", data, dataclasses.replace(SEARCH, epochs=1, learning_rate=0.5, validation_fraction=0.0))
    _same(_weights(fit.model), _weights(reference.model))


def test_the_rate_with_the_best_validation_auc_is_chosen(tiny_dataset, monkeypatch):
    data = tiny_dataset().data
    _scripted_auc(monkeypatch, [0.60, 0.61, 0.55, 0.58, 0.72, 0.70, 0.69])  # lr 0.1: peak 0.61; lr 0.3: 0.72 at 2
    config = dataclasses.replace(SEARCH, learning_rate_grid=(0.1, 0.3), epochs=3, patience=2, refit=False)
    fit = fit_cloud("wide_deep", data, config)
    assert [c["best_auc"] for c in fit.info["candidates"]] == [0.61, 0.72]
    assert fit.info["learning_rate"] == 0.3 and fit.info["epochs"] == 2


def test_test_labels_do_not_change_the_search(tiny_dataset):
    """Flipping every test label leaves the validation curves, the choice and the weights as they were."""
    data = tiny_dataset().data
    flipped = data.labels.copy()
    flipped[~data.train_mask] = 1 - flipped[~data.train_mask]
    config = dataclasses.replace(SEARCH, epochs=3, learning_rate_grid=(0.2, 0.5))
    a = fit_cloud("wide_deep", data, config)
    b = fit_cloud("wide_deep", dataclasses.replace(data, labels=flipped), config)
    assert a.info == b.info and np.isfinite(a.info["candidates"][0]["best_auc"])
    _same(_weights(a.model), _weights(b.model))


@pytest.mark.parametrize("change, message", [
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"validation_fraction": -0.1}, "validation_fraction"),
    ({"patience": 0}, "patience"),
    ({"learning_rate_grid": ()}, "learning_rate_grid"),
    ({"learning_rate_grid": (0.1, 0.1)}, "learning_rate_grid"),
    ({"learning_rate_grid": (float("nan"),)}, "learning_rate_grid"),
])
def test_bad_search_settings_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        CloudConfig(**change)
