"""User-weighted AUC (paper eq. 12), rose / stayed / fell shares (Fig. 3) and
the paired user bootstrap; definitions in docs/evaluation.md.

AUC values are in [0, 1]; a user whose test samples are all one class (or
who has none) has NaN. Labels are raw 0/1 clicks: anything else (2, -1,
0.5, NaN, +-1 labels, a correction's soft labels) is refused with a
``ValueError`` rather than read as a click and turned into a wrong number.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def binary_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as bool ``[S]``, checked to be clicks: bool, or integers /
    floats each exactly 0 or 1. Raises a one-line ``ValueError`` naming the
    first other value (2, -1, 0.5, NaN, a soft corrected label, ...) and its
    index, or for a dtype that is not bool / integer / float, or labels that
    are not one-dimensional."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 0/1 of shape [S], got shape {labels.shape}")
    if labels.dtype == np.bool_:
        return labels
    if np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating):
        bad = np.flatnonzero(~((labels == 0) | (labels == 1)))  # NaN compares unequal: refused too
    else:  # strings, objects, complex: never read as clicks
        bad = np.arange(min(len(labels), 1))
    if len(bad):
        raise ValueError(
            f"labels must be 0/1 (bool, or integers / floats exactly 0 or 1), got {labels[bad[0]].item()!r} "
            f"at index {bad[0]} (dtype {labels.dtype}); pass the raw clicks, not corrected or +-1 labels"
        )
    return labels == 1 if len(labels) else np.zeros(0, bool)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of one set of samples, ties counted half.

    ``labels``: ``[S]`` 0/1 (bool, or integer / float values exactly 0 or
    1); ``scores``: float ``[S]``, finite. Returns a float in [0, 1]; NaN
    when only one class is present or ``S == 0``. Raises ``ValueError`` as
    :func:`per_user_auc` (any other label value included).
    """
    value, _ = per_user_auc(np.zeros(len(labels), np.int64), labels, scores)
    return float(value[0]) if len(value) else float("nan")


def per_user_auc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC of every user id ``0..max(users)`` (vectorised, ties averaged).

    ``users``: int ``[S]`` user id >= 0 of each sample; ``labels``: ``[S]``
    0/1 (see :func:`binary_labels`); ``scores``: float ``[S]``. Mann-Whitney rank sums within each user,
    a run of equal scores sharing its average rank (ties count half).

    Returns ``(auc, count)``: float64 and int64 ``[max(users) + 1]`` (both
    empty when ``S == 0``); ``auc`` is NaN for users whose samples are all
    one class (or who have none), ``count`` their number of samples.
    Raises ``ValueError`` if the lengths differ, a score is NaN / inf, or a
    label is not 0/1 (:func:`binary_labels`: the message names the first
    bad value; 2, -1, 0.5, NaN and soft corrected labels are all refused).
    """
    users = np.asarray(users, dtype=np.int64)
    labels = binary_labels(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if not (len(users) == len(labels) == len(scores)):
        raise ValueError("users, labels and scores must have the same length")
    if len(users) == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf")
    num = int(users.max()) + 1
    order = np.lexsort((scores, users))
    u, s, y = users[order], scores[order], labels[order]
    n = len(u)
    # Runs of equal (user, score) share their average position (ties count half).
    new_run = np.ones(n, bool)
    new_run[1:] = (u[1:] != u[:-1]) | (s[1:] != s[:-1])
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.r_[starts[1:], n]
    avg_position = (starts + ends - 1) / 2.0  # 0-based global positions
    count = np.bincount(u, minlength=num)
    user_start = np.r_[0, np.cumsum(count)[:-1]]
    rank = avg_position[run_id] - user_start[u] + 1.0  # 1-based rank within the user
    pos = np.bincount(u, weights=y, minlength=num)
    neg = count - pos
    rank_sum = np.bincount(u, weights=rank * y, minlength=num)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)
    value[(pos == 0) | (neg == 0)] = np.nan
    return value, count


@dataclasses.dataclass(frozen=True)
class WeightedAUC:
    """Result of eq. 12 (docs/evaluation.md "User-weighted AUC").

    ``value``: the weighted AUC in [0, 1] (NaN when no user is used);
    ``users_used``: users in the average; ``users_left_out``: users with
    test samples but a NaN AUC (test set of one class).
    """

    value: float
    users_used: int
    users_left_out: int  # test set of one class only


def user_weighted_auc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> WeightedAUC:
    """Eq. 12: per-user AUC averaged with weights = the user's test samples;
    users whose test samples are all one class are left out (and counted).

    Arguments and errors as :func:`per_user_auc` (``[S]`` per test sample):
    ``ValueError`` for mismatched lengths, a NaN / inf score or a label
    that is not 0/1.
    """
    return weighted_user_mean(*per_user_auc(users, labels, scores))


def weighted_user_mean(value: np.ndarray, count: np.ndarray) -> WeightedAUC:
    """The eq. 12 average of per-user values: weights = test samples; users
    with a NaN value (one-class test set) are left out and counted.

    ``value``: float ``[users]``; ``count``: int ``[users]`` test samples
    (users with 0 are neither used nor left out). Raises nothing itself;
    mismatched shapes fail in numpy indexing.
    """
    present = count > 0
    used = present & np.isfinite(value)
    total = count[used].sum()
    mean = float((value[used] * count[used]).sum() / total) if total else float("nan")
    return WeightedAUC(mean, int(used.sum()), int((present & ~used).sum()))


def change_shares(base: np.ndarray, other: np.ndarray, tolerance: float = 1e-6) -> dict[str, float]:
    """Share of users whose AUC rose / stayed (within ``tolerance``) / fell
    from ``base`` to ``other`` (paper Fig. 3; docs/evaluation.md "Rose /
    stayed / fell"); users with NaN are ignored.

    ``base``, ``other``: float ``[users]`` per-user AUC of one seed;
    ``tolerance``: AUC units, >= 0. Returns ``{"rose", "stayed", "fell"}``,
    each a share in [0, 1] of the users with both values finite (all 0.0
    when there are none). Raises nothing.
    """
    ok = np.isfinite(base) & np.isfinite(other)
    diff = other[ok] - base[ok]
    n = max(int(ok.sum()), 1)
    return {
        "rose": float((diff > tolerance).sum() / n),
        "stayed": float((np.abs(diff) <= tolerance).sum() / n),
        "fell": float((diff < -tolerance).sum() / n),
    }


def paired_bootstrap(
    values: np.ndarray,
    weights: np.ndarray,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    max_block_elements: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted mean over users of each column of ``values`` ([users, K]) and
    its percentile bootstrap interval (docs/evaluation.md).

    Users are resampled with replacement; one resample picks the same users
    for every column, so columns that are gains of several methods on the same
    users stay paired. The interval is the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of the ``resamples`` resampled means,
    drawn with ``numpy.random.default_rng(seed)``; ``max_block_elements``
    bounds memory (resamples x users drawn at once) and does not change the
    result.

    ``values``: float ``[users, K]``; ``weights``: float ``[users]`` > 0 (test
    samples). Returns ``(estimate, low, high)``, float64 each of length K
    (all NaN when there are no users). Raises ``ValueError`` for other
    shapes, non-finite values or weights, weights <= 0, ``resamples < 1`` or
    ``confidence`` outside (0, 1).
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if values.ndim != 2 or weights.shape != (values.shape[0],):
        raise ValueError(f"values must be [users, K] and weights [users], got {values.shape} and {weights.shape}")
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(weights)) and np.all(weights > 0)):
        raise ValueError("bootstrap needs finite values and positive finite weights")
    if resamples < 1 or not 0.0 < confidence < 1.0:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples}, {confidence}")
    n, k = values.shape
    if n == 0:
        nan = np.full(k, np.nan)
        return nan, nan.copy(), nan.copy()
    weighted = values * weights[:, None]
    estimate = weighted.sum(0) / weights.sum()
    rng = np.random.default_rng(seed)
    stats = np.empty((resamples, k))
    block = max(1, min(resamples, max_block_elements // n))
    for start in range(0, resamples, block):
        b = min(block, resamples - start)
        picks = rng.integers(0, n, size=(b, n))
        # counts[j, u]: how often resample j drew user u (row by row: cache-friendly)
        counts = np.empty((b, n))
        for j in range(b):
            counts[j] = np.bincount(picks[j], minlength=n)
        stats[start : start + b] = (counts @ weighted) / (counts @ weights)[:, None]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail], axis=0)
    return estimate, low, high
