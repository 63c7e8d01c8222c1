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

from lcft_tf import checks
from lcft_tf.data.dataset import (
    CTRDataset,
    category_ids,
    click_history_spec,
    previous_items,
    split_samples,
    user_index,
    user_offsets,
    split_accounting,
    users_with_enough_samples,
)
from lcft_tf.data.raw import RawDataError, RowReader, check_int, check_split_options, require_files, resolve
from lcft_tf.features import FeatureSpec, SequenceFeature

log = logging.getLogger(__name__)

PAPER_CUT = 1_385_078_400
PAPER_AMAZON = {"users": 180_342, "samples": 6_227_300, "global_ctr": 0.17}
LOADER_VERSION = 2
WHERE = "reviews_<Category>_5.json[.gz] and optionally meta_<Category>.json[.gz] from the Amazon product data"
_CATEGORY = re.compile(r"[A-Za-z0-9_]+")
_REVIEWS = re.compile(r"reviews_([A-Za-z0-9_]+)_5\.json(\.gz)?")


@dataclasses.dataclass(frozen=True)
class AmazonOptions:
    """How Amazon raw files become a dataset (rules: docs/data.md "Amazon").

    Raises ``ValueError`` on construction for a bad category name, unknown
    negatives or split, ratios outside [1, 1000], a ``test_fraction``
    outside (0, 1) (NaN, inf and non-numbers included), a non-integer /
    out-of-range count or seed, or ``skip_bad_rows`` that is not a bool.
    """

    category: str | None = dataclasses.field(
        default=None,
        metadata={"help": "The <Category> of reviews_<Category>_5.json; None finds the only reviews file there."},
    )
    negatives: str = dataclasses.field(
        default="per_user_ratio",
        metadata={"help": "per_user_ratio (r negatives per review, r drawn per user) | one_per_review (DIN's 1:1)."},
    )
    negative_ratios: tuple[int, ...] = dataclasses.field(
        default=(1, 2, 3, 4, 5, 6, 7, 8, 9), metadata={"help": "The ratios per_user_ratio draws from, uniformly."}
    )
    split: str = dataclasses.field(
        default="global", metadata={"help": "global (cut_timestamp) | per_user (test_fraction)."}
    )
    cut_timestamp: int = dataclasses.field(
        default=PAPER_CUT, metadata={"help": "Global split: train is unixReviewTime <= cut (seconds)."}
    )
    test_fraction: float = dataclasses.field(
        default=0.2, metadata={"help": "Per-user split: each user's last fraction of samples that is test."}
    )
    min_train: int = dataclasses.field(
        default=3, metadata={"help": "Fewest train reviews a kept user has (3 = the old 5 samples at 1:1)."}
    )
    min_test: int = dataclasses.field(default=1, metadata={"help": "Fewest test reviews a kept user has."})
    history_length: int = dataclasses.field(default=20, metadata={"help": "Length of pos_hist / pos_hist_cat."})
    seed: int = dataclasses.field(default=0, metadata={"help": "Seed of the ratio draws and the negative sampling."})
    skip_bad_rows: bool = dataclasses.field(
        default=False, metadata={"help": "Skip and count malformed rows instead of stopping."}
    )

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
        checks.number(self.test_fraction, "test_fraction", 0.0, 1.0, low_open=True, high_open=True)
        checks.flag(self.skip_bad_rows, "skip_bad_rows")  # "false" from a dict would be truthy
        check_split_options(self, ("global", "per_user"))
        check_int(self.seed, "seed")


def raw_files(data_dir: Path, category: str | None) -> tuple[Path, Path | None]:
    """The reviews file and the meta file (None when absent) of ``category``.
    Raises ``FileNotFoundError`` when the reviews file is missing or, without
    a category, when the folder holds none or several."""
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
    every owner must have at least one allowed item. Returns int32
    ``[counts.sum()]``, row 0's items first."""
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
    """Parse the raw files in ``data_dir`` into a :class:`CTRDataset`
    (rules: module docstring, docs/data.md "Amazon").

    Each review is a click followed by its negatives at the same second;
    ids are int32, labels int8, timestamps int64 seconds. Raises
    ``FileNotFoundError`` when the reviews file is missing or ambiguous,
    :class:`RawDataError` for bad rows, no reviews, fewer than 2 items, a
    user who reviewed every item (per-user ratios), no user kept, or a file
    that cannot be read (truncated or corrupt ``.gz``, I/O error: named with
    its line, also under ``skip_bad_rows``).
    """
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
    item_category, num_categories, without_meta = _item_categories(meta_path, reader, item_names, data_dir)
    samples = _with_negatives(reviews, item_names, options, reviews_path)
    users, items, times, labels, accounting = _kept_reviewers(*samples, options)
    offsets = user_offsets(users)
    split = split_samples(offsets, times, options.split, options.cut_timestamp, options.test_fraction)
    hist = options.history_length
    dataset = CTRDataset(
        name="amazon",
        spec=_spec(len(offsets) - 1, len(item_names), num_categories, hist),
        features=_features(offsets, times, items, item_category, labels, hist),
        labels=labels,
        timestamps=times,
        offsets=offsets,
        split=split,
        info={
            "options": dataclasses.asdict(options),
            "data_dir": str(data_dir),
            "reviews_file": reviews_path.name,
            "meta_file": meta_path.name if meta_path else None,
            "raw_reviews": len(reviews),
            "split": options.split,
            "split_accounting": accounting,
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


def _item_categories(
    meta_path: Path | None, reader: RowReader, item_names: list[str], data_dir: Path
) -> tuple[np.ndarray, int, int]:
    """Category id of every item (int32 ``[num_items + 1]``, row 0 padding),
    the category vocabulary size (padding included) and the items without meta."""
    num_items = len(item_names)
    if meta_path is None:
        log.warning("amazon: no meta_<Category>.json[.gz] in %s: every item is its own category", data_dir)
        return np.arange(num_items + 1, dtype=np.int32), num_items + 1, num_items
    reviewed = set(item_names)
    category_of = {a: c for a, c in reader.rows(meta_path, _meta) if a in reviewed}
    ids, num_names, without_meta = category_ids(category_of, item_names)
    return np.r_[np.zeros(1, np.int32), ids], num_names + 1, without_meta


def _with_negatives(
    reviews: list[tuple[str, str, int]], item_names: list[str], options: AmazonOptions, reviews_path: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """User numbers (int64, in name order), items (int32, 1-based), times
    (int64) and labels (int8) of every review (a click) and its drawn
    negatives, sorted by (user, time, review), each review before its negatives."""
    user_names = sorted({r[0] for r in reviews})
    user_number = {name: i for i, name in enumerate(user_names)}
    item_number = {name: i + 1 for i, name in enumerate(item_names)}
    users = np.array([user_number[r[0]] for r in reviews], np.int64)
    items = np.array([item_number[r[1]] for r in reviews], np.int64)
    times = np.array([r[2] for r in reviews], np.int64)
    num_items = len(item_names)
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
    return users[review], all_items, times[review], labels


def _kept_reviewers(
    users: np.ndarray, items: np.ndarray, times: np.ndarray, labels: np.ndarray, options: AmazonOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """The samples of users with ``min_train`` train and ``min_test`` test
    reviews, and :func:`~lcft_tf.data.dataset.split_accounting` of the split."""
    offsets = user_offsets(users)
    split = split_samples(offsets, times, options.split, options.cut_timestamp, options.test_fraction)
    # Count reviews (clicks), not samples, so whether a user is kept never depends on their ratio r.
    keep_user = users_with_enough_samples(offsets, split, options.min_train, options.min_test, counted=labels)
    keep = keep_user[user_index(offsets)]
    if not keep.any():
        raise RawDataError(f"amazon: no user has >= {options.min_train} train and >= {options.min_test} test reviews")
    accounting = split_accounting(offsets, split, times, options.min_train, options.min_test, counted=labels)
    return users[keep], items[keep], times[keep], labels[keep], accounting


def _features(
    offsets: np.ndarray, times: np.ndarray, items: np.ndarray, item_category: np.ndarray, labels: np.ndarray, hist: int
) -> dict[str, np.ndarray]:
    """``user_id``, ``item_id``, ``category`` (int32 ``[n]``) and ``pos_hist`` /
    ``pos_hist_cat`` (int32 ``[n, hist]``): items / categories reviewed strictly earlier."""
    clicks = labels == 1
    categories = item_category[items]
    return {
        "user_id": (user_index(offsets) + 1).astype(np.int32),
        "item_id": items,
        "category": categories,
        "pos_hist": previous_items(offsets, times, items, clicks, hist),
        "pos_hist_cat": previous_items(offsets, times, categories, clicks, hist),
    }


def _spec(num_users: int, num_items: int, num_categories: int, hist: int) -> FeatureSpec:
    """The spec of :func:`_features`; ``num_categories`` includes padding."""
    # user_id, item_id, category and pos_hist as in MovieLens; no neg_hist.
    shared = click_history_spec(num_users, num_items, num_categories - 1, hist)[:4]
    cat_hist = SequenceFeature("pos_hist_cat", num_categories, hist, embedding="category", query="category")
    return FeatureSpec(shared + (cat_hist,))


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
