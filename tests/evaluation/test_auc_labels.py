"""The AUC entry points take 0/1 labels only: anything else (2, -1, 0.5,
+-1 labels, corrected soft labels, NaN) is a one-line ValueError naming the
first bad value, never a silently wrong number or a NaN for every user."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lcft_tf.correction import correct_labels
from lcft_tf.evaluation.metrics import auc, per_user_auc, user_weighted_auc

SCORES = np.array([0.9, 0.1, 0.4, 0.6, 0.3, 0.8, 0.2, 0.7])
USERS = np.array([0, 0, 0, 0, 1, 1, 1, 1])
GOOD = np.array([1, 0, 0, 1, 0, 1, 0, 1])


def _soft_labels() -> np.ndarray:
    # A user clicking 4/8 corrected towards a global CTR of 0.2 (soft1):
    # positives become 0.4, negatives stay 0 -- labels for training, not for AUC.
    soft = correct_labels(GOOD, "soft1", 0.2)
    assert set(np.unique(soft)) == {np.float32(0.0), np.float32(0.4)}
    return soft


BAD = {
    "two": (np.array([2, 0, 0, 1, 0, 1, 0, 1]), "2"),
    "minus_one": (np.array([1, 0, -1, 1, 0, 1, 0, 1]), "-1"),
    "half": (np.array([1.0, 0.0, 0.5, 1.0, 0.0, 1.0, 0.0, 1.0]), "0.5"),
    "plus_minus_one": (np.where(GOOD == 1, 1, -1), "-1"),
    "plus_minus_one_float": (np.where(GOOD == 1, 1.0, -1.0), "-1.0"),
    "soft_from_correction": (_soft_labels(), "0.4"),
    "nan": (np.array([1.0, 0.0, np.nan, 1.0, 0.0, 1.0, 0.0, 1.0]), "nan"),
    "uint8_255": (np.array([1, 0, 255, 1, 0, 1, 0, 1], np.uint8), "255"),
    "strings": (np.array(["1", "0", "0", "1", "0", "1", "0", "1"]), "'1'"),
}

ENTRY_POINTS = {
    "auc": lambda labels: auc(labels, SCORES),
    "per_user_auc": lambda labels: per_user_auc(USERS, labels, SCORES),
    "user_weighted_auc": lambda labels: user_weighted_auc(USERS, labels, SCORES),
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("kind", sorted(BAD))
def test_labels_other_than_0_1_are_refused(entry, kind):
    labels, first_bad = BAD[kind]
    with pytest.raises(ValueError, match="labels must be 0/1") as info:
        ENTRY_POINTS[entry](labels)
    message = str(info.value)
    assert "\n" not in message
    assert first_bad in message  # names the first bad value


def test_the_first_bad_value_and_its_position_are_named():
    with pytest.raises(ValueError, match=r"got 3 at index 5"):
        auc(np.array([0, 1, 1, 0, 1, 3, 7, 0]), SCORES)


@pytest.mark.parametrize(
    "labels",
    [
        GOOD.astype(bool),
        GOOD.astype(np.int8),
        GOOD.astype(np.uint8),
        GOOD.astype(np.int64),
        GOOD.astype(np.float32),
        GOOD.astype(np.float64),
        correct_labels(GOOD, "none", 0.25),  # no correction: float32 0/1
        [bool(v) for v in GOOD],
        [int(v) for v in GOOD],
    ],
    ids=["bool", "int8", "uint8", "int64", "float32", "float64", "corrected_none", "list_bool", "list_int"],
)
def test_valid_0_1_labels_give_sklearns_auc(labels):
    reference = roc_auc_score(GOOD, SCORES)
    assert auc(labels, SCORES) == pytest.approx(reference, abs=1e-12)
    value, count = per_user_auc(USERS, labels, SCORES)
    for u in (0, 1):
        m = USERS == u
        assert value[u] == pytest.approx(roc_auc_score(GOOD[m], SCORES[m]), abs=1e-12)
    assert list(count) == [4, 4]
    weighted = user_weighted_auc(USERS, labels, SCORES)
    per_user = [roc_auc_score(GOOD[USERS == u], SCORES[USERS == u]) for u in (0, 1)]
    assert weighted.value == pytest.approx(np.mean(per_user))  # 4 test samples each: equal weights
    assert (weighted.users_used, weighted.users_left_out) == (2, 0)


def test_one_class_and_empty_inputs_stay_nan_not_errors():
    assert np.isnan(auc(np.ones(4, np.int8), SCORES[:4]))
    assert np.isnan(auc(np.zeros(0), np.zeros(0)))
    value, count = per_user_auc(np.zeros(0, int), np.zeros(0), np.zeros(0))
    assert len(value) == len(count) == 0
