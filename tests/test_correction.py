"""Label correction: the LCFT equation, edge cases, the hard table, and the
paper's Example 1 reproduced by fine-tuning inside the TFLite interpreter."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from lcft_tf.correction import (
    HardCorrectionTable,
    correct_labels,
    correction_pair,
    local_ctr,
    soft1,
    soft2,
)

RATES = [0.0, 0.01, 0.1, 0.17, 0.25, 0.5, 0.51, 0.75, 0.99, 1.0]


@pytest.mark.parametrize("method", [soft1, soft2])
def test_corrected_mean_equals_global_ctr(method):
    rng = np.random.default_rng(0)
    pairs = list(itertools.product(RATES, RATES)) + [tuple(rng.random(2)) for _ in range(500)]
    for w_i, w_g in pairs:
        alpha, beta = method(w_i, w_g)
        assert np.isfinite(alpha) and np.isfinite(beta)
        assert w_i * alpha + (1 - w_i) * beta == pytest.approx(w_g, abs=1e-12), (w_i, w_g)


def test_soft_forms_follow_the_paper():
    assert soft1(0.8, 0.5) == (0.625, 0.0)
    assert soft1(0.25, 0.5) == pytest.approx((1.0, 1 / 3))
    assert soft2(0.8, 0.5) == pytest.approx((1.0, -1.5))  # beta < 0 allowed
    assert soft2(0.25, 0.5) == (2.0, 0.0)  # alpha > 1 allowed (paper Example 1)
    assert soft1(0.3, 0.3) == soft2(0.3, 0.3) == (1.0, 0.0)


def test_one_class_users_have_defined_answers():
    assert soft1(0.0, 0.4) == (1.0, 0.4)
    assert soft1(1.0, 0.4) == (0.4, 0.0)
    assert soft2(0.0, 0.4) == soft1(0.0, 0.4)
    assert soft2(1.0, 0.4) == soft1(1.0, 0.4)
    np.testing.assert_allclose(correct_labels([0, 0, 0], "soft2", 0.4), [0.4] * 3)
    np.testing.assert_allclose(correct_labels([1, 1], "soft1", 0.4), [0.4] * 2)


def test_users_without_samples():
    with pytest.raises(ValueError, match="no local samples"):
        local_ctr([])
    for method in ("none", "soft1", "soft2"):
        assert correct_labels([], method, 0.5).shape == (0,)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf")])
def test_invalid_rates_name_the_value(bad):
    for fn in (soft1, soft2):
        with pytest.raises(ValueError, match=str(bad)):
            fn(bad, 0.5)
        with pytest.raises(ValueError, match=str(bad)):
            fn(0.5, bad)
    with pytest.raises(ValueError, match=str(bad)):
        HardCorrectionTable.identity().lookup(bad)


def test_bad_labels_and_methods():
    with pytest.raises(ValueError, match="0 or 1"):
        local_ctr([1, 0, 0.5])
    with pytest.raises(ValueError, match="unknown correction method"):
        correct_labels([1, 0], "soft3", 0.5)
    with pytest.raises(ValueError, match="HardCorrectionTable"):
        correction_pair("hard", 0.5, 0.5)


def test_correct_labels_maps_positives_and_negatives():
    labels = np.array([1, 0, 0, 0])  # w_i = 0.25
    np.testing.assert_allclose(correct_labels(labels, "soft2", 0.5), [2, 0, 0, 0])
    np.testing.assert_allclose(correct_labels(labels, "soft1", 0.5), [1, 1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_array_equal(correct_labels(labels, "none", 0.5), labels)
    assert correct_labels(labels, "none", 0.5).dtype == np.float32


def test_hard_table_lookup_and_json_round_trip():
    table = HardCorrectionTable(edges=(0.2, 0.5), alphas=(1.5, 1.0, 0.6), betas=(0.1, 0.0, -0.05))
    assert [table.interval(w) for w in (0.0, 0.19, 0.2, 0.49, 0.5, 1.0)] == [0, 0, 1, 1, 2, 2]
    assert table.lookup(0.1) == (1.5, 0.1)
    assert correction_pair("hard", 0.7, 0.5, table) == (0.6, -0.05)
    again = HardCorrectionTable.from_json(json.dumps(table.to_json()))
    assert again == table
    np.testing.assert_allclose(correct_labels([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], "hard", 0.5, table), [1.5] + [0.1] * 9)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(edges=(0.5, 0.2), alphas=(1, 1, 1), betas=(0, 0, 0)),
        dict(edges=(0.0,), alphas=(1, 1), betas=(0, 0)),
        dict(edges=(0.5,), alphas=(1,), betas=(0, 0)),
        dict(edges=(0.5,), alphas=(1, float("nan")), betas=(0, 0)),
    ],
)
def test_hard_table_rejects_bad_tables(kwargs):
    with pytest.raises(ValueError):
        HardCorrectionTable(**kwargs)
    with pytest.raises(ValueError, match="missing"):
        HardCorrectionTable.from_json({"edges": []})


def test_paper_example_1_in_the_interpreter(tmp_path):
    """w_g = 0.5, w_i = 0.25. The user saw I1 (true CTR 0.3) and I3 (0.2); the
    cloud predicts I1, I2, I3 = 0.5, 0.35, 0.6. Fine-tuning on raw labels
    ranks I2 first (wrong); on soft2 labels (alpha = 2) it gives about
    0.6, 0.35, 0.4 and the right order I1 > I3 > I2."""

    from lcft_tf import models
    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.device.model import OnDeviceModel
    from lcft_tf.features import FeatureSpec, SparseFeature

    spec = FeatureSpec((SparseFeature("item_id", 4),))
    model = models.build("lr", spec)
    logit = lambda p: np.log(p / (1 - p))
    table = model.linear.weights_by_table["item_id"].embeddings
    table.assign(np.array([[0.0], [logit(0.5)], [logit(0.35)], [logit(0.6)], [0.0]], np.float32))
    path = tmp_path / "lr.tflite"
    export_tflite(model, path, ExportConfig(batch_size=32, global_ctr=0.5))
    items = {"item_id": np.array([1, 2, 3], np.int32)}

    # 10 impressions of I1 with 3 clicks, 10 of I3 with 2 clicks: w_i = 0.25.
    local = {"item_id": np.array([1] * 10 + [3] * 10, np.int32)}
    raw = np.array([1] * 3 + [0] * 7 + [1] * 2 + [0] * 8, np.float32)
    results = {}
    for method in ("none", "soft2", "soft1"):
        device = OnDeviceModel(path)
        np.testing.assert_allclose(device.infer(items), [0.5, 0.35, 0.6], atol=1e-6)
        labels = device.correct(raw, method)
        for _ in range(300):
            device.train(local, labels, learning_rate=2.0)
        results[method] = device.infer(items)
    np.testing.assert_allclose(results["none"], [0.3, 0.35, 0.2], atol=1e-3)
    np.testing.assert_allclose(results["soft2"], [0.6, 0.35, 0.4], atol=1e-3)
    order = lambda p: list(np.argsort(-p) + 1)
    assert order(results["none"]) == [2, 1, 3]  # wrong: I2 first
    assert order(results["soft2"]) == [1, 3, 2]
    assert order(results["soft1"]) == [1, 3, 2]
