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
user (its whole grid) on any fleet executor (serial, process pool, Ray), so
the search gets the fleet's parallelism (docs/scaling.md).
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

from lcft_tf.correction import HardCorrectionTable
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.device.fleet import Executor, FleetConfig, map_device_tasks, search_user_grid
from lcft_tf.evaluation.metrics import user_weighted_auc

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HardSearchConfig:
    edges: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    alphas: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0)
    betas: tuple[float, ...] = (-0.1, 0.0, 0.1, 0.2, 0.3)
    users_per_group: int = 20
    validation_fraction: float = 0.3
    min_validation: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        HardCorrectionTable.identity(self.edges)  # validates the edges
        if self.users_per_group < 1 or not 0 < self.validation_fraction < 1:
            raise ValueError("users_per_group >= 1 and validation_fraction in (0, 1) required")


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
    (its whole grid, :func:`lcft_tf.device.fleet.search_user_grid`) on
    ``executor`` (default: serial); the result does not depend on it."""
    config = config or HardSearchConfig()
    started = time.perf_counter()
    data = dataset if isinstance(dataset, CTRDataset) else CTRDataset.load(dataset)
    rng = np.random.default_rng(config.seed)
    w = data.local_ctrs()
    groups = np.searchsorted(np.asarray(config.edges), w, side="right")
    grid = [(1.0, 0.0)] + [p for p in itertools.product(config.alphas, config.betas) if p != (1.0, 0.0)]
    # Which users each group searches, and where their validation part starts.
    searched: list[np.ndarray] = []
    members_per_group = []
    tasks = []
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
        tasks += [(u, cut, tuple(grid)) for u, cut in users]

    device = FleetConfig(learning_rate=learning_rate, epochs=epochs, workers=1)
    predictions = {}
    with tqdm(total=len(tasks), desc="hard search", unit="user", disable=None) as bar:
        for result in map_device_tasks(model_path, dataset, device, search_user_grid, tasks, executor):
            predictions[result["user"]] = result["predictions"]
            bar.update(1)

    alphas, betas, report = [], [], []
    for g, users in enumerate(searched):
        scores = []
        labels = [data.user(u).train_labels[cut:] for u, cut in users]
        ids = np.concatenate([np.full(len(y), i) for i, y in enumerate(labels)]) if users else None
        for p in range(len(grid)) if users else []:
            preds = np.concatenate([predictions[u][p] for u, _ in users])
            scores.append(user_weighted_auc(ids, np.concatenate(labels), preds).value)
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
