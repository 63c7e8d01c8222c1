"""Reference baselines: what a count of the train data alone achieves.

A comparison of device methods is only as good as the cloud model they start
from, and a cloud model is only worth fine-tuning if it beats scoring items
by how they did in the train data (docs/evaluation.md "Baselines"). Two
baselines, declared in the method registry (:mod:`lcft_tf.methods`, kind
``baseline``), are scored for every run:

* ``popularity``: the item's train click rate smoothed toward ``w_g``,
  ``(clicks + m * w_g) / (impressions + m)``; the pseudo-count ``m`` is
  chosen on validation data carved out of the train period
  (:func:`choose_smoothing`), never on test.
* ``item_count``: the item's number of train impressions.

Both use train samples only and score every user's test samples like any
method, so they get the same per-user AUC, gains and bootstrap intervals.
"""

from __future__ import annotations

import numpy as np

from lcft_tf.data.dataset import VALIDATION_FRACTION, CTRDataset, user_index, validation_rows, validation_split
from lcft_tf.evaluation.metrics import user_weighted_auc

ITEM_FEATURE = "item_id"
SMOOTHING_GRID = (0.0, 1.0, 5.0, 20.0, 100.0)  # pseudo-counts m tried on validation


def item_table(items: np.ndarray, labels: np.ndarray, mask: np.ndarray, num_items: int) -> tuple[np.ndarray, ...]:
    """Per item id ``[num_items]``: clicks (float64) and impressions (int64)
    among the samples in ``mask``."""
    clicks = np.bincount(items[mask], weights=labels[mask].astype(np.float64), minlength=num_items)
    shown = np.bincount(items[mask], minlength=num_items)
    return clicks, shown


def popularity(clicks: np.ndarray, shown: np.ndarray, global_ctr: float, smoothing: float) -> np.ndarray:
    """Smoothed click rate per item, float64; an item never shown scores ``global_ctr``."""
    denominator = shown + smoothing
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = (clicks + smoothing * global_ctr) / denominator
    return np.where(denominator > 0, rate, global_ctr)


def _items(dataset: CTRDataset) -> tuple[np.ndarray, int]:
    items = np.asarray(dataset.features[ITEM_FEATURE], np.int64)
    return items, int(max(items.max(initial=0), 0)) + 1


def choose_smoothing(dataset: CTRDataset, grid=SMOOTHING_GRID,
                     validation_fraction: float = VALIDATION_FRACTION) -> tuple[float, dict[str, float]]:
    """The pseudo-count of :func:`popularity` with the best user-weighted
    validation AUC (first of the grid on ties), and every grid value's AUC.

    Validation: :func:`lcft_tf.data.dataset.validation_split` (each user's
    last ``validation_fraction`` of train samples, or the train period's last
    share for a global split); popularity is counted on the rest of the train
    period. The test split is not read."""
    items, num_items = _items(dataset)
    users = user_index(dataset.offsets)
    validation = validation_rows(dataset, validation_split(dataset, validation_fraction))
    fit = dataset.train_mask & ~validation
    clicks, shown = item_table(items, dataset.labels, fit, num_items)
    w_g = float(dataset.labels[fit].mean()) if fit.any() else 0.5
    scores = {}
    for m in grid:
        rate = popularity(clicks, shown, w_g, float(m))[items[validation]]
        scores[str(float(m))] = user_weighted_auc(users[validation], dataset.labels[validation], rate).value
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    best = max(finite, key=finite.get) if finite else str(float(grid[0]))  # max keeps the first of equal values
    return float(best), scores


def baseline_scores(dataset: CTRDataset, users: np.ndarray, smoothing: float) -> dict[str, np.ndarray]:
    """``{"popularity": [S], "item_count": [S]}`` float32 scores of the test
    samples of ``users`` (dataset user indices, each user's test block in
    order, as fleet results hold them), counted on every train sample."""
    items, num_items = _items(dataset)
    clicks, shown = item_table(items, dataset.labels, dataset.train_mask, num_items)
    rows = np.concatenate([np.arange(dataset.split[u], dataset.offsets[u + 1]) for u in users]) if len(users) \
        else np.zeros(0, np.int64)
    test_items = items[rows]
    return {
        "popularity": popularity(clicks, shown, dataset.global_ctr, smoothing)[test_items].astype(np.float32),
        "item_count": shown[test_items].astype(np.float32),
    }
