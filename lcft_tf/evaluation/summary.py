"""Every number of a fleet run's report (paper Table 2, Figs. 1-4), as one
JSON-ready dict: :func:`summarize`. Definitions: docs/evaluation.md.

Method labels and the baselines gains are stated against come from the
method registry (:mod:`lcft_tf.methods`: ``label``, ``REFERENCES``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from lcft_tf import methods as registry
from lcft_tf._io import json_ready
from lcft_tf.evaluation.grouping import LOCAL_SAMPLE_EDGES, Grouping, local_sample_groups
from lcft_tf.evaluation.metrics import change_shares, paired_bootstrap, per_user_auc, weighted_user_mean

STAYED_TOLERANCE = 1e-6  # |AUC change| up to this counts as "stayed" (float rounding only)


def summarize(
    runs: Mapping[str, Mapping[int, Any]],
    global_ctr: float,
    methods: Sequence[str],
    grouping: Grouping = Grouping(),
    stayed_tolerance: float = STAYED_TOLERANCE,
    resamples: int = 2000,
    confidence: float = 0.95,
    bootstrap_seed: int = 0,
    local_sample_edges: Sequence[int] = LOCAL_SAMPLE_EDGES,
) -> dict[str, Any]:
    """Every number of the report, JSON-ready (plain Python types, NaN -> None).

    ``runs``: model -> seed -> :class:`lcft_tf.artifacts.fleet_chunks.FleetResults`;
    every seed of a model must hold the same users, test samples and labels,
    and predictions (float ``[test samples]``) for every name in
    ``methods`` (registry names; unknown names are kept and shown as is).
    ``global_ctr``: w_g in [0, 1]. ``stayed_tolerance``: |AUC change| (AUC
    units) that still counts as "stayed". ``resamples``, ``confidence``,
    ``bootstrap_seed``: the paired bootstrap; ``local_sample_edges``: see
    :func:`~lcft_tf.evaluation.grouping.local_sample_groups`.

    Per model: AUC per method (eq. 12; mean, std and per seed), gains over
    each of :data:`lcft_tf.methods.REFERENCES` present with paired per-user
    bootstrap intervals, the same per user group and per local sample count
    group, shares of users whose AUC rose / stayed / fell, and the local-CTR
    histogram. Definitions: docs/evaluation.md.

    Raises ``ValueError`` for empty or repeated ``methods``, ``global_ctr``
    outside [0, 1], a negative or non-finite ``stayed_tolerance``, no runs, a
    model without seeds, seeds on other users or labels, missing
    predictions, bad bootstrap settings, or a grouping that cannot place the
    users (:meth:`~lcft_tf.evaluation.grouping.Grouping.assign`).
    """
    methods = list(methods)
    _check_arguments(runs, global_ctr, methods, stayed_tolerance)
    comparisons = _comparisons(methods)
    bootstrap = (resamples, confidence, bootstrap_seed)
    models = {str(model): _summarize_model(str(model), seeds, global_ctr, methods, comparisons, grouping,
                                           stayed_tolerance, bootstrap, local_sample_edges)
              for model, seeds in runs.items()}
    summary = {
        "methods": methods,
        "comparisons": {b: others for b, others in comparisons.items()},
        "global_ctr": float(global_ctr),
        "grouping": grouping.to_json(),
        "stayed_tolerance": float(stayed_tolerance),
        "bootstrap": {
            "resamples": int(resamples),
            "confidence": float(confidence),
            "seed": int(bootstrap_seed),
            "unit": "user (paired across methods and seeds)",
            "statistic": "user-weighted (eq. 12) mean AUC gain, averaged over seeds",
        },
        "models": models,
    }
    return json_ready(summary)


def _check_arguments(runs, global_ctr: float, methods: list[str], stayed_tolerance: float) -> None:
    """Raise ``ValueError`` for the bad arguments listed in :func:`summarize`."""
    if not methods or len(set(methods)) != len(methods):
        raise ValueError(f"methods must be a non-empty list without repeats, got {methods}")
    if not (math.isfinite(global_ctr) and 0.0 <= global_ctr <= 1.0):
        raise ValueError(f"global_ctr must lie in [0, 1], got {global_ctr}")
    if not (math.isfinite(stayed_tolerance) and stayed_tolerance >= 0):
        raise ValueError(f"stayed_tolerance must be finite and >= 0, got {stayed_tolerance}")
    if not runs:
        raise ValueError("no runs to summarize")


def gain_key(base: str) -> str:
    """Key of the gains (and rose / stayed / fell shares) over ``base`` in a
    summary: ``"vs_<base>"``."""
    return f"vs_{base}"


def gain_entry(gains: Mapping[str, Any], base: str, method: str) -> Mapping[str, Any] | None:
    """The gain of ``method`` over ``base`` in a summary ``gains`` dict; None
    if that pair is not compared there."""
    return gains.get(gain_key(base), {}).get(method)


def _comparisons(methods: Sequence[str]) -> dict[str, list[str]]:
    """Baseline -> the methods compared with it. Baselines are the registry's
    ``REFERENCES`` present in ``methods``, in that order; Local is not
    compared with Cloud twice: its gain over Cloud is listed, Cloud's over
    Local is not (docs/evaluation.md "Gains")."""
    bases = [b for b in registry.REFERENCES if b in methods]
    out = {}
    for i, b in enumerate(bases):
        others = [m for m in methods if m != b and m not in bases[:i]]
        if others:
            out[b] = others
    return out


def _per_user(results, methods: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user AUC float64 ``[methods, users]`` (NaN: one-class or no test
    samples) and test counts int64 ``[users]`` of one run; raises
    ``ValueError`` if a method has no predictions."""
    missing = [m for m in methods if m not in results.predictions]
    if missing:
        raise ValueError(f"fleet results have no predictions for methods {missing}")
    num_users = len(results.users)
    index = np.repeat(np.arange(num_users), results.num_test)
    values = np.full((len(methods), num_users), np.nan)
    count = np.zeros(num_users, np.int64)
    for i, m in enumerate(methods):
        value, c = per_user_auc(index, results.labels, results.predictions[m])
        values[i, : len(value)] = value
        count[: len(c)] = c
    return values, count


def _summarize_model(model, seed_runs, global_ctr, methods, comparisons, grouping, tolerance, bootstrap,
                     local_sample_edges=LOCAL_SAMPLE_EDGES) -> dict[str, Any]:
    """The entry of one model in ``summary["models"]`` (see :func:`summarize`)."""
    first = _check_seeds_agree(model, seed_runs)
    data = _model_auc(seed_runs, methods)
    group, groups = grouping.assign(first.local_ctr, global_ctr)
    left_out = (data.count > 0) & ~data.used
    out: dict[str, Any] = {
        "seeds": data.seeds,
        "users": int(len(first.users)),
        "users_used": int(data.used.sum()),
        "users_left_out": int(left_out.sum()),
        "users_without_test_samples": int((data.count == 0).sum()),
        "users_without_local_ctr": int((group < 0).sum()),
        "users_without_local_ctr_used": int(((group < 0) & data.used).sum()),
        "users_without_local_ctr_left_out": int(((group < 0) & left_out).sum()),
        "methods": _method_numbers(data),
    }
    pairs = [(b, m) for b, others in comparisons.items() for m in others]
    gains = _Gains.of(data, pairs, bootstrap)
    out["gains"] = _overall_gains(gains, out["methods"])
    out["groups"] = _group_entries(data, gains, group, groups)
    out["groups_by_local_samples"] = _group_entries(data, gains, *local_sample_groups(first.num_train, local_sample_edges))
    out["user_changes"] = _user_changes(data, pairs, tolerance)
    out["local_ctr_histogram"] = _local_ctr_histogram(first.local_ctr)
    return out


def _check_seeds_agree(model: str, seed_runs: Mapping[int, Any]):
    """The run of the lowest seed, after checking that every seed holds the
    same users, test counts and test labels; raises ``ValueError`` otherwise."""
    seeds = sorted(seed_runs)
    if not seeds:
        raise ValueError(f"model {model} has no seeds")
    first = seed_runs[seeds[0]]
    for s in seeds[1:]:
        other = seed_runs[s]
        same = (
            np.array_equal(first.users, other.users)
            and np.array_equal(first.num_test, other.num_test)
            and np.array_equal(first.labels, other.labels)
        )
        if not same:
            raise ValueError(f"model {model}: seed {s} ran on other users or test labels than seed {seeds[0]}")
    return first


@dataclasses.dataclass(frozen=True)
class _ModelAUC:
    """Per-user AUC of one model, every seed and method.

    ``auc`` float64 ``[seeds, methods, users]`` (NaN: one-class test set),
    ``count`` int64 ``[users]`` test samples, ``used`` bool ``[users]``: has
    test samples and a finite AUC for every seed and method.
    """

    seeds: list[int]
    methods: list[str]
    auc: np.ndarray
    count: np.ndarray
    used: np.ndarray

    def column(self, method: str) -> int:
        """Index of ``method`` along the methods axis of ``auc``."""
        return self.methods.index(method)

    def per_seed(self, i: int, mask: np.ndarray | None = None) -> list[float]:
        """Eq. 12 AUC of method column ``i`` for every seed, over the users in ``mask`` (all if None)."""
        return [weighted_user_mean(self.auc[k, i] if mask is None else np.where(mask, self.auc[k, i], np.nan),
                                   self.count).value for k in range(len(self.seeds))]


def _model_auc(seed_runs: Mapping[int, Any], methods: Sequence[str]) -> _ModelAUC:
    """Stack the per-user AUC of every seed (sorted) and mark the used users."""
    seeds = sorted(seed_runs)
    per_seed = [_per_user(seed_runs[s], methods) for s in seeds]
    auc = np.stack([v for v, _ in per_seed])  # [seeds, methods, users]
    count = per_seed[0][1]
    used = (count > 0) & np.all(np.isfinite(auc), axis=(0, 1))
    return _ModelAUC(seeds, list(methods), auc, count, used)


def _std_over_seeds(values: np.ndarray) -> float | None:
    """Sample std (ddof 1) over seeds; None for a single seed, which has no
    spread to measure (null in JSON, "n/a" in report.md; docs/evaluation.md "Seeds")."""
    return float(values.std(ddof=1)) if len(values) > 1 else None


def _method_numbers(data: _ModelAUC) -> dict[str, dict[str, Any]]:
    """Label, mean, std and per-seed eq. 12 AUC of every method (Table 2)."""
    out = {}
    for i, m in enumerate(data.methods):
        values = np.array(data.per_seed(i))
        out[m] = {
            "label": registry.label(m),
            "mean": float(values.mean()),
            "std": _std_over_seeds(values),
            "per_seed": values.tolist(),
        }
    return out


@dataclasses.dataclass(frozen=True)
class _Gains:
    """Per-user gains ``gain`` float64 ``[users, pairs]`` (method minus
    baseline, averaged over seeds) and their paired bootstrap."""

    pairs: list[tuple[str, str]]
    gain: np.ndarray
    weights: np.ndarray
    used: np.ndarray
    bootstrap: tuple[int, float, int]  # resamples, confidence, seed

    @classmethod
    def of(cls, data: _ModelAUC, pairs: list[tuple[str, str]], bootstrap: tuple[int, float, int]) -> "_Gains":
        """Gains of every ``(base, method)`` pair; weights = test samples (eq. 12)."""
        auc = data.auc
        gain = np.stack([(auc[:, data.column(m)] - auc[:, data.column(b)]).mean(0) for b, m in pairs], axis=1) \
            if pairs else np.zeros((len(data.count), 0))
        return cls(pairs, gain, data.count.astype(np.float64), data.used, bootstrap)

    def among(self, mask: np.ndarray) -> dict[str, dict[str, Any]]:
        """``vs_<base>`` -> method -> estimate, interval and ``excludes_zero``
        over the used users in ``mask`` (docs/evaluation.md "Gains")."""
        users = mask & self.used
        estimate, low, high = paired_bootstrap(self.gain[users], self.weights[users], *self.bootstrap)
        table: dict[str, dict[str, Any]] = {}
        for j, (b, m) in enumerate(self.pairs):
            table.setdefault(gain_key(b), {})[m] = {
                "estimate": float(estimate[j]),
                "ci": [float(low[j]), float(high[j])],
                "excludes_zero": bool(low[j] > 0 or high[j] < 0),
            }
        return table


def _overall_gains(gains: _Gains, method_numbers: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Gains over all users, with the table's view added: the per-seed
    differences of the eq. 12 AUCs and their std over seeds."""
    table = gains.among(np.ones(len(gains.used), bool))
    for b, m in gains.pairs:
        diffs = np.array(method_numbers[m]["per_seed"]) - np.array(method_numbers[b]["per_seed"])
        table[gain_key(b)][m]["per_seed"] = diffs.tolist()
        table[gain_key(b)][m]["std_over_seeds"] = _std_over_seeds(diffs)
    return table


def _group_entries(data: _ModelAUC, gains: _Gains, group: np.ndarray,
                   groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each group's description with its user counts, seed-mean eq. 12 AUC
    per method and gains (``group``: int ``[users]`` index into ``groups``).
    ``users``: all users in the group; ``users_used``: those in its AUC and
    gains; ``users_left_out``: those with test samples but a one-class test
    set (docs/evaluation.md "Which users are counted")."""
    entries = []
    for g, description in enumerate(groups):
        mask = group == g
        entries.append({
            **description,
            "users": int(mask.sum()),
            "users_used": int((mask & data.used).sum()),
            "users_left_out": int((mask & (data.count > 0) & ~data.used).sum()),
            "auc": {m: float(np.mean(data.per_seed(i, mask))) for i, m in enumerate(data.methods)},
            "gains": gains.among(mask),
        })
    return entries


def _user_changes(data: _ModelAUC, pairs: list[tuple[str, str]], tolerance: float) -> dict[str, dict[str, Any]]:
    """Shares of users whose AUC rose / stayed / fell, and how many of the
    used users it changed (|ΔAUC| > ``tolerance``), per seed and their mean
    (docs/evaluation.md "Rose / stayed / fell", "Users a fine-tune changed")."""
    changes: dict[str, dict[str, Any]] = {}
    used = int(data.used.sum())
    for b, m in pairs:
        base, other = data.auc[:, data.column(b)], data.auc[:, data.column(m)]
        shares = []
        for k in range(len(data.seeds)):
            changed = int((np.abs(other[k][data.used] - base[k][data.used]) > tolerance).sum())
            shares.append(change_shares(base[k], other[k], tolerance)
                          | {"changed": changed / max(used, 1), "users_changed": changed})
        changes.setdefault(gain_key(b), {})[m] = {
            part: float(np.mean([s[part] for s in shares])) for part in ("rose", "stayed", "fell", "changed",
                                                                          "users_changed")
        } | {"users_used": used, "per_seed": shares}
    return changes


def _local_ctr_histogram(local_ctr: np.ndarray) -> dict[str, list]:
    """20 equal bins over [0, 1] of the finite local CTRs (Fig. 1)."""
    finite = local_ctr[np.isfinite(local_ctr)]
    counts, bins = np.histogram(finite, bins=20, range=(0.0, 1.0))
    return {"bins": bins.tolist(), "counts": counts.tolist()}
