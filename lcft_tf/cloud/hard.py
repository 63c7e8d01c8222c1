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
reported in the returned dict.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from typing import Any

import numpy as np

from lcft_tf.correction import HardCorrectionTable
from lcft_tf.data.dataset import CTRDataset
from lcft_tf.device.fleet import fine_tune_and_predict
from lcft_tf.device.model import OnDeviceModel
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
    dataset: CTRDataset,
    config: HardSearchConfig | None = None,
    learning_rate: float = 0.01,
    epochs: int = 1,
) -> tuple[HardCorrectionTable, dict[str, Any]]:
    """Grid-search the table on ``model_path``'s cloud weights; returns the
    table and a report (per group: users used, best pair, its AUC gain)."""
    from tqdm.auto import tqdm

    config = config or HardSearchConfig()
    started = time.perf_counter()
    device = OnDeviceModel(model_path)
    cloud = device.save()
    rng = np.random.default_rng(config.seed)
    w = dataset.local_ctrs()
    groups = np.searchsorted(np.asarray(config.edges), w, side="right")
    grid = [(1.0, 0.0)] + [p for p in itertools.product(config.alphas, config.betas) if p != (1.0, 0.0)]
    alphas, betas, report = [], [], []
    fine_tunes = 0
    for g in tqdm(range(len(config.edges) + 1), desc="hard search", unit="group", disable=None):
        members = np.flatnonzero((groups == g) & np.isfinite(w))
        chosen = rng.permutation(members)[: config.users_per_group]
        users = []
        for u in chosen:
            view = dataset.user(int(u))
            n = len(view.train_labels)
            cut = n - max(int(round(n * config.validation_fraction)), config.min_validation)
            valid = view.train_labels[cut:]
            if cut < 1 or valid.min() == valid.max():
                continue  # too few samples, or a one-class validation set
            fit = {k: v[:cut] for k, v in view.train_features.items()}
            val = {k: v[cut:] for k, v in view.train_features.items()}
            users.append((fit, view.train_labels[:cut], val, valid))
        scores = []
        for alpha, beta in grid if users else []:
            preds, labels, ids = [], [], []
            for i, (fit, y, val, y_val) in enumerate(users):
                targets = np.where(y == 1, alpha, beta).astype(np.float32)
                preds.append(fine_tune_and_predict(device, cloud, fit, targets, val, learning_rate, epochs))
                labels.append(y_val)
                ids.append(np.full(len(y_val), i))
                fine_tunes += 1
            scores.append(user_weighted_auc(np.concatenate(ids), np.concatenate(labels), np.concatenate(preds)).value)
        best = int(np.argmax(scores)) if scores else 0  # argmax: first best, (1, 0) first
        alphas.append(grid[best][0])
        betas.append(grid[best][1])
        report.append(
            {
                "interval": [([0.0] + list(config.edges))[g], (list(config.edges) + [1.0])[g]],
                "users_in_group": int(len(members)),
                "users_searched": len(users),
                "alpha": grid[best][0],
                "beta": grid[best][1],
                "validation_auc": scores[best] if scores else None,
                "validation_auc_raw_labels": scores[0] if scores else None,
            }
        )
    table = HardCorrectionTable(config.edges, tuple(alphas), tuple(betas))
    cost = {"fine_tunes": fine_tunes, "grid_size": len(grid), "seconds": round(time.perf_counter() - started, 2)}
    log.info("hard table %s (%d fine-tunes, %.1f s)", table.to_json(), fine_tunes, cost["seconds"])
    return table, {"groups": report, "cost": cost, "config": dataclasses.asdict(config)}
