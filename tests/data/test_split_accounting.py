"""What a loader's split did, recorded for the report (data.dataset.split_accounting)."""

from __future__ import annotations

import numpy as np

from lcft_tf.data import load_real_dataset
from lcft_tf.data.dataset import per_user_split, split_accounting
from raw_fixtures import write_movielens


def test_known_answer_on_hand_made_users():
    # user 0: 10 samples over 10 seconds; user 1: 3 samples; user 2: 4 samples in one second; user 3: 1 sample.
    timestamps = np.r_[np.arange(10), [5, 6, 7], [9, 9, 9, 9], [4]]
    offsets = np.array([0, 10, 13, 17, 18])
    split = per_user_split(offsets, 0.2, timestamps)
    assert list(split - offsets[:-1]) == [8, 2, 4, 1]  # user 2 all train (one second), user 3 all train (one sample)
    got = split_accounting(offsets, split, timestamps, min_train=2, min_test=1)
    assert got == {"users_before": 4, "users_kept": 2, "dropped_too_few_train": 1, "dropped_too_few_test": 1,
                   "dropped_all_in_one_second": 1, "test_share": round(3 / 13, 4)}


def test_the_movielens_loader_records_what_it_dropped(tmp_path):
    rows = write_movielens(tmp_path / "raw", fmt="100k")
    data = load_real_dataset("movielens", tmp_path / "raw", cache_dir=tmp_path / "cache", split="per_user",
                             min_train=5)
    got = data.info["split_accounting"]
    raw_users = {r[0] for r in rows}
    assert got["users_before"] == len(raw_users) and got["users_kept"] == data.num_users
    assert got["users_before"] - got["users_kept"] == got["dropped_too_few_train"] + got["dropped_too_few_test"]
    test = (data.offsets[1:] - data.split).sum()
    assert got["test_share"] == round(test / data.num_samples, 4)
