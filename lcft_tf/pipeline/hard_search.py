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
from lcft_tf.correction import HardCorrectionTable, interval_of
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.device.fine_tune import fine_tune_and_predict
from lcft_tf.evaluation.metrics import user_weighted_auc
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.fleet.executors import Executor
from lcft_tf.fleet.simulate import map_device_tasks
from lcft_tf.fleet.worker import DeviceWorker

log = logging.getLogger(__name__)


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
        default=20, metadata={"help": "users sampled per CTR interval for the hard grid search, an integer >= 1"})
    validation_fraction: float = dataclasses.field(
        default=0.3, metadata={"help": "each sampled user's last share of train samples used for validation, in "
                                       "(0, 1)"})
    min_validation: int = dataclasses.field(
        default=4, metadata={"help": "fewest validation samples per sampled user, an integer >= 2 (an AUC needs both classes)"})
    seed: int = dataclasses.field(
        default=0, metadata={"help": "seed of the user sample (set per run from --seeds)"})

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
    grid = [(1.0, 0.0)] + [p for p in itertools.product(config.alphas, config.betas) if p != (1.0, 0.0)]
    searched, members_per_group = _sample_users(data, config)
    tasks = [(u, cut, tuple(grid)) for users in searched for u, cut in users]
    device = FleetConfig(learning_rate=learning_rate, epochs=epochs, workers=1)
    predictions = {}
    with tqdm(total=len(tasks), desc="hard search", unit="user", disable=None) as bar:
        for result in map_device_tasks(model_path, dataset, device, fine_tune_grid, tasks, executor):
            predictions[result["user"]] = result["predictions"]
            bar.update(1)
    alphas, betas, report = [], [], []
    for g, users in enumerate(searched):
        scores = _grid_scores(data, users, predictions, len(grid))
        best = int(np.argmax(scores)) if scores else 0  # argmax: first best, (1, 0) first
        alphas.append(grid[best][0])
        betas.append(grid[best][1])
        report.append(
            {
                "interval": [([0.0] + list(config.edges))[g], (list(config.edges) + [1.0])[g]],
                "users_in_group": int(members_per_group[g]),
                "users_searched": len(users),
                "alpha": grid[best][0],
                "beta": grid[best][1],
                "validation_auc": scores[best] if scores else None,
                "validation_auc_raw_labels": scores[0] if scores else None,
            }
        )
    table = HardCorrectionTable(config.edges, tuple(alphas), tuple(betas))
    fine_tunes = len(tasks) * len(grid)
    cost = {"fine_tunes": fine_tunes, "grid_size": len(grid), "seconds": round(time.perf_counter() - started, 2)}
    log.info("hard table %s (%d fine-tunes, %.1f s)", table.to_json(), fine_tunes, cost["seconds"])
    return table, {"groups": report, "cost": cost, "config": dataclasses.asdict(config)}


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
