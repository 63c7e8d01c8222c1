"""Hard label correction: the cloud's grid search for ``(alpha, beta)`` per
local-CTR interval (docs/loss_and_correction.md).

Users are grouped by their local CTR ``w_i``; from each group at most
``users_per_group`` users are sampled. Each sampled user's train samples are
split in time: the first part is fine-tuned on (as the device would), the
last ``validation_fraction`` is the validation set. Every ``(alpha, beta)``
of the grid is tried on every sampled user, and the pair with the best
user-weighted validation AUC wins for the group. The test split is never
looked at. ``(1, 0)`` (raw labels) is always in the grid and wins ties, so a
group with no usable users keeps the raw labels.

Cost: ``groups x users_per_group x |alphas| x |betas|`` device fine-tunes,
reported in the returned dict. They run as fleet work: one task per sampled
user (its whole grid, :func:`fine_tune_grid`) on the fleet's public worker
API and any fleet executor (serial, process pool, Ray), so the search gets
the fleet's parallelism (docs/scaling.md). It drives devices for the cloud,
so it lives in the pipeline layer, above both (docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from lcft_tf import checks
from lcft_tf.correction import HardCorrectionTable, interval_of, soft1, soft2
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.device.fine_tune import fine_tune_and_predict
from lcft_tf.evaluation.metrics import paired_bootstrap, per_user_auc, user_weighted_auc
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.fleet.executors import Executor
from lcft_tf.fleet.simulate import map_device_tasks
from lcft_tf.fleet.worker import DeviceWorker

log = logging.getLogger(__name__)


SELECTIONS = ("confirmed", "argmax")
IDENTITY = (1.0, 0.0)


@dataclasses.dataclass(frozen=True)
class HardSearchConfig:
    """The cloud's grid search for the hard correction table (module
    docstring; docs/loss_and_correction.md).

    Raises ``ValueError`` on construction for edges that do not increase
    strictly inside (0, 1) (:class:`lcft_tf.correction.HardCorrectionTable`),
    an empty ``alphas`` or ``betas``, a grid value that is not finite as a
    float32, a grid with no pair but (1, 0) (the search could only pick raw
    labels), ``users_per_group`` not an integer >= 1,
    ``validation_fraction`` outside (0, 1), ``min_validation`` not an
    integer >= 2, or a negative seed. NaN and inf are refused everywhere.
    """

    edges: tuple[float, ...] = dataclasses.field(
        default=(0.2, 0.4, 0.6, 0.8), metadata={"help": "local-CTR interval edges of the hard table, strictly "
                                                        "increasing in (0, 1)"})
    alphas: tuple[float, ...] = dataclasses.field(
        default=(0.5, 0.75, 1.0, 1.5, 2.0), metadata={"help": "alpha values of the grid: not empty, finite (the pair alpha 1, beta 0 is always tried; the grid "
                                            "needs another)"})
    betas: tuple[float, ...] = dataclasses.field(
        default=(-0.1, 0.0, 0.1, 0.2, 0.3), metadata={"help": "beta values of the grid (crossed with every alpha): not empty, finite"})
    users_per_group: int = dataclasses.field(
        default=60, metadata={"help": "users sampled per CTR interval for the hard grid search, an integer >= 1 "
                                           "(more users, narrower validation intervals: docs/loss_and_correction.md)"})
    validation_fraction: float = dataclasses.field(
        default=0.3, metadata={"help": "each sampled user's last share of train samples used for validation, in "
                                       "(0, 1)"})
    min_validation: int = dataclasses.field(
        default=4, metadata={"help": "fewest validation samples per sampled user, an integer >= 2 (an AUC needs both classes)"})
    seed: int = dataclasses.field(
        default=0, metadata={"help": "seed of the user sample (set per run from --seeds)"})
    selection: str = dataclasses.field(
        default="confirmed", metadata={"help": "confirmed: the best pair on half of the sampled users, kept only "
                                                   "if its paired gain over the identity on the other half has a "
                                                   "bootstrap interval above 0; argmax: the best "
                                                   "validation AUC (the paper's plain grid search, over-fits)"})
    soft_candidates: bool = dataclasses.field(
        default=True, metadata={"help": "also try the soft1 and soft2 pairs at each interval's mean local CTR"})
    min_users: int = dataclasses.field(
        default=8, metadata={"help": "fewest usable users each half of an interval needs to leave the identity (confirmed)"})
    resamples: int = dataclasses.field(
        default=2000, metadata={"help": "bootstrap resamples of the paired validation gains (confirmed)"})

    def __post_init__(self) -> None:
        if not isinstance(self.edges, (tuple, list)) or (self.edges and checks.grid(self.edges, "edges") is None):
            raise ValueError(f"edges must be a list of numbers (empty: one interval), got {self.edges!r}")
        HardCorrectionTable.identity(self.edges)  # strictly increasing inside (0, 1)
        # The table ships alpha and beta as float32 (the correct signature).
        alphas = checks.grid(self.alphas, "alphas", float32=True)
        betas = checks.grid(self.betas, "betas", float32=True)
        if set(itertools.product(alphas, betas)) <= {(1.0, 0.0)}:
            # Only the raw-label pair: "LCFT Hard" would be Local under another name.
            raise ValueError(f"alphas x betas must hold a pair other than (1, 0), got alphas={list(self.alphas)} "
                             f"betas={list(self.betas)}")
        checks.integer(self.users_per_group, "users_per_group", 1)
        checks.number(self.validation_fraction, "validation_fraction", 0.0, 1.0, low_open=True, high_open=True)
        # A one-sample validation set has one class: no AUC, the user is skipped.
        checks.integer(self.min_validation, "min_validation", 2)
        checks.seed(self.seed)
        checks.choice(self.selection, "selection", SELECTIONS)
        checks.integer(self.min_users, "min_users", 1)
        checks.integer(self.resamples, "resamples", 1)


def search_hard_table(
    model_path,
    dataset: str | os.PathLike | CTRDataset,
    config: HardSearchConfig | None = None,
    learning_rate: float = 0.01,
    epochs: int = 1,
    executor: Executor | None = None,
) -> tuple[HardCorrectionTable, dict[str, Any]]:
    """Grid-search the table on ``model_path``'s cloud weights; returns the
    table and a report (per group: users used, best pair, its AUC gain).

    ``dataset`` is the folder of a saved dataset (:meth:`CTRDataset.save`),
    which the workers memory-map; an in-memory :class:`CTRDataset` runs
    serially in this process. The fine-tunes run as one task per sampled user
    (its whole grid, :func:`fine_tune_grid`) on
    ``executor`` (default: serial); the result does not depend on it."""
    config = config or HardSearchConfig()
    started = time.perf_counter()
    data = dataset if isinstance(dataset, CTRDataset) else CTRDataset.load(dataset)
    searched, members_per_group = _sample_users(data, config)
    grids = [_candidates(data, users, config) for users in searched]
    tasks = [(u, cut, tuple(grid)) for users, grid in zip(searched, grids) for u, cut in users]
    device = FleetConfig(learning_rate=learning_rate, epochs=epochs, workers=1)
    predictions = {}
    with tqdm(total=len(tasks), desc="hard search", unit="user", disable=None) as bar:
        for result in map_device_tasks(model_path, dataset, device, fine_tune_grid, tasks, executor):
            predictions[result["user"]] = result["predictions"]
            bar.update(1)
    report = [_choose(data, users, grids[g], predictions, config) | {
        "interval": [([0.0] + list(config.edges))[g], (list(config.edges) + [1.0])[g]],
        "users_in_group": int(members_per_group[g]), "users_searched": len(users)}
        for g, users in enumerate(searched)]
    table = HardCorrectionTable(config.edges, tuple(g["alpha"] for g in report), tuple(g["beta"] for g in report))
    fine_tunes = sum(len(users) * len(grid) for users, grid in zip(searched, grids))
    # grid_size: the identity and the grid; an interval may add the two soft pairs (its candidates say so).
    cost = {"fine_tunes": fine_tunes, "grid_size": len(_candidates(data, [], config)),
            "seconds": round(time.perf_counter() - started, 2)}
    log.info("hard table %s (%d fine-tunes, %.1f s)", table.to_json(), fine_tunes, cost["seconds"])
    return table, {"groups": report, "cost": cost, "config": dataclasses.asdict(config)}


def _candidates(data: CTRDataset, users: list[tuple[int, int]], config: HardSearchConfig) -> list[tuple[float, float]]:
    """The pairs tried in one interval: the identity first, the grid, and
    (``soft_candidates``) the soft1 / soft2 pairs at the mean local CTR of
    the interval's sampled users (their fit part, as the device sees it)."""
    grid = [IDENTITY] + [p for p in itertools.product(config.alphas, config.betas) if p != IDENTITY]
    if config.soft_candidates and users:
        w_i = float(np.mean([data.user(u).train_labels[:cut].mean() for u, cut in users]))
        for rule in (soft1, soft2):
            pair = tuple(float(v) for v in rule(w_i, data.global_ctr))
            if pair not in grid:
                grid.append(pair)
    return grid


def _choose(data: CTRDataset, users: list[tuple[int, int]], grid: list, predictions: dict,
            config: HardSearchConfig) -> dict[str, Any]:
    """One interval's pair and why. ``argmax``: the best user-weighted
    validation AUC (the identity on ties). ``confirmed``: the sampled users
    are split in two halves (they are a random draw, so the first half is
    random); the pair with the largest paired gain over the identity on the
    *selection* half is kept only if its gain on the *confirmation* half is
    above 0 by a one-sided 95 % paired user bootstrap, else the identity. The confirmation half
    plays no part in the choice, so the winner's curse of picking the best
    of many pairs cannot carry a chance gain through (docs/loss_and_correction.md
    "Hard"). Intervals whose halves have fewer than ``min_users`` usable
    users keep the identity."""
    scores = _grid_scores(data, users, predictions, len(grid))
    out = {"alpha": IDENTITY[0], "beta": IDENTITY[1], "validation_auc": scores[0] if scores else None,
           "validation_auc_raw_labels": scores[0] if scores else None}
    if not scores:
        return out | ({"reason": "no usable users"} if config.selection == "confirmed" else {})
    if config.selection == "argmax":
        best = int(np.argmax(scores))  # argmax: first best, the identity first
        return out | {"alpha": grid[best][0], "beta": grid[best][1], "validation_auc": scores[best]}
    half = len(users) // 2
    select, confirm = users[:half], users[half:]
    if half < config.min_users:
        return out | {"reason": f"fewer than {config.min_users} usable users per half"}
    gains = _paired_gains(data, select, predictions, range(1, len(grid)), config)
    out["candidates"] = [{"alpha": a, "beta": b, "validation_gain": e, "ci": [lo, hi]}
                         for (a, b), (e, lo, hi) in zip(grid[1:], gains)]
    best = int(np.argmax([e for e, _, _ in gains])) + 1  # the first of equal gains
    if gains[best - 1][0] <= 0:
        return out | {"reason": "no pair gains over the identity on the selection half"}
    # One pair, one directional question (is its gain above 0?): a one-sided 95 % test, the lower bound of
    # the two-sided 90 % interval.
    [(e, lo, hi)] = _paired_gains(data, confirm, predictions, [best], config, confidence=0.90)
    out["confirmation"] = {"alpha": grid[best][0], "beta": grid[best][1], "users": len(confirm),
                           "validation_gain": e, "ci": [lo, hi]}
    if lo <= 0:
        return out | {"reason": "the selection half's best pair is not confirmed on the other half"}
    return out | {"alpha": grid[best][0], "beta": grid[best][1], "validation_auc": scores[best],
                  "reason": "the selection half's best pair gains significantly on the confirmation half"}


def _paired_gains(data: CTRDataset, users: list[tuple[int, int]], predictions: dict, pairs,
                  config: HardSearchConfig, confidence: float = 0.95) -> list[tuple[float, float, float]]:
    """Per grid index in ``pairs``: the validation AUC gain over the identity
    (index 0) on ``users``, weighted by validation samples, with its paired
    user bootstrap interval; the intervals hold jointly at ``confidence``
    (Bonferroni over ``pairs``)."""
    pairs = list(pairs)
    labels = [data.user(u).train_labels[cut:] for u, cut in users]
    auc = np.array([[per_user_auc(np.zeros(len(y), np.int64), y, predictions[u][p])[0][0] for p in [0, *pairs]]
                    for (u, _), y in zip(users, labels)])
    weights = np.array([len(y) for y in labels], np.float64)
    confidence = 1.0 - (1.0 - confidence) / max(len(pairs), 1)
    estimate, low, high = paired_bootstrap(auc[:, 1:] - auc[:, :1], weights, config.resamples, confidence, config.seed)
    return list(zip(estimate.tolist(), low.tolist(), high.tolist()))


def _sample_users(data: CTRDataset, config: HardSearchConfig) -> tuple[list[list[tuple[int, int]]], list[int]]:
    """Per group, the sampled ``(user, cut)`` pairs (``cut``: where the
    user's validation part starts), and each group's number of members."""
    rng = np.random.default_rng(config.seed)
    w = data.local_ctrs()
    groups = interval_of(config.edges, w)
    searched, members_per_group = [], []
    for g in range(len(config.edges) + 1):
        members = np.flatnonzero((groups == g) & np.isfinite(w))
        members_per_group.append(len(members))
        users = []
        for u in rng.permutation(members)[: config.users_per_group]:
            labels = data.user(int(u)).train_labels
            n = len(labels)
            cut = n - max(int(round(n * config.validation_fraction)), config.min_validation)
            if cut < 1 or labels[cut:].min() == labels[cut:].max():
                continue  # too few samples, or a one-class validation set
            users.append((int(u), cut))
        searched.append(users)
    return searched, members_per_group


def _grid_scores(data: CTRDataset, users: list[tuple[int, int]], predictions: dict, grid_size: int) -> list[float]:
    """User-weighted validation AUC of each grid pair over ``users`` (empty without users)."""
    if not users:
        return []
    labels = [data.user(u).train_labels[cut:] for u, cut in users]
    ids = np.concatenate([np.full(len(y), i) for i, y in enumerate(labels)])
    return [user_weighted_auc(ids, np.concatenate(labels), np.concatenate([predictions[u][p] for u, _ in users])).value
            for p in range(grid_size)]


def fine_tune_grid(worker: DeviceWorker, task: tuple[int, int, tuple[tuple[float, float], ...]]) -> dict[str, Any]:
    """The search's work for one user, run in a fleet worker: for each
    ``(alpha, beta)`` of the grid, restore the cloud weights, fine-tune on the
    first ``cut`` train samples with targets ``alpha`` (positives) / ``beta``
    (negatives), and predict the remaining train samples (the validation
    part). Returns ``{"user", "predictions": [len(grid), n - cut] float32}``."""
    user, cut, grid = task
    config = worker.config
    view = worker.dataset.user(user)
    fit = {k: v[:cut] for k, v in view.train_features.items()}
    val = {k: v[cut:] for k, v in view.train_features.items()}
    y = view.train_labels[:cut]
    predictions = [
        fine_tune_and_predict(worker.device, worker.state, fit, np.where(y == 1, alpha, beta).astype(np.float32), val,
                              config.learning_rate, config.epochs)
        for alpha, beta in grid
    ]
    return {"user": user, "predictions": np.stack(predictions)}
