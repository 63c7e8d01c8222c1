"""Amazon Electronics (DIN's preprocessing) from raw files the user has.

Files in ``data_dir``: ``reviews_Electronics_5.json`` (one JSON object per
line) and ``meta_Electronics.json`` (one object per line; the original dump
writes Python literals, plain JSON lines are accepted too).

Rules: every review is a click on its item; for each one,
``negatives_per_positive`` non-clicked samples are drawn uniformly from the
other items (seeded) at the same time. Per sample: ``user_id``, candidate
``item_id`` and ``category`` (the last entry of the item's first category
path), ``pos_hist`` / ``pos_hist_cat`` = the items / categories the user
reviewed at strictly earlier times (most recent first, 0-padded). Split:
train ``unixReviewTime <= cut`` (default 1,385,078,400), test after; a user
is kept with at least ``min_train`` train and ``min_test`` test samples.

With one negative per positive the click rate is 0.5 by construction; the
paper reports w_g 0.17 for its version, so the counts there are not directly
comparable (``info["paper"]`` holds them).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from lcft_tf.data.dataset import CTRDataset, global_split, previous_items, users_with_enough_samples
from lcft_tf.data.raw import RawDataError, RowReader, require_files
from lcft_tf.features import FeatureSpec, SequenceFeature, SparseFeature

log = logging.getLogger(__name__)

PAPER_CUT = 1_385_078_400
PAPER_AMAZON = {"users": 180_342, "samples": 6_227_300, "global_ctr": 0.17}
LOADER_VERSION = 1
FILES = ("reviews_Electronics_5.json", "meta_Electronics.json")


@dataclasses.dataclass(frozen=True)
class AmazonOptions:
    cut_timestamp: int = PAPER_CUT
    negatives_per_positive: int = 1
    min_train: int = 5
    min_test: int = 1
    history_length: int = 20
    seed: int = 0
    skip_bad_rows: bool = False

    def __post_init__(self) -> None:
        if self.negatives_per_positive < 1 or self.min_train < 1 or self.min_test < 1 or self.history_length < 1:
            raise ValueError("negatives_per_positive, min_train, min_test and history_length must be >= 1")


def _parse_object(line: str) -> dict:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        value = ast.literal_eval(line)  # the original meta dump is Python literals
    if not isinstance(value, dict):
        raise ValueError("expected one object per line")
    return value


def _review(line: str) -> tuple[str, str, int]:
    obj = _parse_object(line)
    user, item, ts = obj["reviewerID"], obj["asin"], obj["unixReviewTime"]
    if not isinstance(ts, int) or ts < 0:
        raise ValueError(f"unixReviewTime must be a non-negative integer, got {ts!r}")
    if not (isinstance(user, str) and isinstance(item, str) and user and item):
        raise ValueError("reviewerID and asin must be non-empty strings")
    return user, item, ts


def _meta(line: str) -> tuple[str, str]:
    obj = _parse_object(line)
    categories = obj.get("categories") or [[]]
    path = categories[0] if categories and isinstance(categories[0], list) else []
    return obj["asin"], (path[-1] if path else "(unknown)")


def build_amazon(data_dir: str | Path, options: AmazonOptions | None = None) -> CTRDataset:
    options = options or AmazonOptions()
    started = time.perf_counter()
    data_dir = Path(data_dir)
    require_files(data_dir, FILES, "amazon", "from the Amazon product data, Electronics 5-core reviews and metadata")
    reader = RowReader(options.skip_bad_rows)
    reviews = list(reader.rows(data_dir / FILES[0], _review))
    if not reviews:
        raise RawDataError(f"{data_dir / FILES[0]}: no reviews")
    item_names = sorted({r[1] for r in reviews})
    item_index = {name: i + 1 for i, name in enumerate(item_names)}
    category_of = {}
    for asin, category in reader.rows(data_dir / FILES[1], _meta):
        if asin in item_index:
            category_of[asin] = category
    category_names = sorted(set(category_of.values()) | {"(unknown)"})
    category_index = {c: i + 1 for i, c in enumerate(category_names)}
    item_category = np.zeros(len(item_names) + 1, np.int32)
    for name, i in item_index.items():
        item_category[i] = category_index[category_of.get(name, "(unknown)")]

    user_names = sorted({r[0] for r in reviews})
    user_index = {name: i for i, name in enumerate(user_names)}
    users = np.array([user_index[r[0]] for r in reviews], np.int64)
    items = np.array([item_index[r[1]] for r in reviews], np.int32)
    times = np.array([r[2] for r in reviews], np.int64)

    # One row per positive, then its sampled negatives (same user and time).
    k = options.negatives_per_positive
    rng = np.random.default_rng(options.seed)
    negatives = rng.integers(1, len(item_names), (len(items), k)).astype(np.int32)
    negatives = np.where(negatives >= items[:, None], negatives + 1, negatives)  # never the positive item
    all_users = np.repeat(users, k + 1)
    all_items = np.concatenate([items[:, None], negatives], axis=1).reshape(-1)
    all_times = np.repeat(times, k + 1)
    labels = np.tile(np.r_[1, np.zeros(k)], len(items)).astype(np.int8)
    review = np.repeat(np.arange(len(items)), k + 1)  # a review's negatives follow it
    order = np.lexsort((1 - labels, review, all_times, all_users))
    all_users, all_items, all_times, labels = all_users[order], all_items[order], all_times[order], labels[order]

    _, counts = np.unique(all_users, return_counts=True)
    offsets = np.r_[0, np.cumsum(counts)]
    split = global_split(offsets, all_times, options.cut_timestamp)
    keep = np.repeat(users_with_enough_samples(offsets, split, options.min_train, options.min_test), counts)
    all_users, all_items, all_times, labels = all_users[keep], all_items[keep], all_times[keep], labels[keep]
    if len(labels) == 0:
        raise RawDataError(f"amazon: no user has >= {options.min_train} train and >= {options.min_test} test samples")
    _, user_ids, counts = np.unique(all_users, return_inverse=True, return_counts=True)
    offsets = np.r_[0, np.cumsum(counts)]
    split = global_split(offsets, all_times, options.cut_timestamp)

    hist = options.history_length
    positives = labels == 1
    num_items = len(item_names) + 1
    features = {
        "user_id": (user_ids + 1).astype(np.int32),
        "item_id": all_items.astype(np.int32),
        "category": item_category[all_items],
        "pos_hist": previous_items(offsets, all_times, all_items, positives, hist),
        "pos_hist_cat": previous_items(offsets, all_times, item_category[all_items], positives, hist),
    }
    spec = FeatureSpec(
        (
            SparseFeature("user_id", len(offsets)),
            SparseFeature("item_id", num_items),
            SparseFeature("category", len(category_names) + 1),
            SequenceFeature("pos_hist", num_items, hist, embedding="item_id", query="item_id"),
            SequenceFeature("pos_hist_cat", len(category_names) + 1, hist, embedding="category", query="category"),
        )
    )
    dataset = CTRDataset(
        name="amazon",
        spec=spec,
        features=features,
        labels=labels,
        timestamps=all_times,
        offsets=offsets,
        split=split,
        info={
            "options": dataclasses.asdict(options),
            "data_dir": str(data_dir),
            "raw_reviews": len(reviews),
            "skipped_rows": dict(reader.skipped),
            "items_without_meta": int(sum(n not in category_of for n in item_names)),
            "seconds": round(time.perf_counter() - started, 2),
            "paper": PAPER_AMAZON,
        },
    )
    log.info("amazon: %s; the paper's: %s", dataset.summary(), PAPER_AMAZON)
    return dataset
