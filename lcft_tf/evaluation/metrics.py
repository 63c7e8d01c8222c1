"""User-weighted AUC (paper eq. 12) and the per-user breakdowns behind Figs. 1-3."""

from __future__ import annotations

import dataclasses

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC with ties counted half (NaN when only one class is present)."""
    value, _ = per_user_auc(np.zeros(len(labels), np.int64), labels, scores)
    return float(value[0]) if len(value) else float("nan")


def per_user_auc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUC of every user id ``0..max(users)`` (vectorised, ties averaged).

    Returns ``(auc, count)``; ``auc`` is NaN for users whose samples are all
    one class (or who have none).
    """
    users = np.asarray(users, dtype=np.int64)
    labels = np.asarray(labels).astype(bool)
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
    value: float
    users_used: int
    users_left_out: int  # test set of one class only


def user_weighted_auc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> WeightedAUC:
    """Eq. 12: per-user AUC averaged with weights = the user's test samples;
    users whose test samples are all one class are left out (and counted)."""
    return weighted_user_mean(*per_user_auc(users, labels, scores))


def weighted_user_mean(value: np.ndarray, count: np.ndarray) -> WeightedAUC:
    """The eq. 12 average of per-user values: weights = test samples; users
    with a NaN value (one-class test set) are left out and counted."""
    present = count > 0
    used = present & np.isfinite(value)
    total = count[used].sum()
    mean = float((value[used] * count[used]).sum() / total) if total else float("nan")
    return WeightedAUC(mean, int(used.sum()), int((present & ~used).sum()))


def change_shares(base: np.ndarray, other: np.ndarray, tolerance: float = 1e-6) -> dict[str, float]:
    """Share of users whose AUC rose / stayed (within ``tolerance``) / fell
    from ``base`` to ``other`` (paper Fig. 3); users with NaN are ignored."""
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
    users stay paired. Returns ``(estimate, low, high)``, each of length K.
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
