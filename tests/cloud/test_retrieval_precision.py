"""CoDA's retrieval precision diagnostics (docs/coda.md "Precision"), on a
hand-made dataset with the answers worked out by hand."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lcft_tf.cloud.retrieval import retrieval_precision
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.features import FeatureSpec, SequenceFeature, SparseFeature


def _dataset() -> CTRDataset:
    """u0: items 1 2 3 | 4, u1: 1 5 | 6 7, u2: 8 3 9 | 9 (train | test).
    Train clicks: u0 {1, 3}, u1 {1, 5}, u2 {9}."""
    items = np.array([1, 2, 3, 4, 1, 5, 6, 7, 8, 3, 9, 9], np.int32)
    labels = np.array([1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1], np.int8)
    spec = FeatureSpec((SparseFeature("item_id", 10),
                        SequenceFeature("pos_hist", 10, 1, embedding="item_id", query="item_id")))
    return CTRDataset("p", spec, {"item_id": items, "pos_hist": np.zeros((12, 1), np.int32)}, labels,
                      np.arange(12, dtype=np.int64), np.array([0, 4, 8, 12]), np.array([3, 6, 11]),
                      info={"taste_cluster": [0, 0, 1]})


IDS = np.array([[4, 8], [0, 9], [0, 5]])  # u0 gets u1, u2; u1 gets u0, u2; u2 gets u0, u1


def test_precision_known_answers():
    got = retrieval_precision(_dataset(), IDS)
    # Overlap: u0's clicks {1, 3} are shared by u1 only, u1's {1, 5} by u0 only, u2's {9} by nobody.
    assert got["history_overlap"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    # Chance: pool shares of those users (pool 3 / 2 / 3 train samples): 2/5, 3/6, 0.
    assert got["history_overlap_chance"] == pytest.approx((0.4 + 0.5 + 0.0) / 3)
    # Click rates of the retrieved sets 1/2, 1/2, 1 against the local ones 2/3, 1, 1/3.
    assert got["click_rate_correlation"] == pytest.approx(np.corrcoef([0.5, 0.5, 1.0], [2 / 3, 1.0, 1 / 3])[0, 1])
    # Clusters 0, 0, 1: own-cluster shares 1/2, 1/2, 0; chance (5 - own) / (8 - own) and 0 / 5.
    assert got["own_cluster"] == pytest.approx(1 / 3)
    assert got["own_cluster_chance"] == pytest.approx((0.4 + 0.5 + 0.0) / 3)


def test_precision_uses_the_devices_local_clicks_only():
    """Under a cap of 1, u0's local data is its item 3 (clicked), which no
    other user clicked: u0's overlap drops from 1/2 to 0."""
    got = retrieval_precision(dataclasses.replace(_dataset(), max_local_samples=1), IDS)
    assert got["history_overlap"] == pytest.approx((0.0 + 0.0 + 0.0) / 3)  # u1 keeps only item 5: nobody else
    with pytest.raises(ValueError, match="ids must be"):
        retrieval_precision(_dataset(), IDS[:2])
