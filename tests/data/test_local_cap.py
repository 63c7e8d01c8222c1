"""``max_local_samples``: a device holds only its user's last N train
samples; the cloud's train data (CoDA's pool), the test split and w_g stay
whole (docs/coda.md "Few-sample users on real data")."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from lcft_tf.data.dataset import CTRDataset
from lcft_tf.features import FeatureSpec, SparseFeature
from lcft_tf.pipeline.config import ExperimentConfig
from lcft_tf.pipeline.stage_table import plan_stages


def _dataset(cap=None) -> CTRDataset:
    """Three users: 7 train + 3 test, 2 train + 1 test, 0 train + 1 test.
    ``item_id`` is the sample's own index, so a row names itself."""
    offsets = np.array([0, 10, 13, 14])
    split = np.array([7, 12, 13])
    labels = np.array([1, 0, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 1], np.int8)
    spec = FeatureSpec((SparseFeature("item_id", 20),))
    return CTRDataset("cap", spec, {"item_id": np.arange(14, dtype=np.int32)}, labels, np.arange(14, dtype=np.int64),
                      offsets, split, max_local_samples=cap)


def test_cap_keeps_each_users_last_train_samples_and_nothing_else_changes():
    full, capped = _dataset(), _dataset(3)
    # Known answers: user 0 keeps train rows 4, 5, 6; user 1 (2 train) keeps both; user 2 has none.
    np.testing.assert_array_equal(capped.local_start, [4, 10, 13])
    np.testing.assert_array_equal(capped.user(0).train_features["item_id"], [4, 5, 6])
    np.testing.assert_array_equal(capped.user(0).train_labels, [1, 0, 1])
    np.testing.assert_array_equal(capped.user(1).train_features["item_id"], [10, 11])
    assert len(capped.user(2).train_labels) == 0
    for u in range(3):  # test samples unchanged
        np.testing.assert_array_equal(capped.user(u).test_features["item_id"], full.user(u).test_features["item_id"])
        np.testing.assert_array_equal(capped.user(u).test_labels, full.user(u).test_labels)
    # The cloud side is whole: its train rows (CoDA's pool) and w_g.
    np.testing.assert_array_equal(capped.train_mask, full.train_mask)
    np.testing.assert_array_equal(capped.train_rows()[0]["item_id"], full.train_rows()[0]["item_id"])
    assert capped.global_ctr == full.global_ctr
    # w_i is the device's: the capped labels' mean (1, 0, 1 -> 2/3), uncapped users unchanged.
    np.testing.assert_allclose(capped.local_ctrs()[:2], [2 / 3, full.local_ctrs()[1]])
    assert np.isnan(capped.local_ctrs()[2])
    assert capped.summary()["local_samples"] == 5 and full.summary()["local_samples"] == 9
    # A cap at or above every user's train count changes nothing.
    np.testing.assert_array_equal(_dataset(7).local_start, full.local_start)


def test_cap_survives_save_load_and_user_subsets(tmp_path: Path):
    capped = _dataset(3)
    back = CTRDataset.load(capped.save(tmp_path / "d"))
    assert back.max_local_samples == 3
    np.testing.assert_array_equal(back.user(0).train_features["item_id"], [4, 5, 6])
    sub = capped.subset_users(np.array([1, 0]))
    np.testing.assert_array_equal(sub.user(1).train_features["item_id"], [4, 5, 6])


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "3"])
def test_cap_must_be_an_integer_of_at_least_one(bad, tmp_path: Path):
    with pytest.raises(ValueError, match="max_local_samples"):
        _dataset(bad)
    with pytest.raises(ValueError, match="max_local_samples"):
        ExperimentConfig(max_local_samples=bad, output_dir=str(tmp_path))
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_cap_is_part_of_the_dataset_stage_key(tmp_path: Path):
    hashes = {cap: plan_stages(ExperimentConfig(max_local_samples=cap, models=("wide_deep",), seeds=(0,)),
                               tmp_path)["dataset"].hash for cap in (None, 10, 20)}
    assert len(set(hashes.values())) == 3


def test_pipeline_dataset_applies_the_cap():
    from lcft_tf.data.synthetic import SyntheticConfig
    from lcft_tf.pipeline.stage_table import load_dataset

    config = ExperimentConfig(synthetic=SyntheticConfig(num_users=20, num_items=30, mean_samples_per_user=30, seed=4),
                              max_local_samples=5, max_users=12)
    data = load_dataset(config)
    full = load_dataset(dataclasses.replace(config, max_local_samples=None))
    local = np.asarray(data.split) - data.local_start
    whole = np.asarray(full.split) - full.offsets[:-1]
    np.testing.assert_array_equal(local, np.minimum(whole, 5))
    assert whole.max() > 5  # the cap bites for some user
    np.testing.assert_array_equal(data.labels, full.labels)
