"""The one in-memory form every dataset takes, and the per-user view of it.

Samples are stored sorted by user, then time, so one user's samples are a
contiguous block ``offsets[u] : offsets[u + 1]``; the first
``split[u] - offsets[u]`` of them are the user's train samples (the device's
local data, also the cloud's training data), the rest the user's test
samples. Everything downstream (cloud training, fleet simulation,
evaluation) reads this and nothing else.

``max_local_samples`` N (unset: no cap) makes a device hold only the last N
of its user's train samples (:attr:`CTRDataset.local_start`): the few-sample
regime on real data. The cloud side (its training data, CoDA's pool) and the
test samples are unchanged; the cut samples are simply absent from the device.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from lcft_tf import checks
from lcft_tf._io import atomic_write
from lcft_tf.features import FeatureSpec, SequenceFeature, SparseFeature

DATASET_FORMAT = "lcft-dataset-v1"


@dataclasses.dataclass(frozen=True)
class UserView:
    """One user's data: train (local) and test samples in time order, and ``w_i``.

    Features map name -> array with one row per sample (shapes per the
    spec); labels are int8 0/1."""

    user: int
    train_features: dict[str, np.ndarray]
    train_labels: np.ndarray
    test_features: dict[str, np.ndarray]
    test_labels: np.ndarray

    @property
    def local_ctr(self) -> float:
        """``w_i``: the click rate of the user's train samples (NaN if none)."""
        return float(self.train_labels.mean()) if len(self.train_labels) else float("nan")


@dataclasses.dataclass
class CTRDataset:
    """Samples of many users, sorted by (user, time), with a train/test split
    (layout: module docstring). ``features`` arrays have one row per sample;
    ``timestamps`` are int64 seconds. Raises ``ValueError`` when offsets,
    split, row counts or columns disagree with each other or the spec, or
    ``max_local_samples`` is not unset or an integer >= 1."""

    name: str
    spec: FeatureSpec
    features: dict[str, np.ndarray]
    labels: np.ndarray  # int8, 0/1
    timestamps: np.ndarray  # int64
    offsets: np.ndarray  # [num_users + 1]
    split: np.ndarray  # [num_users], absolute index of each user's first test sample
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Features stored once per key instead of once per sample (e.g. the
    # 1,128-d genome of each movie): name -> (key feature, table[key id]).
    lookups: dict[str, tuple[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    # A device holds only its user's last N train samples (module docstring); None: all.
    max_local_samples: int | None = None

    def __post_init__(self) -> None:
        if self.max_local_samples is not None:
            checks.integer(self.max_local_samples, "max_local_samples", 1)
        n = len(self.labels)
        if self.offsets[0] != 0 or self.offsets[-1] != n or np.any(np.diff(self.offsets) < 0):
            raise ValueError("offsets must rise from 0 to the number of samples")
        if np.any(self.split < self.offsets[:-1]) or np.any(self.split > self.offsets[1:]):
            raise ValueError("each user's split must lie inside the user's block")
        for name, value in self.features.items():
            if len(value) != n:
                raise ValueError(f"feature {name!r} has {len(value)} rows, expected {n}")
        stored = set(self.features) | set(self.lookups)
        if stored != set(self.spec.names):
            raise ValueError(f"dataset columns {sorted(stored)} do not match the spec {sorted(self.spec.names)}")

    def take(self, index: np.ndarray | slice) -> dict[str, np.ndarray]:
        """Feature arrays of the selected samples (index, slice or bool mask),
        lookups materialised, in spec order."""
        out = {k: v[index] for k, v in self.features.items()}
        for name, (key, table) in self.lookups.items():
            out[name] = table[out[key]]
        return {name: out[name] for name in self.spec.names}

    @property
    def num_users(self) -> int:
        """Number of users (blocks)."""
        return len(self.offsets) - 1

    @property
    def num_samples(self) -> int:
        """Number of samples of all users."""
        return len(self.labels)

    @property
    def train_mask(self) -> np.ndarray:
        """bool ``[num_samples]``: the sample lies before its user's split."""
        return np.arange(self.num_samples) < self.split[user_index(self.offsets)]

    @functools.cached_property  # read once per user by the fleet: computed once
    def local_start(self) -> np.ndarray:
        """int64 ``[num_users]``: absolute index of each user's first *local*
        (device-side) train sample: ``offsets[u]``, or under a cap the start
        of the user's last ``max_local_samples`` train samples."""
        first = np.asarray(self.offsets[:-1], np.int64)
        if self.max_local_samples is None:
            return first
        return np.maximum(first, np.asarray(self.split, np.int64) - self.max_local_samples)

    @property
    def global_ctr(self) -> float:
        """``w_g``: the click rate of all users' train samples."""
        return float(self.labels[self.train_mask].mean())

    def rows(self, mask: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Features (as :meth:`take`) and int8 labels of the samples where ``mask`` holds."""
        return self.take(mask), self.labels[mask]

    def train_rows(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """All users' train samples: the cloud's training data."""
        return self.rows(self.train_mask)

    def test_rows(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """All users' test samples: the evaluation data."""
        return self.rows(~self.train_mask)

    def user(self, u: int) -> UserView:
        """User ``u``'s (0-based) samples as its device holds them (train:
        local data, capped by ``max_local_samples``); raises ``IndexError``
        out of range."""
        if not 0 <= u < self.num_users:
            raise IndexError(f"user {u} out of range [0, {self.num_users})")
        a, s, b = int(self.local_start[u]), int(self.split[u]), int(self.offsets[u + 1])
        return UserView(
            user=u,
            train_features=self.take(slice(a, s)),
            train_labels=self.labels[a:s],
            test_features=self.take(slice(s, b)),
            test_labels=self.labels[s:b],
        )

    def local_ctrs(self) -> np.ndarray:
        """``w_i`` of every user, float64 ``[num_users]``, over the local (device)
        train samples (NaN for users with none)."""
        bounds = np.r_[self.local_start, self.offsets[-1]]
        clicks, _ = counts_per_side(bounds, self.split, self.labels)
        counts, _ = counts_per_side(bounds, self.split)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, clicks / counts, np.nan)

    def subset_users(self, users: np.ndarray) -> "CTRDataset":
        """A dataset with only ``users`` (in the given order)."""
        users = np.asarray(users, dtype=np.int64)
        blocks = [np.arange(self.offsets[u], self.offsets[u + 1]) for u in users]
        index = np.concatenate(blocks) if blocks else np.zeros(0, np.int64)
        sizes = np.diff(self.offsets)[users]
        offsets = np.r_[0, np.cumsum(sizes)]
        split = offsets[:-1] + (self.split - self.offsets[:-1])[users]
        return CTRDataset(
            name=self.name,
            spec=self.spec,
            features={k: v[index] for k, v in self.features.items()},
            labels=self.labels[index],
            timestamps=self.timestamps[index],
            offsets=offsets,
            split=split,
            info={**self.info, "subset_of_users": int(self.num_users)},
            lookups=self.lookups,
            max_local_samples=self.max_local_samples,
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write every array as ``.npy`` plus ``dataset.json``: loadable
        memory-mapped by many worker processes at once (no pickle). Returns
        the folder; raises ``OSError`` when it cannot be written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"feature.{k}": v for k, v in self.features.items()}
        arrays.update({f"lookup.{k}": table for k, (_, table) in self.lookups.items()})
        arrays.update(labels=self.labels, timestamps=self.timestamps, offsets=self.offsets, split=self.split)
        for name, value in arrays.items():
            np.save(directory / f"{name}.npy", np.ascontiguousarray(value), allow_pickle=False)
        meta = {
            "format": DATASET_FORMAT,
            "name": self.name,
            "spec": self.spec.to_json(),
            "info": self.info,
            "features": sorted(self.features),
            "lookups": {k: key for k, (key, _) in self.lookups.items()},
            "max_local_samples": self.max_local_samples,
        }
        atomic_write(directory / "dataset.json", json.dumps(meta, indent=2, default=str).encode())
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, mmap: bool = True) -> "CTRDataset":
        """A dataset written by :meth:`save`, arrays memory-mapped read-only
        unless ``mmap`` is False. Raises ``FileNotFoundError`` without
        ``dataset.json``, ``ValueError`` for another format."""
        directory = Path(directory)
        meta_path = directory / "dataset.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no saved dataset in {directory} (expected {meta_path})")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != DATASET_FORMAT:
            raise ValueError(f"{meta_path}: unsupported dataset format {meta.get('format')!r}")
        load = lambda name: np.load(directory / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        return cls(
            name=meta["name"],
            spec=FeatureSpec.from_json(meta["spec"]),
            features={k: load(f"feature.{k}") for k in meta["features"]},
            labels=load("labels"),
            timestamps=load("timestamps"),
            offsets=np.asarray(load("offsets")),
            split=np.asarray(load("split")),
            info=meta["info"],
            lookups={k: (key, load(f"lookup.{k}")) for k, key in meta["lookups"].items()},
            max_local_samples=meta.get("max_local_samples"),  # absent in files written before the cap: no cap
        )

    def summary(self) -> dict[str, Any]:
        """Counts of users and samples (train: the cloud's; local: the
        devices'), and ``w_g`` (None without train samples), for logs."""
        train = self.train_mask
        return {
            "name": self.name,
            "users": self.num_users,
            "samples": self.num_samples,
            "train_samples": int(train.sum()),
            "local_samples": int(np.sum(np.asarray(self.split) - self.local_start)),
            "max_local_samples": self.max_local_samples,
            "test_samples": int((~train).sum()),
            "global_ctr": round(self.global_ctr, 4) if train.any() else None,
        }


def user_index(offsets: np.ndarray) -> np.ndarray:
    """The user (0-based, int64 ``[offsets[-1]]``) of every sample, from the
    block offsets (int ``[num_users + 1]``): the one rule for it."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


def previous_items(
    offsets: np.ndarray,
    timestamps: np.ndarray,
    items: np.ndarray,
    selected: np.ndarray,
    length: int,
    padding_id: int = 0,
) -> np.ndarray:
    """For every sample, the ``length`` most recent ``items`` of the same user's
    *strictly earlier* samples where ``selected`` holds, most recent first,
    padded with ``padding_id``: int32 ``[n, length]``. Samples must be sorted
    by (user, time); samples with the same timestamp never see each other
    (no leakage; paper §5.1 histories, docs/data.md)."""
    n = len(items)
    if n == 0:
        return np.zeros((0, length), np.int32)
    users = user_index(offsets)
    chosen = items[selected].astype(np.int32)
    before = np.r_[0, np.cumsum(selected, dtype=np.int64)]  # selected among samples [0, k)
    group_start = same_second_groups(offsets, timestamps)[0]
    end = before[group_start]  # selected strictly before this timestamp (global count)
    start = before[offsets[:-1]][users]  # selected before the user's first sample
    idx = end[:, None] - 1 - np.arange(length)[None, :]
    valid = idx >= start[:, None]
    if len(chosen) == 0:
        return np.full((n, length), padding_id, np.int32)
    return np.where(valid, chosen[np.clip(idx, 0, None)], padding_id).astype(np.int32)


def per_user_split(offsets: np.ndarray, test_fraction: float, timestamps: np.ndarray | None = None) -> np.ndarray:
    """Each user's last ``test_fraction`` of samples (rounded, at least one
    when the user has two or more) is test; the rest is train.

    With ``timestamps`` (sorted by user, then time) samples of the same
    second stay on one side: a cut inside a same-second group moves to the
    group's start (the whole group is test); if that would leave the user no
    train sample it moves to the group's end instead (the group is train);
    a user whose samples all share one second is all train (docs/data.md
    "Same-second samples"). Returns the absolute split int64 ``[num_users]``;
    raises ``ValueError`` for ``test_fraction`` outside (0, 1)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    sizes = np.diff(offsets)
    test = np.where(sizes >= 2, np.clip(np.round(sizes * test_fraction), 1, sizes - 1), 0).astype(np.int64)
    split = offsets[1:] - test
    if timestamps is None or len(timestamps) == 0:
        return split
    start, end = same_second_groups(offsets, timestamps)
    starts, ends = offsets[:-1], offsets[1:]
    inside = (split > starts) & (split < ends)
    at = np.minimum(split, len(timestamps) - 1)
    group_start, group_end = start[at], end[at]
    moved = np.where(group_start > starts, group_start, group_end)
    return np.where(inside & (group_start < split), moved, split)


VALIDATION_FRACTION = 0.2  # share of the train period held out by default (cloud training, the popularity baseline)


def validation_split(dataset: "CTRDataset", fraction: float) -> np.ndarray:
    """Where each user's validation block starts: absolute int64
    ``[num_users]``; a user's samples ``[offsets[u], v[u])`` fit a model and
    ``[v[u], split[u])`` validate it. The test split is never touched.

    The block is carved out of the train period the way the dataset's test
    split was made (``info["split"]``): ``global`` holds out the train
    samples after the ``1 - fraction`` quantile of train timestamps; any other
    mode each user's last ``fraction`` of train samples by
    :func:`per_user_split`, same-second rule included (docs/data.md). The one
    rule for validation data (cloud training, the popularity baseline).
    Raises ``ValueError`` for ``fraction`` outside (0, 1)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {fraction!r}")
    starts = dataset.offsets[:-1]
    train = dataset.train_mask
    if dataset.info.get("split") == "global" and train.any():
        cut = np.quantile(dataset.timestamps[train], 1.0 - fraction, method="lower")
        fit = np.bincount(user_index(dataset.offsets)[train & (dataset.timestamps <= cut)],
                          minlength=dataset.num_users)
        return (starts + fit).astype(np.int64)
    n_train = dataset.split - starts
    train_offsets = np.r_[0, np.cumsum(n_train)]
    cut = per_user_split(train_offsets, fraction, np.asarray(dataset.timestamps)[train])
    return (starts + cut - train_offsets[:-1]).astype(np.int64)


def validation_rows(dataset: "CTRDataset", start: np.ndarray) -> np.ndarray:
    """bool ``[num_samples]``: the train samples at or after each user's
    validation start ``start`` (:func:`validation_split`); the rest of the
    train samples are those before it."""
    return (np.arange(dataset.num_samples) >= np.asarray(start)[user_index(dataset.offsets)]) & dataset.train_mask


def same_second_groups(offsets: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every sample, the start and end (exclusive; int64 ``[n]`` each) of
    its run of samples with the same user and timestamp."""
    n = len(timestamps)
    users = user_index(offsets)
    first = np.ones(n, bool)
    first[1:] = (users[1:] != users[:-1]) | (timestamps[1:] != timestamps[:-1])
    start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    bounds = np.r_[np.flatnonzero(first), n]
    end = bounds[np.cumsum(first)]
    return start, end


def counts_per_side(
    offsets: np.ndarray, split: np.ndarray, counted: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the number of train and of test samples, both int64
    ``[num_users]``; with ``counted`` (0/1 or bool ``[num_samples]``) only
    the samples where it holds count (e.g. clicks)."""
    if counted is None:
        return split - offsets[:-1], offsets[1:] - split
    before = np.r_[0, np.cumsum(counted, dtype=np.int64)]  # counted among samples [0, k)
    return before[split] - before[offsets[:-1]], before[offsets[1:]] - before[split]


def users_with_enough_samples(
    offsets: np.ndarray, split: np.ndarray, min_train: int, min_test: int, counted: np.ndarray | None = None
) -> np.ndarray:
    """Per-user bool mask ``[num_users]``: at least ``min_train`` train and
    ``min_test`` test samples (only those where ``counted`` holds, if given;
    Amazon counts reviews, docs/data.md "Amazon")."""
    train, test = counts_per_side(offsets, split, counted)
    return (train >= min_train) & (test >= min_test)


def split_accounting(offsets: np.ndarray, split: np.ndarray, timestamps: np.ndarray, min_train: int, min_test: int,
                     counted: np.ndarray | None = None) -> dict[str, Any]:
    """What a loader's split and user filter did, for the run's record
    (docs/data.md "Same-second samples"): users before and kept, users
    dropped for too few train or (with enough train) too few test samples
    (counted where ``counted`` holds, as :func:`users_with_enough_samples`),
    how many of the dropped had every sample in one second (the same-second
    rule makes them all train), and the realised test share of the kept
    users' samples (it exceeds the requested fraction when same-second
    groups move to test)."""
    train, test = counts_per_side(offsets, split, counted)
    kept = (train >= min_train) & (test >= min_test)
    sizes = np.diff(offsets)
    timestamps = np.asarray(timestamps)
    nonempty = sizes > 0
    one_second = np.zeros(len(sizes), bool)
    one_second[nonempty] = timestamps[offsets[:-1][nonempty]] == timestamps[offsets[1:][nonempty] - 1]
    test_samples = (offsets[1:] - split)[kept].sum()
    return {
        "users_before": int(len(sizes)),
        "users_kept": int(kept.sum()),
        "dropped_too_few_train": int((train < min_train).sum()),
        "dropped_too_few_test": int(((train >= min_train) & (test < min_test)).sum()),
        "dropped_all_in_one_second": int((~kept & one_second & (sizes >= 2)).sum()),
        "test_share": round(float(test_samples / max(sizes[kept].sum(), 1)), 4),
    }


def user_offsets(users: np.ndarray) -> np.ndarray:
    """Block offsets int64 ``[num_users + 1]`` of samples sorted by user key
    ``users`` (any sortable dtype, ``[num_samples]``); each distinct key is
    one user, numbered in key order."""
    _, counts = np.unique(users, return_counts=True)
    return np.r_[0, np.cumsum(counts)].astype(np.int64)


def split_samples(
    offsets: np.ndarray, timestamps: np.ndarray, mode: str, cut_timestamp: int, test_fraction: float
) -> np.ndarray:
    """The loaders' split by name: ``global`` is :func:`global_split` at
    ``cut_timestamp``, anything else :func:`per_user_split` with
    ``test_fraction`` keeping same-second samples together (docs/data.md)."""
    if mode == "global":
        return global_split(offsets, timestamps, cut_timestamp)
    return per_user_split(offsets, test_fraction, timestamps)


def global_split(offsets: np.ndarray, timestamps: np.ndarray, cut: int) -> np.ndarray:
    """Samples with ``timestamp <= cut`` (seconds) are train, later ones test
    (paper §5.1's global cut; samples sorted by (user, time)). Returns the
    absolute split int64 ``[num_users]``."""
    later = np.r_[0, np.cumsum(timestamps > cut, dtype=np.int64)]
    return offsets[1:] - (later[offsets[1:]] - later[offsets[:-1]])


def category_ids(category_of: dict[Any, str], keys: list[Any], unknown: str = "(unknown)") -> tuple[np.ndarray, int, int]:
    """Category id (int32 ``[len(keys)]``, 1-based in sorted name order, 0
    stays padding) of every key, the number of names (``unknown`` included)
    and how many keys have no category (they get ``unknown``)."""
    names = sorted(set(category_of.values()) | {unknown})
    index = {name: i + 1 for i, name in enumerate(names)}
    ids = np.array([index[category_of.get(k, unknown)] for k in keys], np.int32).reshape(-1)
    return ids, len(names), int(sum(k not in category_of for k in keys))


def click_history_features(
    offsets: np.ndarray,
    timestamps: np.ndarray,
    items: np.ndarray,
    categories: np.ndarray,
    labels: np.ndarray,
    length: int,
) -> dict[str, np.ndarray]:
    """The MovieLens fields (paper §5.1, docs/data.md "MovieLens") of samples
    sorted by (user, time): ``user_id`` (user number + 1), ``item_id`` and
    ``category`` (``items`` / ``categories``, int32 ``[n]``), and ``pos_hist``
    / ``neg_hist`` int32 ``[n, length]``, the user's strictly earlier
    clicked / skipped items, most recent first, 0-padded."""
    return {
        "user_id": (user_index(offsets) + 1).astype(np.int32),
        "item_id": items,
        "category": categories,
        "pos_hist": previous_items(offsets, timestamps, items, labels == 1, length),
        "neg_hist": previous_items(offsets, timestamps, items, labels == 0, length),
    }


def click_history_spec(num_users: int, num_items: int, num_categories: int, length: int) -> tuple[Any, ...]:
    """The features of :func:`click_history_features`; ids run ``1 .. num_*``
    (0 is padding), histories embed and attend with ``item_id``."""
    items = num_items + 1
    return (
        SparseFeature("user_id", num_users + 1),
        SparseFeature("item_id", items),
        SparseFeature("category", num_categories + 1),
        SequenceFeature("pos_hist", items, length, embedding="item_id", query="item_id"),
        SequenceFeature("neg_hist", items, length, embedding="item_id", query="item_id"),
    )
