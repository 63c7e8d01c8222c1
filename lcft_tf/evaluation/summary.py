"""Every number of a fleet run's report (paper Table 2, Figs. 1-3), as one
JSON-ready dict; definitions in docs/evaluation.md."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from lcft_tf.evaluation.grouping import LOCAL_SAMPLE_EDGES, Grouping, local_sample_groups
from lcft_tf.evaluation.metrics import change_shares, paired_bootstrap, per_user_auc, weighted_user_mean
from lcft_tf import methods as registry

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
    """Every number of the report, JSON-ready (NaN -> None).

    ``runs``: model -> seed -> :class:`lcft_tf.device.fleet.FleetResults`;
    every seed of a model must hold the same users, test samples and labels.
    Per model: AUC per method (eq. 12; mean, std and per seed), gains over
    Cloud and Local with paired per-user bootstrap intervals, the same per
    user group, shares of users whose AUC rose / stayed / fell, and the
    local-CTR histogram. See docs/evaluation.md.
    """
    methods = list(methods)
    if not methods or len(set(methods)) != len(methods):
        raise ValueError(f"methods must be a non-empty list without repeats, got {methods}")
    if not (math.isfinite(global_ctr) and 0.0 <= global_ctr <= 1.0):
        raise ValueError(f"global_ctr must lie in [0, 1], got {global_ctr}")
    if not (math.isfinite(stayed_tolerance) and stayed_tolerance >= 0):
        raise ValueError(f"stayed_tolerance must be finite and >= 0, got {stayed_tolerance}")
    if not runs:
        raise ValueError("no runs to summarize")
    comparisons = _comparisons(methods)
    models = {str(model): _summarize_model(str(model), seeds, global_ctr, methods, comparisons, grouping,
                                           stayed_tolerance, resamples, confidence, bootstrap_seed, local_sample_edges)
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
    return _json_ready(summary)


def _comparisons(methods: Sequence[str]) -> dict[str, list[str]]:
    """Baseline -> the methods compared with it (Local is not compared with
    Cloud twice: its gain over Cloud is listed, Cloud's over Local is not)."""
    bases = [b for b in registry.REFERENCES if b in methods]
    out = {}
    for i, b in enumerate(bases):
        others = [m for m in methods if m != b and m not in bases[:i]]
        if others:
            out[b] = others
    return out


def _per_user(results, methods: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user AUC ``[methods, users]`` and test counts ``[users]`` of one run."""
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


def _summarize_model(model, seed_runs, global_ctr, methods, comparisons, grouping, tolerance, resamples, confidence,
                     boot_seed, local_sample_edges=LOCAL_SAMPLE_EDGES):
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
    per_seed = [_per_user(seed_runs[s], methods) for s in seeds]
    auc = np.stack([v for v, _ in per_seed])  # [seeds, methods, users]
    count = per_seed[0][1]
    used = (count > 0) & np.all(np.isfinite(auc), axis=(0, 1))
    left_out = int(((count > 0) & ~used).sum())
    group, groups = grouping.assign(first.local_ctr, global_ctr)

    out: dict[str, Any] = {
        "seeds": seeds,
        "users": int(len(first.users)),
        "users_used": int(used.sum()),
        "users_left_out": left_out,
        "users_without_local_ctr": int((group < 0).sum()),
        "methods": {},
    }
    for i, m in enumerate(methods):
        values = np.array([weighted_user_mean(auc[k, i], count).value for k in range(len(seeds))])
        out["methods"][m] = {
            "label": registry.label(m),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "per_seed": values.tolist(),
        }

    comparisons = [(b, m) for b, others in comparisons.items() for m in others]
    index = {m: i for i, m in enumerate(methods)}
    # per-user gain, averaged over seeds: [users, comparisons]
    gain = np.stack([(auc[:, index[m]] - auc[:, index[b]]).mean(0) for b, m in comparisons], axis=1) \
        if comparisons else np.zeros((len(count), 0))
    weights = count.astype(np.float64)

    def gains_for(mask: np.ndarray) -> dict[str, dict[str, Any]]:
        users = mask & used
        estimate, low, high = paired_bootstrap(gain[users], weights[users], resamples, confidence, boot_seed)
        table: dict[str, dict[str, Any]] = {}
        for j, (b, m) in enumerate(comparisons):
            table.setdefault(f"vs_{b}", {})[m] = {
                "estimate": float(estimate[j]),
                "ci": [float(low[j]), float(high[j])],
                "excludes_zero": bool(low[j] > 0 or high[j] < 0),
            }
        return table

    gains = gains_for(np.ones(len(count), bool))
    for b, m in comparisons:  # the table's view: per-seed differences of eq. 12 AUCs
        diffs = np.array(out["methods"][m]["per_seed"]) - np.array(out["methods"][b]["per_seed"])
        gains[f"vs_{b}"][m]["per_seed"] = diffs.tolist()
        gains[f"vs_{b}"][m]["std_over_seeds"] = float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0
    out["gains"] = gains

    def group_entries(group: np.ndarray, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        entries = []
        for g, description in enumerate(groups):
            mask = group == g
            entries.append({
                **description,
                "users": int(mask.sum()),
                "users_used": int((mask & used).sum()),
                "auc": {
                    m: float(np.mean([weighted_user_mean(np.where(mask, auc[k, i], np.nan), count).value
                                      for k in range(len(seeds))]))
                    for i, m in enumerate(methods)
                },
                "gains": gains_for(mask),
            })
        return entries

    out["groups"] = group_entries(group, groups)
    out["groups_by_local_samples"] = group_entries(*local_sample_groups(first.num_train, local_sample_edges))

    changes: dict[str, dict[str, Any]] = {}
    for b, m in comparisons:
        shares = [change_shares(auc[k, index[b]], auc[k, index[m]], tolerance) for k in range(len(seeds))]
        changes.setdefault(f"vs_{b}", {})[m] = {
            part: float(np.mean([s[part] for s in shares])) for part in ("rose", "stayed", "fell")
        } | {"per_seed": shares}
    out["user_changes"] = changes

    finite = first.local_ctr[np.isfinite(first.local_ctr)]
    counts, bins = np.histogram(finite, bins=20, range=(0.0, 1.0))
    out["local_ctr_histogram"] = {"bins": bins.tolist(), "counts": counts.tolist()}
    return out


def _json_ready(value):
    """Plain Python numbers; NaN / inf -> None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value
