"""Options added by docs/din_on_movielens.md: the cloud optimizer and DIN's
first-order (per-id offset) terms. The paper's settings stay the defaults."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf
from conftest import BATCH, EXTRA, TINY_MODEL, random_features

from lcft_tf import models
from lcft_tf.cloud.export import ExportConfig, TrainableModule, export_tflite
from lcft_tf.cloud.train import CloudConfig, save_cloud_model, train_cloud
from lcft_tf.device.model import OnDeviceModel
from cloud_settings import fixed_epochs_cloud

SMALL = {"embedding_dim": 4, "hidden_units": (8,)}


def _first_step_deltas(data, optimizer: str, lr: float) -> np.ndarray:
    """|weight change| of every dense-layer scalar weight after one cloud step
    over all rows (embedding tables get sparse gradients, which Keras' Adam
    accumulates per occurrence, so they are left out)."""
    n = len(data.train_rows()[1])
    config = fixed_epochs_cloud(batch_size=n, epochs=1, learning_rate=lr, optimizer=optimizer, shuffle=False, model_kwargs=SMALL)
    trained = train_cloud("wide_deep", data, config)
    fresh = models.build("wide_deep", data.spec, seed=config.seed, **SMALL).build_from_spec()
    pairs = [(a, b) for a, b in zip(trained.weights, fresh.weights) if "embeddings" not in a.path]
    return np.concatenate([np.abs(a.numpy() - b.numpy()).ravel() for a, b in pairs])


def test_adam_first_step_moves_every_weight_with_a_gradient_by_the_learning_rate(tiny_dataset):
    # One full-batch SGD step at lr 1 from the same seeded start gives |g| of
    # every weight; Adam's first step is lr * g / (|g| + eps), i.e. lr for
    # every weight whose gradient is well above eps, whatever its size.
    data = tiny_dataset().data
    grad = _first_step_deltas(data, "sgd", 1.0)
    clear = grad > 1e-3
    assert clear.sum() > 50 and np.ptp(grad[clear]) > 1e-2  # gradients of many sizes
    lr = 1e-3
    np.testing.assert_allclose(_first_step_deltas(data, "adam", lr)[clear], lr, rtol=0.01)


def test_unknown_cloud_optimizer_is_rejected_and_learning_rate_follows_the_optimizer():
    with pytest.raises(ValueError, match="rmsprop"):
        CloudConfig(optimizer="rmsprop")
    assert CloudConfig().candidate_rates == (3e-3, 1e-2)  # the default: Adam, both tried on validation
    assert CloudConfig(optimizer="sgd").candidate_rates == (1.0,)  # the paper's SGD
    assert fixed_epochs_cloud(optimizer="sgd").candidate_rates == (1.0,)
    assert fixed_epochs_cloud(optimizer="adam").candidate_rates == (1e-3,)  # never Adam at SGD's 1.0 by accident
    assert dataclasses.replace(fixed_epochs_cloud(optimizer="sgd"), optimizer="adam").candidate_rates == (1e-3,)
    assert CloudConfig(optimizer="adam", learning_rate=0.01).candidate_rates == (0.01,)  # given: nothing searched
    assert CloudConfig(learning_rate_grid=[0.1, 0.2]).candidate_rates == (0.1, 0.2)


def _din(spec, **kwargs):
    return models.build("din", spec, **TINY_MODEL, **EXTRA["din"], **kwargs).build_from_spec()


def test_din_user_offset_shifts_exactly_that_users_logits(spec):
    model = _din(spec, first_order=("user_id",))
    x = random_features(spec, 40, seed=5)
    before = model(x).numpy()
    table = model.offsets["user_id"].embeddings
    user = int(x["user_id"][0])
    rows = table.numpy()
    rows[user, 0] += 0.7
    table.assign(rows)
    shift = model(x).numpy() - before
    mine = x["user_id"] == user
    assert mine.any() and (~mine).any()
    np.testing.assert_allclose(shift[mine], 0.7, atol=1e-5)
    np.testing.assert_allclose(shift[~mine], 0.0, atol=1e-6)


def test_paper_din_has_no_offsets_and_bad_names_are_rejected(spec):
    plain, with_offset = _din(spec), _din(spec, first_order=("user_id",))
    assert not plain.offsets
    assert len(with_offset.trainable_weights) == len(plain.trainable_weights) + 1
    for bad in ("pos_hist", "genome", "nope"):
        with pytest.raises(ValueError, match=bad):
            _din(spec, first_order=(bad,))
    with pytest.raises(ValueError, match="twice"):
        _din(spec, first_order=("user_id", "user_id"))


def test_din_offsets_survive_save_and_train_in_the_tflite_file(spec, tmp_path):
    import keras

    model = _din(spec, first_order=("user_id", "category"))
    x = random_features(spec, 3 * BATCH, seed=6)
    loaded = keras.models.load_model(save_cloud_model(model, tmp_path))
    assert loaded.first_order == ("user_id", "category")
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), atol=1e-6, rtol=0)

    path = tmp_path / "din.tflite"
    export_tflite(model, path, ExportConfig(batch_size=BATCH, learning_rate=0.5, global_ctr=0.4))
    device = OnDeviceModel(path)
    y = np.random.default_rng(6).integers(0, 2, 3 * BATCH).astype(np.float32)
    initial = model.offsets["user_id"].embeddings.numpy().copy()
    device.train(x, y)
    reference = TrainableModule(model, ExportConfig(batch_size=BATCH))
    step = tf.function(reference.train)
    for s in range(0, 3 * BATCH, BATCH):
        step(**{k: v[s : s + BATCH] for k, v in x.items()}, label=y[s : s + BATCH],
             sample_weight=np.ones(BATCH, np.float32), learning_rate=np.float32(0.5))
    state = device.save()
    offset = next(v for k, v in state.items() if "offset_user_id" in k)
    np.testing.assert_allclose(offset, model.offsets["user_id"].embeddings.numpy(), atol=1e-5)
    seen = np.isin(np.arange(len(offset)), x["user_id"])
    assert np.abs(offset - initial)[seen].min() > 1e-6  # every user in the batches moved its own row
    np.testing.assert_array_equal(offset[~seen], initial[~seen])  # and nobody else's
    np.testing.assert_allclose(device.infer(x), model.predict_proba(x), atol=1e-5, rtol=0)
