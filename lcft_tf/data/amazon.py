"""Amazon reviews (any category of the 5-core dumps) from raw files the user has.

Files in ``data_dir`` (each may be gzipped): ``reviews_<Category>_5.json``
(one JSON object per line), chosen by ``category`` or found automatically
when the folder holds exactly one, and optionally ``meta_<Category>.json``
(one object per line; the original dump writes Python literals, plain JSON
lines are accepted too). Without the meta file every item is its own
category (a warning says so).

Rules (docs/data.md, our reading of the paper): every review is a click on
its item. ``negatives="per_user_ratio"`` (default): each user draws a ratio
r from ``negative_ratios`` (seeded, uniform) and every review of theirs gets
r non-clicked samples of items the user never reviewed, at the review's
time, so each user's train click rate is exactly 1/(1+r) and users drift
from the global rate as in the paper. ``negatives="one_per_review"``: DIN's
rule, one negative per review drawn from the other items (w_i = w_g = 0.5
for everyone, so LCFT equals Local by construction). Per sample:
``user_id``, candidate ``item_id`` and ``category`` (the last entry of the
item's first category path), ``pos_hist`` / ``pos_hist_cat`` = the items /
categories the user reviewed at strictly earlier times (most recent first,
0-padded). Split: ``global`` train ``unixReviewTime <= cut`` (default
1,385,078,400), test after; ``per_user`` each user's last ``test_fraction``
(same-second samples stay together, so a review never leaves its
negatives). A user is kept with at least ``min_train`` train and
``min_test`` test *reviews* (counting samples would keep users by their
drawn ratio).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
import time
from pathlib import Path

import numpy as np

from lcft_tf.data.dataset import (
    CTRDataset,
    global_split,
    per_user_split,
    previous_items,
)
from lcft_tf.data.raw import RawDataError, RowReader, check_int, require_files, resolve
from lcft_tf.features import FeatureSpec, SequenceFeature, SparseFeature

log = logging.getLogger(__name__)

PAPER_CUT = 1_385_078_400
PAPER_AMAZON = {"users": 180_342, "samples": 6_227_300, "global_ctr": 0.17}
LOADER_VERSION = 2
WHERE = "reviews_<Category>_5.json[.gz] and optionally meta_<Category>.json[.gz] from the Amazon product data"
_CATEGORY = re.compile(r"[A-Za-z0-9_]+")
_REVIEWS = re.compile(r"reviews_([A-Za-z0-9_]+)_5\.json(\.gz)?")


@dataclasses.dataclass(frozen=True)
class AmazonOptions:
    """How Amazon raw files become a dataset (rules: docs/data.md).

    Fields:
      category: the <Category> of reviews_<Category>_5.json; None finds the
        only reviews file in the folder.
      negatives: per_user_ratio (each user r negatives per review, r drawn
        from negative_ratios) | one_per_review (DIN's 1:1, no drift).
      negative_ratios: the ratios per_user_ratio draws from, uniformly.
      split: global (cut_timestamp) | per_user (test_fraction).
      cut_timestamp: global split: train is unixReviewTime <= cut.
      test_fraction: per_user split: each user's last fraction is test.
      min_train: a user is kept with at least this many train reviews
        (3 reviews = the old 5 samples at one negative per review).
      min_test: ... and at least this many test reviews.
      history_length: length of pos_hist / pos_hist_cat.
      seed: seed of the ratio draws and the negative sampling.
      skip_bad_rows: skip and count malformed rows instead of stopping.
    """

    category: str | None = None
    negatives: str = "per_user_ratio"
    negative_ratios: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9)
    split: str = "global"
    cut_timestamp: int = PAPER_CUT
    test_fraction: float = 0.2
    min_train: int = 3
    min_test: int = 1
    history_length: int = 20
    seed: int = 0
    skip_bad_rows: bool = False

    def __post_init__(self) -> None:
        if self.category is not None and not _CATEGORY.fullmatch(self.category):
            raise ValueError(f"category must be letters, digits or _ (e.g. Electronics), got {self.category!r}")
        if self.negatives not in ("per_user_ratio", "one_per_review"):
            raise ValueError(f"negatives must be per_user_ratio or one_per_review, got {self.negatives!r}")
        object.__setattr__(self, "negative_ratios", tuple(self.negative_ratios))  # a list from flags hashes too
        if not self.negative_ratios or any(
            isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 1000 for r in self.negative_ratios
        ):
            raise ValueError(f"negative_ratios must be integers in [1, 1000], got {self.negative_ratios!r}")
        if self.split not in ("global", "per_user"):
            raise ValueError(f"split must be global or per_user, got {self.split!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        check_int(self.cut_timestamp, "cut_timestamp")
        check_int(self.seed, "seed")
        for name in ("min_train", "min_test", "history_length"):
            if check_int(getattr(self, name), name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def raw_files(data_dir: Path, category: str | None) -> tuple[Path, Path | None]:
    """The reviews file and the meta file (None when absent) of ``category``."""
    if category is None:
        found = sorted({m.group(1) for p in data_dir.glob("reviews_*_5.json*") if (m := _REVIEWS.fullmatch(p.name))})
        if len(found) != 1:
            raise FileNotFoundError(
                f"amazon: {'no' if not found else 'several'} reviews_<Category>_5.json[.gz] in {data_dir} "
                f"{found[:8] if found else ''}— pass --amazon_category or put exactly one there ({WHERE})"
            )
        category = found[0]
    (reviews,) = require_files(data_dir, [f"reviews_{category}_5.json"], "amazon", WHERE)
    return reviews, resolve(data_dir, f"meta_{category}.json")


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
    user, item = obj["reviewerID"], obj["asin"]
    ts = check_int(obj["unixReviewTime"], "unixReviewTime")
    if not (isinstance(user, str) and isinstance(item, str) and user and item):
        raise ValueError("reviewerID and asin must be non-empty strings")
    return user, item, ts


def _meta(line: str) -> tuple[str, str]:
    obj = _parse_object(line)
    categories = obj.get("categories") or [[]]
    path = categories[0] if isinstance(categories, list) and isinstance(categories[0], list) else []
    asin, category = obj["asin"], (path[-1] if path else "(unknown)")
    if not isinstance(asin, str) or not isinstance(category, str):
        raise ValueError("asin and categories must be strings")
    return asin, category


def draw_negatives(
    rng: np.random.Generator, owner: np.ndarray, forbidden: np.ndarray, num_items: int, counts: np.ndarray
) -> np.ndarray:
    """``counts[k]`` items in ``1 .. num_items`` for each row ``k``, uniform with
    replacement over the items ``(owner[k], item)`` is not in ``forbidden``
    (keys ``owner * (num_items + 1) + item``, sorted). Rejection sampling;
    every owner must have at least one allowed item."""
    rows = np.repeat(np.arange(len(owner)), counts)
    stride = num_items + 1
    items = rng.integers(1, num_items + 1, len(rows))
    bad = np.flatnonzero(np.isin(owner[rows] * stride + items, forbidden))
    for _ in range(200):  # only the rejected draws are redrawn and checked again
        if len(bad) == 0:
            return items.astype(np.int32)
        items[bad] = rng.integers(1, num_items + 1, len(bad))
        bad = bad[np.isin(owner[rows[bad]] * stride + items[bad], forbidden)]
    # Owners that forbid nearly every item: draw from their allowed items directly.
    for k in bad:
        o = owner[rows[k]]
        lo, hi = np.searchsorted(forbidden, [o * stride, (o + 1) * stride])
        allowed = np.setdiff1d(np.arange(1, num_items + 1), forbidden[lo:hi] - o * stride)
        items[k] = rng.choice(allowed)
    return items.astype(np.int32)


def build_amazon(data_dir: str | Path, options: AmazonOptions | None = None) -> CTRDataset:
    options = options or AmazonOptions()
    started = time.perf_counter()
    data_dir = Path(data_dir)
    reviews_path, meta_path = raw_files(data_dir, options.category)
    reader = RowReader(options.skip_bad_rows)
    reviews = list(reader.rows(reviews_path, _review))
    if not reviews:
        raise RawDataError(f"{reviews_path}: no reviews")
    item_names = sorted({r[1] for r in reviews})
    if len(item_names) < 2:
        raise RawDataError(f"{reviews_path}: {len(item_names)} item reviewed; negatives need at least 2 items")
    item_index = {name: i + 1 for i, name in enumerate(item_names)}
    num_items = len(item_names)
    if meta_path is not None:
        category_of = {a: c for a, c in reader.rows(meta_path, _meta) if a in item_index}
        category_names = sorted(set(category_of.values()) | {"(unknown)"})
        category_index = {c: i + 1 for i, c in enumerate(category_names)}
        item_category = np.zeros(num_items + 1, np.int32)
        for name, i in item_index.items():
            item_category[i] = category_index[category_of.get(name, "(unknown)")]
        num_categories = len(category_names) + 1
        without_meta = int(sum(n not in category_of for n in item_names))
    else:
        log.warning("amazon: no meta_<Category>.json[.gz] in %s: every item is its own category", data_dir)
        item_category = np.arange(num_items + 1, dtype=np.int32)
        num_categories = num_items + 1
        without_meta = num_items

    user_names = sorted({r[0] for r in reviews})
    user_index = {name: i for i, name in enumerate(user_names)}
    users = np.array([user_index[r[0]] for r in reviews], np.int64)
    items = np.array([item_index[r[1]] for r in reviews], np.int64)
    times = np.array([r[2] for r in reviews], np.int64)

    # Each review is one positive followed by its negatives (same user and time).
    rng = np.random.default_rng(options.seed)
    if options.negatives == "per_user_ratio":
        ratios = np.asarray(options.negative_ratios, np.int64)
        user_ratio = ratios[rng.integers(0, len(ratios), len(user_names))]
        owner = users  # never an item the user reviewed
    else:
        user_ratio = np.ones(len(user_names), np.int64)
        owner = np.arange(len(items))  # DIN: never the review's own item
    forbidden = np.unique(owner * (num_items + 1) + items)
    if options.negatives == "per_user_ratio":
        full = np.flatnonzero(np.bincount(forbidden // (num_items + 1), minlength=len(user_names)) >= num_items)
        if len(full):
            raise RawDataError(f"{reviews_path}: user {user_names[full[0]]!r} reviewed all {num_items} items; "
                               "no negatives can be drawn (negatives=one_per_review allows it)")
    counts = user_ratio[users]
    negatives = draw_negatives(rng, owner, forbidden, num_items, counts)
    review = np.r_[np.arange(len(items)), np.repeat(np.arange(len(items)), counts)]
    all_items = np.r_[items, negatives].astype(np.int32)
    labels = np.r_[np.ones(len(items), np.int8), np.zeros(len(negatives), np.int8)]
    order = np.lexsort((1 - labels, review, times[review], users[review]))
    review, all_items, labels = review[order], all_items[order], labels[order]
    all_users, all_times = users[review], times[review]

    def split_of(offsets, timestamps):
        if options.split == "global":
            return global_split(offsets, timestamps, options.cut_timestamp)
        return per_user_split(offsets, options.test_fraction, timestamps)

    _, counts = np.unique(all_users, return_counts=True)
    offsets = np.r_[0, np.cumsum(counts)]
    # Count reviews (positives), not samples, so whether a user is kept never depends on their ratio r.
    clicks = np.r_[0, np.cumsum(labels, dtype=np.int64)]
    split = split_of(offsets, all_times)
    train_reviews, test_reviews = clicks[split] - clicks[offsets[:-1]], clicks[offsets[1:]] - clicks[split]
    keep_user = (train_reviews >= options.min_train) & (test_reviews >= options.min_test)
    keep = np.repeat(keep_user, counts)
    all_users, all_items, all_times, labels = all_users[keep], all_items[keep], all_times[keep], labels[keep]
    if len(labels) == 0:
        raise RawDataError(f"amazon: no user has >= {options.min_train} train and >= {options.min_test} test reviews")
    _, user_ids, counts = np.unique(all_users, return_inverse=True, return_counts=True)
    offsets = np.r_[0, np.cumsum(counts)]
    split = split_of(offsets, all_times)

    hist = options.history_length
    positives = labels == 1
    features = {
        "user_id": (user_ids + 1).astype(np.int32),
        "item_id": all_items,
        "category": item_category[all_items],
        "pos_hist": previous_items(offsets, all_times, all_items, positives, hist),
        "pos_hist_cat": previous_items(offsets, all_times, item_category[all_items], positives, hist),
    }
    spec = FeatureSpec(
        (
            SparseFeature("user_id", len(offsets)),
            SparseFeature("item_id", num_items + 1),
            SparseFeature("category", num_categories),
            SequenceFeature("pos_hist", num_items + 1, hist, embedding="item_id", query="item_id"),
            SequenceFeature("pos_hist_cat", num_categories, hist, embedding="category", query="category"),
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
            "reviews_file": reviews_path.name,
            "meta_file": meta_path.name if meta_path else None,
            "raw_reviews": len(reviews),
            "skipped_rows": dict(reader.skipped),
            "items_without_meta": without_meta,
            # Users grouped by their negative sampling ratio, as in the paper's report.
            "local_ctr_groups": "negative_ratio",
            "negative_ratios": sorted({int(r) for r in options.negative_ratios})
            if options.negatives == "per_user_ratio"
            else [1],
            "seconds": round(time.perf_counter() - started, 2),
            "paper": PAPER_AMAZON,
        },
    )
    local = dataset.local_ctrs()
    if np.all(local == dataset.global_ctr):
        log.warning("amazon: every user has w_i == w_g = %.3f: no drift, so LCFT equals Local by construction",
                    dataset.global_ctr)
    log.info("amazon: %s; the paper's: %s", dataset.summary(), PAPER_AMAZON)
    return dataset


def user_negative_ratios(dataset: CTRDataset) -> np.ndarray:
    """Each user's negative-sampling ratio ``r``, read back from ``w_i = 1/(1+r)``
    (exact: a review and its negatives are never split), so it stays right
    for any subset of users. The report's groups (``info["local_ctr_groups"]``)."""
    local = dataset.local_ctrs()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.rint(1.0 / local - 1.0)
    if not np.all(np.isfinite(ratios)) or np.any(np.abs(local - 1.0 / (1.0 + ratios)) > 1e-9):
        raise ValueError(f"{dataset.name}: some users' w_i is not 1/(1+r); not a per-user-ratio Amazon dataset")
    return ratios.astype(np.int64)
