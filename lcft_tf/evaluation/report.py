"""Numbers, tables and figures of a fleet run (paper Table 2, Figs. 1-3).

Two entry points: :func:`summarize` turns the fleet results of every model x
seed into one JSON-ready dict, :func:`write_report` renders it as
``report.md`` and three figures. Definitions: docs/evaluation.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lcft_tf._io import atomic_write
from lcft_tf.evaluation.metrics import change_shares, paired_bootstrap, per_user_auc, weighted_user_mean
from lcft_tf.methods import REFERENCES, label

DRIFT_EDGES = (0.0, 0.05, 0.1, 0.2, 0.3, 1.0)
STAYED_TOLERANCE = 1e-6  # |AUC change| up to this counts as "stayed" (float rounding only)
_RATIO_MATCH = 1e-9  # a train local CTR must equal 1 / (1 + r) this closely
_MAX_VALUE_GROUPS = 50
# Users grouped by their number of local (train) samples: where CoDA's
# augmentation should matter most (docs/coda.md). Right edges exclusive.
LOCAL_SAMPLE_EDGES = (0, 5, 10, 20, 50, 100, 200)
FIGURES = ("fig1_local_ctr.png", "fig2_auc_by_drift.png", "fig3_user_changes.png", "fig4_gain_by_local_samples.png")


def local_sample_groups(num_train: np.ndarray, edges: Sequence[int] = LOCAL_SAMPLE_EDGES):
    """Group index of every user by local sample count, and the groups
    (``[e_j, e_{j+1})``, the last one open-ended)."""
    edges = np.asarray(edges, dtype=np.int64)
    if len(edges) < 1 or edges[0] != 0 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"local sample edges must start at 0 and increase, got {list(edges)}")
    group = np.searchsorted(edges, np.asarray(num_train), side="right") - 1
    groups = [{"label": f"{lo}–{hi - 1}" if hi is not None else f"≥ {lo}", "local_samples": [int(lo), None if hi is None else int(hi)]}
              for lo, hi in zip(edges, [*edges[1:].tolist(), None])]
    return group, groups


method_label = label  # the registry's display name; tests and callers still import this name


# -- grouping of users (Fig. 2, the drift table) -------------------------------
@dataclasses.dataclass(frozen=True)
class Grouping:
    """How users are grouped for Fig. 2 and the group table.

    ``drift``: buckets of ``|w_i - w_g|`` with ``drift_edges`` (the last
    bucket includes its upper edge). ``negative_ratio``: one group per
    negative-sampling ratio r, read from the train local CTR
    ``w_i = 1 / (1 + r)``; ``ratios`` None groups by the distinct local CTR
    values instead. Users without a local CTR (no train samples) are in no
    group and counted apart.
    """

    kind: str = "drift"
    drift_edges: tuple[float, ...] = DRIFT_EDGES
    ratios: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("drift", "negative_ratio"):
            raise ValueError(f"grouping kind must be 'drift' or 'negative_ratio', got {self.kind!r}")
        edges = np.asarray(self.drift_edges, dtype=float)
        if len(edges) < 2 or not np.all(np.isfinite(edges)) or edges[0] < 0 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"drift_edges must be >= 2 increasing finite values from >= 0, got {self.drift_edges}")
        if self.ratios is not None:
            r = np.asarray(self.ratios, dtype=float)
            if len(r) == 0 or not np.all(np.isfinite(r)) or np.any(r < 0) or len(np.unique(r)) != len(r):
                raise ValueError(f"negative ratios must be distinct finite values >= 0, got {self.ratios}")

    @classmethod
    def from_info(cls, info: Mapping[str, Any], drift_edges: Sequence[float] = DRIFT_EDGES) -> "Grouping":
        """The grouping a dataset asks for in its ``info`` (``local_ctr_groups``)."""
        kind = info.get("local_ctr_groups") or "drift"
        ratios = info.get("negative_ratios")
        return cls(kind, tuple(drift_edges), tuple(ratios) if kind == "negative_ratio" and ratios else None)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "drift":
            return {"kind": "drift", "drift_edges": list(self.drift_edges)}
        return {"kind": "negative_ratio", "ratios": None if self.ratios is None else list(self.ratios)}

    def assign(self, local_ctr: np.ndarray, global_ctr: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Group index of every user (-1: no local CTR) and the groups."""
        local_ctr = np.asarray(local_ctr, dtype=np.float64)
        known = np.isfinite(local_ctr)
        if np.any((local_ctr[known] < 0) | (local_ctr[known] > 1)):
            raise ValueError("local CTR values must lie in [0, 1]")
        group = np.full(len(local_ctr), -1, np.int64)
        if self.kind == "drift":
            edges = np.asarray(self.drift_edges, dtype=float)
            drift = np.abs(local_ctr[known] - global_ctr)
            if np.any((drift < edges[0]) | (drift > edges[-1])):
                raise ValueError(f"local CTR drift outside the drift edges [{edges[0]}, {edges[-1]}]")
            index = np.searchsorted(edges, drift, side="right") - 1
            group[known] = np.minimum(index, len(edges) - 2)  # the top edge belongs to the last bucket
            groups = [
                {"label": f"{lo:.2f}–{hi:.2f}", "drift": [float(lo), float(hi)]} for lo, hi in zip(edges[:-1], edges[1:])
            ]
            return group, groups
        if self.ratios is not None:
            ratios = np.sort(np.asarray(self.ratios, dtype=float))
            targets = 1.0 / (1.0 + ratios)
        else:
            targets = np.unique(np.round(local_ctr[known], 12))[::-1]  # descending CTR = ascending ratio
            if len(targets) > _MAX_VALUE_GROUPS:
                raise ValueError(
                    f"{len(targets)} distinct local CTR values: not discrete negative ratios; group by drift instead"
                )
            with np.errstate(divide="ignore"):
                ratios = 1.0 / targets - 1.0
        nearest = np.abs(local_ctr[known][:, None] - targets[None, :]).argmin(axis=1)
        off = np.abs(local_ctr[known] - targets[nearest]) > _RATIO_MATCH
        if np.any(off):
            raise ValueError(
                f"{int(off.sum())} users have a local CTR that is 1/(1+r) for no negative ratio r in {list(ratios)}"
            )
        group[known] = nearest
        groups = [
            {"label": f"r={r:g} (w_i={w:.3f})", "negative_ratio": float(r), "local_ctr": float(w)}
            for r, w in zip(ratios, targets)
        ]
        return group, groups


# -- numbers -------------------------------------------------------------------
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
    bases = [b for b in REFERENCES if b in methods]
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
            "label": method_label(m),
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


# -- report.md -----------------------------------------------------------------
def write_report(out_dir: str | os.PathLike, title_info: Mapping[str, Any], summary: Mapping[str, Any]) -> list[Path]:
    """Write ``report.md`` and the three figures under ``out_dir``; return their paths.

    ``title_info``: ``title`` (heading), optional ``dataset`` (name in the
    table) and ``notes`` (list of paragraphs under the heading: data, config).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = plot_figures(summary, out_dir)
    path = out_dir / "report.md"
    atomic_write(path, render_markdown(title_info, summary, [p.name for p in figures]).encode())
    return [path, *figures]


def _num(value, fmt: str = "+.4f") -> str:
    return "–" if value is None else format(value, fmt)


def _gain_cell(entry: Mapping[str, Any] | None) -> str:
    if not entry or entry["estimate"] is None:
        return "–"
    lo, hi = entry["ci"]
    mark = " ✓" if entry["excludes_zero"] else ""
    return f"{_num(entry['estimate'])} [{_num(lo)}, {_num(hi)}]{mark}"


def auc_table(summary: Mapping[str, Any], dataset: str = "") -> str:
    """Paper Table 2: rows model, columns methods, mean ± std over seeds (best in bold)."""
    methods = summary["methods"]
    lines = ["| dataset | model | " + " | ".join(method_label(m) for m in methods) + " |",
             "|" + "---|" * (len(methods) + 2)]
    for model, entry in summary["models"].items():
        means = [entry["methods"][m]["mean"] for m in methods]
        best = max((v for v in means if v is not None), default=None)
        cells = []
        for m, mean in zip(methods, means):
            text = f"{_num(mean, '.4f')} ± {_num(entry['methods'][m]['std'], '.4f')}"
            cells.append(f"**{text}**" if mean is not None and mean == best else text)
        lines.append(f"| {dataset} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def gain_table(summary: Mapping[str, Any]) -> str:
    """Gain over each baseline: estimate [95 % CI], ✓ when the CI excludes 0."""
    baselines = list(summary["comparisons"])
    lines = ["| model | method | " + " | ".join(f"vs {method_label(b)}" for b in baselines) + " |",
             "|" + "---|" * (len(baselines) + 2)]
    compared = [m for m in summary["methods"] if any(m in others for others in summary["comparisons"].values())]
    for model, entry in summary["models"].items():
        for m in compared:
            cells = [_gain_cell(entry["gains"].get(f"vs_{b}", {}).get(m)) for b in baselines]
            lines.append(f"| {model} | {method_label(m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_table(summary: Mapping[str, Any], base: str, key: str = "groups") -> str:
    """Gain over ``base`` per user group: drift bucket or negative ratio
    (``key="groups"``), or local sample count (``"groups_by_local_samples"``)."""
    columns = [(base, m) for m in summary["comparisons"][base]]
    what = _group_axis(summary, key)
    lines = ["| model | " + what + " | users | " + " | ".join(f"{method_label(m)} vs {method_label(b)}"
                                                        for b, m in columns) + " |",
             "|" + "---|" * (len(columns) + 3)]
    for model, entry in summary["models"].items():
        for g in entry[key]:
            cells = [_gain_cell(g["gains"].get(f"vs_{b}", {}).get(m)) for b, m in columns]
            lines.append(f"| {model} | {g['label']} | {g['users']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _group_axis(summary: Mapping[str, Any], key: str) -> str:
    if key == "groups_by_local_samples":
        return "local samples"
    return "drift abs(w_i − w_g)" if summary["grouping"]["kind"] == "drift" else "negative ratio r"


def change_table(summary: Mapping[str, Any]) -> str:
    """Share of users whose AUC rose / stayed / fell against each baseline."""
    lines = ["| model | method | vs | rose | stayed | fell |", "|---|---|---|---|---|---|"]
    for model, entry in summary["models"].items():
        for key, per_method in entry["user_changes"].items():
            base = key.removeprefix("vs_")
            for m, s in per_method.items():
                lines.append(f"| {model} | {method_label(m)} | {method_label(base)} | "
                             f"{s['rose']:.1%} | {s['stayed']:.1%} | {s['fell']:.1%} |")
    return "\n".join(lines)


def render_markdown(title_info: Mapping[str, Any], summary: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
    """The text of report.md (see :func:`write_report`)."""
    models = summary["models"]
    seeds = sorted({s for e in models.values() for s in e["seeds"]})
    boot = summary["bootstrap"]
    level = f"{boot['confidence']:.0%}"
    lines = [f"# {title_info.get('title', 'LCFT experiment')}", ""]
    for note in title_info.get("notes", ()):
        lines += [str(note), ""]
    lines += [
        f"Global CTR w_g = {summary['global_ctr']:.4f}. Seeds: {seeds}.",
        "",
        "## User-weighted AUC (paper eq. 12), mean ± std over seeds",
        "",
        auc_table(summary, str(title_info.get("dataset", ""))),
        "",
    ]
    for model, entry in models.items():
        lines.append(
            f"- {model}: {entry['users_used']} of {entry['users']} users in the AUC; {entry['users_left_out']} left out "
            f"(test set of one class)."
        )
    lines.append("")
    if summary["comparisons"]:
        lines += [
            f"## Gains with {level} paired bootstrap intervals",
            "",
            f"Estimate = user-weighted mean AUC gain averaged over seeds (equals the difference of the table's means); "
            f"[{level} interval] from {boot['resamples']} resamples of users (seed {boot['seed']}), each user's "
            f"methods and seeds kept together; ✓ = the interval excludes 0.",
            "",
            gain_table(summary),
            "",
        ]
        kind = summary["grouping"]["kind"]
        what = ("local-CTR drift abs(w_i − w_g) buckets" if kind == "drift"
                else "negative-sampling ratio r (train local CTR w_i = 1/(1+r))")
        without = {m: e["users_without_local_ctr"] for m, e in models.items()}
        lines += [
            f"## Gain by {what}",
            "",
            f"Mean over seeds, with {level} paired bootstrap intervals within each group. Users with no train samples "
            f"have no local CTR and are in no group: {', '.join(f'{m}: {n}' for m, n in without.items())}.",
            "",
        ]
        for base in summary["comparisons"]:
            lines += [f"Gain over {method_label(base)}:", "", group_table(summary, base), ""]
        lines += [
            "## Gain by number of local samples",
            "",
            "Users grouped by their number of local (train) samples, where augmentation (CoDA) should matter most; "
            f"mean over seeds, {level} paired bootstrap intervals within each group.",
            "",
        ]
        for base in summary["comparisons"]:
            lines += [f"Gain over {method_label(base)}:", "", group_table(summary, base, "groups_by_local_samples"), ""]
        lines += [
            "## Users whose AUC rose, stayed or fell",
            "",
            f"Per user, AUC of the method minus AUC of the baseline on the same seed; \"stayed\" = the change is at most "
            f"{summary['stayed_tolerance']:g} in absolute value. Shares are means over seeds; users left out of the AUC "
            f"are not counted.",
            "",
            change_table(summary),
            "",
        ]
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{Path(name).stem}]({name})" for name in figures]
        lines += [
            "",
            "Figs. 2–4 show the same numbers as the tables (means over seeds). In Figs. 2 and 4 each method is "
            "drawn slightly shifted sideways with its own marker and line style, so methods with equal values stay "
            "visible.",
        ]
    return "\n".join(lines) + "\n"


# -- figures -------------------------------------------------------------------
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", "-.", ":")
_OFFSET = 0.07  # x shift between methods, in group widths


def method_styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Colour, marker, line style and x offset of each method in Fig. 2
    (offsets all distinct; the same in every panel)."""
    k = len(methods)
    return {
        m: {
            "color": f"C{i % 10}",
            "marker": _MARKERS[i % len(_MARKERS)],
            "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
            "offset": (i - (k - 1) / 2) * _OFFSET,
        }
        for i, m in enumerate(methods)
    }


def figure_local_ctr(summary: Mapping[str, Any]):
    import matplotlib.pyplot as plt

    model, entry = next(iter(summary["models"].items()))
    hist = entry["local_ctr_histogram"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(hist["bins"][:-1], hist["counts"], width=np.diff(hist["bins"]), align="edge", edgecolor="white")
    ax.axvline(summary["global_ctr"], color="crimson", ls="--", label=f"global CTR w_g = {summary['global_ctr']:.3f}")
    ax.set_xlabel("local CTR w_i (train samples)")
    ax.set_ylabel("users")
    ax.set_title(f"Fig. 1: users' local CTR ({entry['users_without_local_ctr']} users without train samples not shown)",
                 fontsize=9)
    ax.legend()
    return fig


def figure_gain_by_group(summary: Mapping[str, Any], key: str = "groups", number: int = 2):
    """Fig. 2 (or 4 for ``key="groups_by_local_samples"``): per model (rows)
    and baseline (columns), each method's gain per user group, mean over
    seeds, with the bootstrap interval as error bars."""
    import matplotlib.pyplot as plt

    models = summary["models"]
    baselines = list(summary["comparisons"])
    if not baselines:
        raise ValueError("Fig. 2 needs a 'cloud' or 'local' method to compare against")
    level = f"{summary['bootstrap']['confidence']:.0%}"
    what = {"groups_by_local_samples": "local (train) samples"}.get(
        key, "|w_i − w_g| (drift)" if summary["grouping"]["kind"] == "drift" else "negative sampling ratio r")
    fig, axes = plt.subplots(len(models), len(baselines), figsize=(6.5 * len(baselines), 4.2 * len(models)),
                             squeeze=False)
    styles = method_styles(summary["methods"])
    for row, (model, entry) in enumerate(models.items()):
        groups = entry[key]
        x = np.arange(len(groups), dtype=float)
        for col, base in enumerate(baselines):
            ax = axes[row][col]
            others = summary["comparisons"][base]
            for m in others:
                cells = [g["gains"].get(f"vs_{base}", {}).get(m) for g in groups]
                y = np.array([np.nan if c is None or c["estimate"] is None else c["estimate"] for c in cells])
                lo = np.array([np.nan if c is None or c["ci"][0] is None else c["ci"][0] for c in cells])
                hi = np.array([np.nan if c is None or c["ci"][1] is None else c["ci"][1] for c in cells])
                st = styles[m]
                ax.errorbar(x + st["offset"], y, yerr=[y - lo, hi - y], marker=st["marker"], linestyle=st["linestyle"],
                            color=st["color"], capsize=2, markersize=5, label=method_label(m))
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(x, [f"{g['label']}\n{g['users']} users" for g in groups], fontsize=7)
            ax.set_xlabel(what)
            ax.set_ylabel(f"user-weighted AUC − {method_label(base)}")
            ax.set_title(f"Fig. {number}: {model}, gain over {method_label(base)} by {what}\n"
                         f"mean of {len(entry['seeds'])} seed(s); bars: {level} paired bootstrap CI", fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    return fig


def figure_user_changes(summary: Mapping[str, Any]):
    """Fig. 3: share of users whose AUC rose / stayed / fell against the first
    baseline (Cloud when present), mean over seeds."""
    import matplotlib.pyplot as plt

    models = summary["models"]
    base = next(iter(summary["comparisons"]))
    tol = summary["stayed_tolerance"]
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, (model, entry) in zip(axes[0], models.items()):
        per_method = entry["user_changes"][f"vs_{base}"]
        methods = list(per_method)
        bottom = np.zeros(len(methods))
        for part, color in (("fell", "#d9534f"), ("stayed", "#cccccc"), ("rose", "#5cb85c")):
            values = np.array([per_method[m][part] for m in methods])
            label = f"stayed (|ΔAUC| ≤ {tol:g})" if part == "stayed" else part
            ax.bar([method_label(m) for m in methods], values, bottom=bottom, color=color, label=label)
            bottom += values
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of users")
        ax.set_title(f"Fig. 3: {model}, per-user AUC vs {method_label(base)}\n"
                     f"mean of {len(entry['seeds'])} seed(s); stayed: |ΔAUC| ≤ {tol:g}", fontsize=9)
        ax.tick_params(axis="x", rotation=20, labelsize=8)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _save(fig, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def plot_figures(summary: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Fig. 1 local-CTR histogram; with a Cloud or Local method also Fig. 2
    (gain per user group) and Fig. 3 (users whose AUC rose / stayed / fell)."""
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    paths = [_save(figure_local_ctr(summary), out_dir / FIGURES[0])]
    if summary["comparisons"]:
        paths.append(_save(figure_gain_by_group(summary), out_dir / FIGURES[1]))
        paths.append(_save(figure_user_changes(summary), out_dir / FIGURES[2]))
        paths.append(_save(figure_gain_by_group(summary, "groups_by_local_samples", 4), out_dir / FIGURES[3]))
    return paths
