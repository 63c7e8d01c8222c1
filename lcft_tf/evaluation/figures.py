"""The report's four figures, drawn from a :func:`~lcft_tf.evaluation.summary.summarize`
dict (docs/evaluation.md "Figures").

Fig. 1 local-CTR histogram, Fig. 2 gain per user group (paper Fig. 2),
Fig. 3 users whose AUC rose / stayed / fell (paper Fig. 3), Fig. 4 gain per
local sample count. File names: :data:`FIGURES`. Every figure shows seed
means, as the tables do.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from lcft_tf import methods as registry
from lcft_tf._io import atomic_write
from lcft_tf.evaluation.summary import gain_entry, gain_key

# File names of Figs. 1-4, in order (written under the report folder).
FIGURES = ("fig1_local_ctr.png", "fig2_auc_by_drift.png", "fig3_user_changes.png", "fig4_gain_by_local_samples.png")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", "-.", ":")
# Methods the registry does not know: colours and markers no registry method uses.
_EXTRA_COLORS = ("C8", "C9", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "black")
_EXTRA_MARKERS = ("p", "h", "<", ">", "d", "H", "8")
_OFFSET = 0.07  # x shift between methods, in group widths


def method_style(method: str) -> dict[str, str]:
    """The fixed colour, marker and line style of ``method`` in every figure
    and every run: from its position in the method registry
    (:data:`lcft_tf.methods.METHODS`), not in a run's method list. A name
    the registry does not know gets a style picked from its name's SHA-256
    (the same in every run and process), from colours and markers that no
    registry method uses. Returns ``{"color", "marker", "linestyle"}``."""
    if method in registry.METHODS:
        i = registry.METHODS.index(method)
        return {"color": f"C{i % 10}", "marker": _MARKERS[i % len(_MARKERS)],
                "linestyle": _LINESTYLES[i % len(_LINESTYLES)]}
    h = int(hashlib.sha256(method.encode()).hexdigest(), 16)
    return {"color": _EXTRA_COLORS[h % len(_EXTRA_COLORS)],
            "marker": _EXTRA_MARKERS[(h // len(_EXTRA_COLORS)) % len(_EXTRA_MARKERS)],
            "linestyle": _LINESTYLES[(h // 1000) % len(_LINESTYLES)]}


def method_styles(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Colour, marker, line style and x offset of each method in Figs. 2 and 4.

    Returns method -> ``{"color", "marker", "linestyle", "offset"}``: the
    first three are :func:`method_style` (fixed per method across runs and
    figures); ``offset`` is an x shift in group widths (0.07 apart, centred
    on 0, by position in ``methods``), all distinct, so methods with equal
    values stay visible (docs/evaluation.md "Figures").
    """
    k = len(methods)
    return {m: {**method_style(m), "offset": (i - (k - 1) / 2) * _OFFSET} for i, m in enumerate(methods)}


def figure_local_ctr(summary: Mapping[str, Any]):
    """Fig. 1: histogram of the users' train local CTR w_i (20 bins over
    [0, 1]) with the global CTR w_g marked, for the **first** model of the
    summary (every model of a run shares the users). Users without train
    samples are not drawn; their number is in the title.

    Returns a matplotlib ``Figure`` (the caller closes it). Raises
    ``StopIteration`` if the summary has no model.
    """
    import matplotlib.pyplot as plt

    model, entry = next(iter(summary["models"].items()))
    hist = entry["local_ctr_histogram"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(hist["bins"][:-1], hist["counts"], width=np.diff(hist["bins"]), align="edge", edgecolor="white")
    ax.axvline(summary["global_ctr"], color="crimson", ls="--", label=f"global CTR w_g = {summary['global_ctr']:.3f}")
    ax.set_xlabel("local CTR w_i (train samples)")
    ax.set_ylabel("users")
    drawn_used = entry["users_used"] - entry["users_without_local_ctr_used"]
    drawn_left = entry["users_left_out"] - entry["users_without_local_ctr_left_out"]
    ax.set_title(f"Fig. 1: users' local CTR ({entry['users_without_local_ctr']} users without train samples not shown)\n"
                 f"of the users drawn, {drawn_used} evaluated, {drawn_left} left out (one-class test set)", fontsize=9)
    ax.legend()
    return fig


def figure_gain_by_group(summary: Mapping[str, Any], key: str = "groups", number: int = 2):
    """Fig. 2 (or Fig. ``number`` = 4 for ``key="groups_by_local_samples"``).

    One panel per model (rows) and baseline (columns): each compared
    method's gain in user-weighted AUC (eq. 12, AUC units) per user group,
    mean over seeds, with the paired bootstrap interval as error bars
    (docs/evaluation.md "Gains", "User groups"). Groups whose estimate is
    None (no used users) are drawn as gaps. ``key``: ``"groups"`` (drift
    bucket or negative ratio) or ``"groups_by_local_samples"``. Each group's
    tick label gives its users evaluated and left out (one-class test set);
    for the local-CTR groups the x label gives the users in no group (no
    local CTR). Labels never overlap, whatever the number of groups: they
    are turned upright when they do not fit side by side, and the figure
    grows wider with the groups (:func:`_fit_group_labels`).

    Returns a matplotlib ``Figure`` (the caller closes it). Raises
    ``ValueError`` if the summary has no comparison (no Cloud or Local).
    """
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
                y, lo, hi = _gain_series(groups, base, m)
                st = styles[m]
                ax.errorbar(x + st["offset"], y, yerr=[y - lo, hi - y], marker=st["marker"], linestyle=st["linestyle"],
                            color=st["color"], capsize=2, markersize=5, label=registry.label(m))
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(x, [_group_tick(g) for g in groups], fontsize=_TICK_FONTSIZE)
            ax.set_xlim(-0.5, len(groups) - 0.5)  # one group width per group: the spacing _fit_group_labels plans
            ax.set_xlabel(what + (_not_in_groups(entry) if key == "groups" else ""))
            ax.set_ylabel(f"user-weighted AUC − {registry.label(base)}")
            ax.set_title(f"Fig. {number}: {model}, gain over {registry.label(base)} by {what}\n"
                         f"mean of {len(entry['seeds'])} seed(s); bars: {level} paired bootstrap CI", fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    _fit_group_labels(fig, [ax for row in axes for ax in row], max(len(e[key]) for e in models.values()))
    return fig


_TICK_FONTSIZE = 7
_PANEL = (6.5, 4.2)  # inches per panel of Figs. 2 and 4 when the labels fit side by side
_AXES_SHARE = 0.68  # the least share of a panel's width its axes get (matplotlib's default margins, <= 2 columns)
_LABEL_GAP = 0.12  # inches kept between neighbouring group labels
_MAX_SIDE_BY_SIDE = 7.0  # inches of axes that labels side by side may ask for; beyond, they are turned upright


def _group_tick(group: Mapping[str, Any]) -> str:
    """Tick label of a group: its label, users evaluated and left out."""
    return f"{group['label']}\n{group['users_used']} evaluated\n{group['users_left_out']} left out"


def _not_in_groups(entry: Mapping[str, Any]) -> str:
    """X-label note on the users of a model that no local-CTR group holds (none: empty)."""
    used, left = entry["users_without_local_ctr_used"], entry["users_without_local_ctr_left_out"]
    return f"\nnot shown (no local CTR): {used} evaluated, {left} left out" if used or left else ""


def _text_size(text: str, fontsize: float) -> tuple[float, float]:
    """Width and height in inches of ``text`` (lines split on newlines) at ``fontsize`` points, in
    matplotlib's default font: the same on every backend."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    prop = FontProperties(size=fontsize)
    lines = text.split("\n")
    width = max(TextToPath().get_text_width_height_descent(line, prop, ismath=False)[0] for line in lines)
    return width / 72.0, len(lines) * fontsize * 1.2 / 72.0


def _fit_group_labels(fig, axes: Sequence[Any], num_groups: int) -> None:
    """Make the group labels of Figs. 2 and 4 readable for any number of groups.

    Labels stay side by side while ``num_groups`` of them (widest label plus
    a gap each) fit in :data:`_MAX_SIDE_BY_SIDE` inches, else they are turned
    upright (then each needs only its height). The panels are widened so
    that every group gets that much room (``ax.set_xlim`` gives each group
    one unit), never below :data:`_PANEL`, and made taller by the upright
    labels' length."""
    sizes = [_text_size(t.get_text(), _TICK_FONTSIZE) for ax in axes for t in ax.get_xticklabels()]
    if not sizes:
        return
    width, height = max(w for w, _ in sizes), max(h for _, h in sizes)
    upright = num_groups * (width + _LABEL_GAP) > _MAX_SIDE_BY_SIDE
    slot = (height if upright else width) + _LABEL_GAP
    rows, cols = axes[0].get_subplotspec().get_gridspec().get_geometry()
    panel_width = max(_PANEL[0], num_groups * slot / _AXES_SHARE)
    panel_height = _PANEL[1] + (max(width - height, 0.0) if upright else 0.0)
    if upright:
        for ax in axes:
            ax.tick_params(axis="x", labelrotation=90)
    fig.set_size_inches(panel_width * cols, panel_height * rows)


def _gain_series(groups: Sequence[Mapping[str, Any]], base: str, method: str):
    """Estimate, interval low and high of ``method`` over ``base`` in every
    group: float64 arrays ``[groups]``, NaN where the summary has None
    (an empty group) or the pair is not compared."""
    cells = [gain_entry(g["gains"], base, method) for g in groups]

    def series(pick) -> np.ndarray:
        return np.array([np.nan if c is None or pick(c) is None else pick(c) for c in cells])

    return series(lambda c: c["estimate"]), series(lambda c: c["ci"][0]), series(lambda c: c["ci"][1])


def figure_user_changes(summary: Mapping[str, Any]):
    """Fig. 3: share of users (0-1) whose AUC rose / stayed / fell against
    the first baseline (Cloud when present, else Local), mean over seeds of
    the per-seed shares; one panel per model (paper Fig. 3;
    docs/evaluation.md "Rose / stayed / fell").

    Returns a matplotlib ``Figure`` (the caller closes it). Raises
    ``StopIteration`` if the summary has no comparison.
    """
    import matplotlib.pyplot as plt

    models = summary["models"]
    base = next(iter(summary["comparisons"]))
    tol = summary["stayed_tolerance"]
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, (model, entry) in zip(axes[0], models.items()):
        per_method = entry["user_changes"][gain_key(base)]
        methods = list(per_method)
        bottom = np.zeros(len(methods))
        for part, color in (("fell", "#d9534f"), ("stayed", "#cccccc"), ("rose", "#5cb85c")):
            values = np.array([per_method[m][part] for m in methods])
            label = f"stayed (|ΔAUC| ≤ {tol:g})" if part == "stayed" else part
            ax.bar([registry.label(m) for m in methods], values, bottom=bottom, color=color, label=label)
            bottom += values
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of users")
        ax.set_title(f"Fig. 3: {model}, per-user AUC vs {registry.label(base)}\n"
                     f"mean of {len(entry['seeds'])} seed(s); stayed: |ΔAUC| ≤ {tol:g}\n"
                     f"shares of {entry['users_used']} evaluated users ({entry['users_left_out']} left out: "
                     f"one-class test set)", fontsize=9)
        ax.tick_params(axis="x", rotation=20, labelsize=8)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def _save(fig, path: Path) -> Path:
    """Write ``fig`` as a 120 dpi PNG to ``path`` atomically, then close it."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, buffer.getvalue())
    return path


def plot_figures(summary: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """Write the figures as PNGs under ``out_dir``; return their paths, in order.

    Fig. 1 (local-CTR histogram) always; with a comparison (a Cloud or Local
    method in the summary) also Fig. 2 (gain per user group), Fig. 3 (users
    whose AUC rose / stayed / fell) and Fig. 4 (gain per local sample
    count). File names: :data:`FIGURES`. Switches matplotlib to the ``Agg``
    backend. Raises ``OSError`` if a file cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    out_dir = Path(out_dir)
    paths = [_save(figure_local_ctr(summary), out_dir / FIGURES[0])]
    if summary["comparisons"]:
        paths.append(_save(figure_gain_by_group(summary), out_dir / FIGURES[1]))
        paths.append(_save(figure_user_changes(summary), out_dir / FIGURES[2]))
        paths.append(_save(figure_gain_by_group(summary, "groups_by_local_samples", 4), out_dir / FIGURES[3]))
    return paths
