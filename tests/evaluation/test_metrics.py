"""User-weighted AUC against scikit-learn and a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lcft_tf.evaluation.metrics import auc, change_shares, per_user_auc, user_weighted_auc, weighted_user_mean


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 200)
        s = np.round(rng.random(200), 1)  # many ties
        assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_per_user_auc_matches_sklearn_per_user():
    rng = np.random.default_rng(1)
    users = rng.integers(0, 30, 3000)
    y = rng.integers(0, 2, 3000)
    s = np.round(rng.random(3000) + 0.3 * y, 2)
    value, count = per_user_auc(users, y, s)
    for u in range(30):
        m = users == u
        assert count[u] == m.sum()
        assert value[u] == pytest.approx(roc_auc_score(y[m], s[m]), abs=1e-12)


def test_user_weighted_auc_hand_computed():
    # user 0: 2 samples, perfectly ranked (AUC 1); user 1: 4 samples, AUC 0.25;
    # user 2: one class only -> left out.
    users = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    labels = np.array([1, 0, 1, 1, 0, 0, 1, 1])
    scores = np.array([0.9, 0.1, 0.2, 0.5, 0.4, 0.6, 0.3, 0.3])
    # user 1 pairs (pos, neg): (0.2,0.4) no, (0.2,0.6) no, (0.5,0.4) yes, (0.5,0.6) no -> 1/4
    result = user_weighted_auc(users, labels, scores)
    assert result.value == pytest.approx((2 * 1.0 + 4 * 0.25) / 6)
    assert (result.users_used, result.users_left_out) == (2, 1)


def test_user_weighted_auc_matches_sklearn_reference():
    rng = np.random.default_rng(2)
    users = np.repeat(np.arange(40), rng.integers(1, 30, 40))
    y = (rng.random(len(users)) < 0.3).astype(int)
    s = rng.random(len(users)) + 0.2 * y
    total = weight = 0.0
    left_out = 0
    for u in range(40):
        m = users == u
        if len(np.unique(y[m])) < 2:
            left_out += 1
            continue
        total += m.sum() * roc_auc_score(y[m], s[m])
        weight += m.sum()
    result = user_weighted_auc(users, y, s)
    assert result.value == pytest.approx(total / weight, abs=1e-12)
    assert (result.users_used, result.users_left_out) == (40 - left_out, left_out)
    assert left_out > 0  # the case is exercised


def test_users_without_samples_are_neither_used_nor_left_out():
    value, count = per_user_auc(np.array([0, 0, 2, 2]), np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.2, 0.8]))
    assert count.tolist() == [2, 0, 2]
    assert np.isnan(value[1]) and value[0] == 1.0 and value[2] == 0.0
    result = weighted_user_mean(value, count)
    assert (result.value, result.users_used, result.users_left_out) == (0.5, 2, 0)


def test_change_shares():
    base = np.array([0.5, 0.6, 0.7, np.nan])
    other = np.array([0.6, 0.6, 0.65, 0.9])
    assert change_shares(base, other) == {"rose": 1 / 3, "stayed": 1 / 3, "fell": 1 / 3}
    # the tolerance decides "stayed": a change of 0.05 stays at tolerance 0.05, not below
    assert change_shares(base, other, tolerance=0.05)["stayed"] == pytest.approx(2 / 3)
    assert change_shares(base, other, tolerance=0.1)["stayed"] == pytest.approx(1.0)


def test_bad_scores():
    with pytest.raises(ValueError):
        per_user_auc(np.zeros(2, int), np.array([0, 1]), np.array([0.1, np.nan]))
