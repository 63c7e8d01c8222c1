"""The text of report.md: tables and prose around the numbers of a
:func:`~lcft_tf.evaluation.summary.summarize` dict (docs/evaluation.md).

Tables are GitHub markdown strings without a trailing newline; numbers the
summary has as None (no used users) are shown as "–". Every function raises
``KeyError`` on a dict not shaped like ``summarize``'s output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from lcft_tf import methods as registry
from lcft_tf.evaluation.summary import gain_entry


def _num(value, fmt: str = "+.4f") -> str:
    """``value`` formatted with ``fmt``, or "–" for None."""
    return "–" if value is None else format(value, fmt)


def _gain_cell(entry: Mapping[str, Any] | None) -> str:
    """``+0.0123 [+0.0050, +0.0190] ✓`` (✓: the interval excludes 0), or "–"."""
    if not entry or entry["estimate"] is None:
        return "–"
    lo, hi = entry["ci"]
    mark = " ✓" if entry["excludes_zero"] else ""
    return f"{_num(entry['estimate'])} [{_num(lo)}, {_num(hi)}]{mark}"


def auc_table(summary: Mapping[str, Any], dataset: str = "") -> str:
    """Paper Table 2: rows model, columns methods (registry labels), the
    user-weighted AUC (eq. 12) as mean ± sample std over seeds, 4 decimals,
    the best mean of each row in bold; the std of a model with one seed is
    "n/a" (one seed has no spread). ``dataset`` fills the first column."""
    methods = summary["methods"]
    lines = ["| dataset | model | " + " | ".join(registry.label(m) for m in methods) + " |",
             "|" + "---|" * (len(methods) + 2)]
    for model, entry in summary["models"].items():
        means = [entry["methods"][m]["mean"] for m in methods]
        best = max((v for v in means if v is not None), default=None)
        cells = []
        for m, mean in zip(methods, means):
            text = f"{_num(mean, '.4f')} ± {_std(entry, m)}"
            cells.append(f"**{text}**" if mean is not None and mean == best else text)
        lines.append(f"| {dataset} | {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _std(entry: Mapping[str, Any], method: str) -> str:
    """The std cell of ``method`` in a model's row: "n/a" for one seed, else 4 decimals (or "–" for None)."""
    if len(entry["seeds"]) < 2:
        return "n/a"
    return _num(entry["methods"][method]["std"], ".4f")


def gain_table(summary: Mapping[str, Any]) -> str:
    """Gain in AUC over each baseline (columns) of each compared method (rows
    per model): estimate [interval at the summary's confidence], ✓ when the
    interval excludes 0 (docs/evaluation.md "Gains")."""
    baselines = list(summary["comparisons"])
    lines = ["| model | method | " + " | ".join(f"vs {registry.label(b)}" for b in baselines) + " |",
             "|" + "---|" * (len(baselines) + 2)]
    compared = [m for m in summary["methods"] if any(m in others for others in summary["comparisons"].values())]
    for model, entry in summary["models"].items():
        for m in compared:
            cells = [_gain_cell(gain_entry(entry["gains"], b, m)) for b in baselines]
            lines.append(f"| {model} | {registry.label(m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_table(summary: Mapping[str, Any], base: str, key: str = "groups") -> str:
    """Gain over ``base`` per user group: drift bucket or negative ratio
    (``key="groups"``), or local sample count (``"groups_by_local_samples"``);
    one row per model and group with its numbers of users evaluated (in the
    AUC and gains) and left out (test samples of one class), one column per
    method compared with ``base`` (docs/evaluation.md "User groups", "Which
    users are counted"). ``base`` must be a baseline of the summary (else
    ``KeyError``)."""
    columns = [(base, m) for m in summary["comparisons"][base]]
    what = _group_axis(summary, key)
    lines = ["| model | " + what + " | users evaluated | left out (one-class test) | "
             + " | ".join(f"{registry.label(m)} vs {registry.label(b)}" for b, m in columns) + " |",
             "|" + "---|" * (len(columns) + 4)]
    for model, entry in summary["models"].items():
        for g in entry[key]:
            cells = [_gain_cell(gain_entry(g["gains"], b, m)) for b, m in columns]
            lines.append(f"| {model} | {g['label']} | {g['users_used']} | {g['users_left_out']} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def _group_axis(summary: Mapping[str, Any], key: str) -> str:
    """Header of the group column of :func:`group_table`."""
    if key == "groups_by_local_samples":
        return "local samples"
    return "drift abs(w_i − w_g)" if summary["grouping"]["kind"] == "drift" else "negative ratio r"


def change_table(summary: Mapping[str, Any]) -> str:
    """Share of users (percent, 1 decimal) whose AUC rose / stayed / fell
    against each baseline, mean over seeds (paper Fig. 3; docs/evaluation.md
    "Rose / stayed / fell")."""
    lines = ["| model | method | vs | rose | stayed | fell | users changed |", "|---|---|---|---|---|---|---|"]
    for model, entry in summary["models"].items():
        for key, per_method in entry["user_changes"].items():
            base = key.removeprefix("vs_")
            for m, s in per_method.items():
                lines.append(f"| {model} | {registry.label(m)} | {registry.label(base)} | "
                             f"{s['rose']:.1%} | {s['stayed']:.1%} | {s['fell']:.1%} | "
                             f"{_count(s['users_changed'])} of {s['users_used']} |")
    return "\n".join(lines)


def _count(value: float) -> str:
    """A user count that may be a mean over seeds: ``12`` or ``12.5``."""
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def changed_lines(summary: Mapping[str, Any]) -> list[str]:
    """One sentence per model, method and baseline: how many of the evaluated
    users the method changed (|ΔAUC| > the stayed tolerance) and how many it
    left unchanged, means over seeds (docs/evaluation.md "Users a fine-tune
    changed")."""
    tol = summary["stayed_tolerance"]
    lines = []
    for model, entry in summary["models"].items():
        for key, per_method in entry["user_changes"].items():
            base = registry.label(key.removeprefix("vs_"))
            for m, s in per_method.items():
                lines.append(
                    f"- {model}: {registry.label(m)} changed the test AUC of {_count(s['users_changed'])} of "
                    f"{s['users_used']} evaluated users ({s['changed']:.1%}) against {base}; "
                    f"{1 - s['changed']:.1%} are unchanged (|ΔAUC| ≤ {tol:g})."
                )
    return lines


def render_markdown(title_info: Mapping[str, Any], summary: Mapping[str, Any], figures: Sequence[str] = ()) -> str:
    """The text of report.md (see :func:`lcft_tf.evaluation.report.write_report`).

    Sections: heading and notes, the AUC table (Table 2); when the summary has
    comparisons, the gains, the gains per user group and per local sample
    count, and the rose / stayed / fell shares; then ``figures`` (file names
    relative to report.md) if any. Ends with a newline.
    """
    lines = _heading(title_info, summary)
    if summary["comparisons"]:
        level = _level(summary)
        lines += _gains_section(summary, level)
        lines += _user_group_section(summary, level)
        lines += _local_samples_section(summary, level)
        lines += _changes_section(summary)
    if figures:
        lines += _figures_section(figures)
    return "\n".join(lines) + "\n"


def _level(summary: Mapping[str, Any]) -> str:
    """The bootstrap confidence as a percentage, e.g. ``95%``."""
    return f"{summary['bootstrap']['confidence']:.0%}"


def _heading(title_info: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    """Title, notes, w_g and seeds, the AUC table and each model's users."""
    models = summary["models"]
    seeds = sorted({s for e in models.values() for s in e["seeds"]})
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
        untested = entry["users_without_test_samples"]
        lines.append(
            f"- {model}: {entry['users_used']} of {entry['users']} users in the AUC; {entry['users_left_out']} left out "
            f"(test set of one class)" + (f"; {untested} without test samples (not evaluated)." if untested else ".")
        )
    lines.append("")
    return lines


def _gains_section(summary: Mapping[str, Any], level: str) -> list[str]:
    """The gain table and how its intervals were made."""
    boot = summary["bootstrap"]
    return [
        f"## Gains with {level} paired bootstrap intervals",
        "",
        f"Estimate = user-weighted mean AUC gain averaged over seeds (equals the difference of the table's means); "
        f"[{level} interval] from {boot['resamples']} resamples of users (seed {boot['seed']}), each user's "
        f"methods and seeds kept together; ✓ = the interval excludes 0.",
        "",
        gain_table(summary),
        "",
    ]


def _user_group_section(summary: Mapping[str, Any], level: str) -> list[str]:
    """Gains per drift bucket or negative ratio, one table per baseline."""
    what = ("local-CTR drift abs(w_i − w_g) buckets" if summary["grouping"]["kind"] == "drift"
            else "negative-sampling ratio r (train local CTR w_i = 1/(1+r))")
    without = {m: e["users_without_local_ctr"] for m, e in summary["models"].items()}
    not_shown = "; ".join(f"{m}: {e['users_without_local_ctr_used']} evaluated, "
                          f"{e['users_without_local_ctr_left_out']} left out" for m, e in summary["models"].items())
    lines = [
        f"## Gain by {what}",
        "",
        f"Mean over seeds, with {level} paired bootstrap intervals within each group. Users with no train samples "
        f"have no local CTR and are in no group: {', '.join(f'{m}: {n}' for m, n in without.items())}. "
        f"They count in the overall AUC but in none of these rows ({not_shown}). \"Users evaluated\" are the "
        f"users in each row's gains; \"left out\" users have test samples of one class only.",
        "",
    ]
    return lines + _group_tables(summary, "groups")


def _local_samples_section(summary: Mapping[str, Any], level: str) -> list[str]:
    """Gains per local sample count group, one table per baseline."""
    lines = [
        "## Gain by number of local samples",
        "",
        "Users grouped by their number of local (train) samples, where augmentation (CoDA) should matter most; "
        f"mean over seeds, {level} paired bootstrap intervals within each group.",
        "",
    ]
    return lines + _group_tables(summary, "groups_by_local_samples")


def _group_tables(summary: Mapping[str, Any], key: str) -> list[str]:
    """One :func:`group_table` per baseline, each under its own caption."""
    lines = []
    for base in summary["comparisons"]:
        lines += [f"Gain over {registry.label(base)}:", "", group_table(summary, base, key), ""]
    return lines


def _changes_section(summary: Mapping[str, Any]) -> list[str]:
    """The rose / stayed / fell table and the tolerance it used."""
    return [
        "## Users whose AUC rose, stayed or fell",
        "",
        f"Per user, AUC of the method minus AUC of the baseline on the same seed; \"stayed\" = the change is at most "
        f"{summary['stayed_tolerance']:g} in absolute value. Shares are means over seeds; users left out of the AUC "
        f"are not counted.",
        "",
        change_table(summary),
        "",
        "How many evaluated users each method changed at all (|ΔAUC| above the tolerance), mean over seeds:",
        "",
        *changed_lines(summary),
        "",
    ]


def _figures_section(figures: Sequence[str]) -> list[str]:
    """Links to the figure files and how to read Figs. 2-4."""
    lines = ["## Figures", ""]
    lines += [f"![{Path(name).stem}]({name})" for name in figures]
    lines += [
        "",
        "Figs. 2–4 show the same numbers as the tables (means over seeds). In Figs. 2 and 4 each method is "
        "drawn slightly shifted sideways with its own marker and line style, so methods with equal values stay "
        "visible.",
    ]
    return lines
