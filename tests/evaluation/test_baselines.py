"""Reference baselines (popularity, item count): train data only, scored
like every method, and equal to an independent reference."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lcft_tf.data.synthetic import SyntheticConfig, generate
from lcft_tf.evaluation.baselines import SMOOTHING_GRID, baseline_scores, choose_smoothing
from lcft_tf.evaluation.metrics import user_weighted_auc
from cloud_settings import fixed_epochs_cloud

DATA = SyntheticConfig(num_users=40, num_items=25, mean_samples_per_user=30, history_length=2, dense_dim=1, seed=7)


def _reference(data, smoothing):
    """Loop over samples: counts from train rows, scores for test rows, per-user sklearn AUC."""
    clicks, shown = defaultdict(float), defaultdict(int)
    train_labels = []
    for u in range(data.num_users):
        for i in range(data.offsets[u], data.split[u]):
            item = int(data.features["item_id"][i])
            clicks[item] += float(data.labels[i])
            shown[item] += 1
            train_labels.append(float(data.labels[i]))
    w_g = sum(train_labels) / len(train_labels)
    total, weight = 0.0, 0
    for u in range(data.num_users):
        rows = range(data.split[u], data.offsets[u + 1])
        y = [int(data.labels[i]) for i in rows]
        if len(set(y)) < 2:
            continue
        s = [(clicks[int(data.features["item_id"][i])] + smoothing * w_g) / (shown[int(data.features["item_id"][i])] + smoothing)
             if shown[int(data.features["item_id"][i])] + smoothing > 0 else w_g for i in rows]
        total += roc_auc_score(y, s) * len(y)
        weight += len(y)
    return total / weight


@pytest.mark.parametrize("smoothing", [0.0, 5.0, 100.0])
def test_popularity_equals_an_independent_per_user_reference(smoothing):
    data = generate(DATA)
    users = np.arange(data.num_users)
    scores = baseline_scores(data, users, smoothing)["popularity"]
    test = ~data.train_mask
    sample_users = np.repeat(users, np.asarray(data.offsets[1:]) - np.asarray(data.split))
    got = user_weighted_auc(sample_users, data.labels[test], scores).value
    assert got == pytest.approx(_reference(data, smoothing), abs=1e-6)


def test_item_count_counts_train_impressions_only():
    data = generate(DATA)
    scores = baseline_scores(data, np.arange(data.num_users), 1.0)["item_count"]
    items = data.features["item_id"]
    train_items = items[data.train_mask]
    expected = np.array([np.sum(train_items == i) for i in items[~data.train_mask]], np.float32)
    np.testing.assert_array_equal(scores, expected)


def test_the_smoothing_is_chosen_without_reading_the_test_split():
    data = generate(DATA)
    chosen, validation = choose_smoothing(data)
    assert chosen in SMOOTHING_GRID and set(validation) == {str(float(m)) for m in SMOOTHING_GRID}
    assert validation[str(chosen)] == max(v for v in validation.values())
    flipped = dataclasses.replace(data, labels=np.where(data.train_mask, data.labels, 1 - data.labels).astype(data.labels.dtype))
    assert choose_smoothing(flipped) == (chosen, validation)


@pytest.mark.slow
def test_every_run_reports_the_baselines_beside_cloud(tmp_path):
    from lcft_tf.cloud.export import ExportConfig
    from lcft_tf.fleet.config import FleetConfig
    from lcft_tf.pipeline.config import ExperimentConfig
    from lcft_tf.pipeline.experiment import run_experiment

    config = ExperimentConfig(synthetic=DATA, models=("lr",), methods=("cloud", "local"), seeds=(0,),
                              cloud=fixed_epochs_cloud(optimizer="sgd", epochs=1, learning_rate=0.5),
                              fleet=FleetConfig(learning_rate=0.1, users_per_chunk=20, workers=1),
                              export=ExportConfig(batch_size=8), output_dir=str(tmp_path), name="b")
    results = run_experiment(config)
    numbers = results["summary"]["models"]["lr"]
    assert {"popularity", "item_count"} <= set(numbers["methods"])
    assert "popularity" in numbers["gains"]["vs_cloud"]
    assert results["baselines"]["popularity"]["smoothing"] in SMOOTHING_GRID
    data = generate(DATA)
    assert numbers["methods"]["popularity"]["mean"] == pytest.approx(
        _reference(data, results["baselines"]["popularity"]["smoothing"]), abs=1e-6)
    assert "popularity" in (tmp_path / "b" / "report.md").read_text()
