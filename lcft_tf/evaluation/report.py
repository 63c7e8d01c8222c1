"""Numbers, tables and figures of a fleet run (paper Table 2, Figs. 1-3)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lcft_tf.evaluation.metrics import change_shares, per_user_auc, user_weighted_auc

METHOD_LABELS = {"cloud": "Cloud", "local": "Local", "soft1": "LCFT Soft1", "soft2": "LCFT Soft2", "hard": "LCFT Hard"}
DRIFT_EDGES = (0.0, 0.05, 0.1, 0.2, 0.3, 1.0)


def evaluate(results, global_ctr: float, drift_edges: Sequence[float] = DRIFT_EDGES) -> dict[str, Any]:
    """All metrics of one fleet run (:class:`lcft_tf.device.fleet.FleetResults`)."""
    index = np.repeat(np.arange(len(results.users)), results.num_test)
    drift = np.abs(results.local_ctr - global_ctr)
    bucket = np.clip(np.searchsorted(np.asarray(drift_edges), drift, side="right") - 1, 0, len(drift_edges) - 2)
    per_user = {m: per_user_auc(index, results.labels, p)[0] for m, p in results.predictions.items()}
    out: dict[str, Any] = {"methods": {}}
    for method, preds in results.predictions.items():
        overall = user_weighted_auc(index, results.labels, preds)
        by_bucket = []
        for b in range(len(drift_edges) - 1):
            mask = bucket[index] == b
            value = user_weighted_auc(index[mask], results.labels[mask], preds[mask])
            by_bucket.append({"drift": [drift_edges[b], drift_edges[b + 1]], "auc": value.value, "users": value.users_used})
        entry = {
            "auc": overall.value,
            "users_used": overall.users_used,
            "users_left_out": overall.users_left_out,
            "auc_by_drift": by_bucket,
        }
        if "cloud" in per_user and method != "cloud":
            entry["vs_cloud"] = change_shares(per_user["cloud"], per_user[method])
        out["methods"][method] = entry
    finite = results.local_ctr[np.isfinite(results.local_ctr)]
    counts, bins = np.histogram(finite, bins=20, range=(0.0, 1.0))
    out["local_ctr_histogram"] = {"bins": bins.tolist(), "counts": counts.tolist(), "global_ctr": global_ctr}
    out["users"] = int(len(results.users))
    out["users_without_train_samples"] = int((results.num_train == 0).sum())
    return out


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every method's overall AUC
    and its gain over Cloud (computed per seed, on the same users)."""
    methods = list(runs[0]["methods"])
    out = {}
    for m in methods:
        values = np.array([r["methods"][m]["auc"] for r in runs])
        entry = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                 "per_seed": values.tolist()}
        if "cloud" in methods:
            gains = values - np.array([r["methods"]["cloud"]["auc"] for r in runs])
            entry["gain_vs_cloud_mean"] = float(gains.mean())
            entry["gain_vs_cloud_std"] = float(gains.std(ddof=1)) if len(gains) > 1 else 0.0
        buckets = [r["methods"][m]["auc_by_drift"] for r in runs]
        entry["by_drift"] = [
            {
                "drift": b[0]["drift"],
                "users": b[0]["users"],
                "auc_mean": _nanmean([x["auc"] for x in b]),
                "gain_vs_cloud_mean": _nanmean(
                    [x["auc"] - r["methods"]["cloud"]["auc_by_drift"][i]["auc"] for x, r in zip(b, runs)]
                ) if "cloud" in methods else None,
            }
            for i, b in enumerate(zip(*buckets))
        ]
        out[m] = entry
    return out


def _nanmean(values) -> float:
    values = np.array([np.nan if v is None else v for v in values], dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def drift_table(summary: dict[str, dict[str, Any]], methods: Sequence[str]) -> str:
    """AUC gain over Cloud per local-CTR drift bucket (mean over seeds): where
    Local hurts and LCFT helps (paper Fig. 2)."""
    others = [m for m in methods if m != "cloud"]
    lines = ["| model | drift (abs. w_i − w_g) | users | " + " | ".join(METHOD_LABELS[m] for m in others) + " |",
             "|" + "---|" * (len(others) + 3)]
    for (_, model), agg in summary.items():
        for i, bucket in enumerate(agg[others[0]]["by_drift"]):
            gains = [agg[m]["by_drift"][i]["gain_vs_cloud_mean"] for m in others]
            cells = " | ".join("–" if g is None or not np.isfinite(g) else f"{g:+.4f}" for g in gains)
            lines.append(f"| {model} | {bucket['drift'][0]:.2f}–{bucket['drift'][1]:.2f} | {bucket['users']} | {cells} |")
    return "\n".join(lines)


def markdown_table(summary: dict[str, dict[str, Any]], methods: Sequence[str]) -> str:
    """Paper Table 2: rows dataset x model, columns methods, mean ± std."""
    header = "| dataset | model | " + " | ".join(METHOD_LABELS[m] for m in methods) + " |"
    lines = [header, "|" + "---|" * (len(methods) + 2)]
    for (dataset, model), agg in summary.items():
        best = max(agg[m]["mean"] for m in methods)
        cells = []
        for m in methods:
            text = f"{agg[m]['mean']:.4f} ± {agg[m]['std']:.4f}"
            cells.append(f"**{text}**" if agg[m]["mean"] == best else text)
        lines.append(f"| {dataset} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_figures(evaluations: dict[str, dict[str, Any]], out_dir: str | os.PathLike) -> list[Path]:
    """Fig. 1 local-CTR histogram, Fig. 2 AUC gain over Cloud by drift,
    Fig. 3 share of users whose AUC rose / stayed / fell. ``evaluations``:
    label (e.g. "din, seed 0") -> :func:`evaluate` output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next(iter(evaluations.values()))
    paths = []

    hist = first["local_ctr_histogram"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(hist["bins"][:-1], hist["counts"], width=np.diff(hist["bins"]), align="edge", edgecolor="white")
    ax.axvline(hist["global_ctr"], color="crimson", ls="--", label=f"global CTR w_g = {hist['global_ctr']:.3f}")
    ax.set_xlabel("local CTR w_i (train samples)")
    ax.set_ylabel("users")
    ax.set_title("Fig. 1: distribution of users' local CTR")
    ax.legend()
    paths.append(_save(fig, out_dir / "fig1_local_ctr.png"))

    fig, axes = plt.subplots(1, len(evaluations), figsize=(5.5 * len(evaluations), 4), squeeze=False)
    for ax, (label, ev) in zip(axes[0], evaluations.items()):
        cloud = ev["methods"]["cloud"]["auc_by_drift"] if "cloud" in ev["methods"] else None
        for m, entry in ev["methods"].items():
            if m == "cloud" or cloud is None:
                continue
            x = [f"{b['drift'][0]:.2f}-{b['drift'][1]:.2f}\n{b['users']} users" for b in entry["auc_by_drift"]]
            y = [b["auc"] - c["auc"] for b, c in zip(entry["auc_by_drift"], cloud)]
            ax.plot(x, y, marker="o", label=METHOD_LABELS[m])
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("|w_i - w_g| (drift)")
        ax.set_ylabel("user-weighted AUC − Cloud")
        ax.set_title(f"Fig. 2: gain by CTR drift — {label}")
        ax.tick_params(axis="x", labelsize=8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "fig2_auc_by_drift.png"))

    fig, axes = plt.subplots(1, len(evaluations), figsize=(5.5 * len(evaluations), 4), squeeze=False)
    for ax, (label, ev) in zip(axes[0], evaluations.items()):
        methods = [m for m, e in ev["methods"].items() if "vs_cloud" in e]
        bottom = np.zeros(len(methods))
        for part, color in (("fell", "#d9534f"), ("stayed", "#cccccc"), ("rose", "#5cb85c")):
            values = np.array([ev["methods"][m]["vs_cloud"][part] for m in methods])
            ax.bar([METHOD_LABELS[m] for m in methods], values, bottom=bottom, color=color, label=part)
            bottom += values
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of users")
        ax.set_title(f"Fig. 3: AUC vs Cloud per user — {label}")
        ax.tick_params(axis="x", rotation=20)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    paths.append(_save(fig, out_dir / "fig3_user_changes.png"))
    return paths
