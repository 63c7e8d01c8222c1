"""The report tells the truth about which users it counts: counts against an
independent count from per-user labels, how many users a fine-tune changed,
readable group labels, fixed method styles, "n/a" for one seed's std, and
one NaN -> null rule for every JSON (docs/evaluation.md)."""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from lcft_tf import _io
from lcft_tf.artifacts.fleet_chunks import FleetResults
from lcft_tf.evaluation import summary as summary_module
from lcft_tf.evaluation.summary import summarize


# -- one NaN -> null rule -------------------------------------------------------
def test_one_json_rule_for_summary_and_files():
    value = {"a": np.float32("nan"), "b": [np.int64(3), math.inf, -np.inf], "c": np.array([1.5, np.nan]),
             "d": (np.bool_(True), None, "s"), 7: np.float64(0.25)}
    expected = {"a": None, "b": [3, None, None], "c": [1.5, None], "d": [True, None, "s"], "7": 0.25}
    assert _io.json_ready(value) == expected
    assert type(_io.json_ready(np.int64(3))) is int and type(_io.json_ready(np.float32(0.5))) is float
    assert json.loads(_io.to_json(value)) == expected  # the file writer uses the same rule
    assert summary_module.json_ready is _io.json_ready  # ... and so does summarize
    assert not hasattr(summary_module, "_json_ready")


# -- shared synthetic runs -------------------------------------------------------
def _fleet(seed: int = 0, users: int = 90):
    """Users with 1-20 test samples (4 with none, many one class), some without train samples."""
    rng = np.random.default_rng(seed)
    num_test = rng.integers(1, 21, users)
    num_test[:4] = 0
    num_train = rng.integers(1, 40, users)
    num_train[4:10] = 0
    local = np.where(num_train > 0, rng.uniform(0.0, 0.6, users), np.nan)
    labels = (rng.random(num_test.sum()) < 0.3).astype(np.int8)
    return num_test, num_train, local, labels


def _runs(data, seeds=(0, 1), methods=("cloud", "local", "soft1"), unchanged=0.0):
    """Noisy predictions per seed; Local equals Cloud for the users whose index is below ``unchanged`` x users."""
    num_test, num_train, local, labels = data
    user_of = np.repeat(np.arange(len(num_test)), num_test)
    out = {}
    for s in seeds:
        rng = np.random.default_rng(50 + s)
        base = 0.5 * labels + rng.normal(0, 1, len(labels))
        preds = {m: base + 0.3 * i * labels + rng.normal(0, 0.4, len(labels)) for i, m in enumerate(methods)}
        preds["cloud"] = base
        if "local" in preds:
            preds["local"] = np.where(user_of < unchanged * len(num_test), base, preds["local"])
        out[s] = FleetResults(np.arange(len(num_test)), local, num_train, num_test, labels, preds)
    return out


# -- "n/a" for one seed's std ------------------------------------------------------
def test_one_seed_std_is_null_and_printed_n_a(tmp_path):
    from lcft_tf.evaluation.markdown import auc_table, render_markdown

    data = _fleet()
    one = summarize({"m": _runs(data, seeds=(3,))}, 0.3, ["cloud", "local"], resamples=20)
    entry = one["models"]["m"]
    assert entry["methods"]["cloud"]["std"] is None and entry["methods"]["local"]["std"] is None
    assert entry["gains"]["vs_cloud"]["local"]["std_over_seeds"] is None
    assert json.loads(_io.to_json(one))["models"]["m"]["methods"]["local"]["std"] is None
    table = auc_table(one, "d")
    assert table.count("± n/a") == 2 and "± 0.0000" not in table
    assert "± n/a" in render_markdown({"title": "T"}, one)
    # two seeds: the sample std, printed as before
    two = summarize({"m": _runs(data, seeds=(3, 4))}, 0.3, ["cloud", "local"], resamples=20)
    per_seed = two["models"]["m"]["methods"]["local"]["per_seed"]
    assert two["models"]["m"]["methods"]["local"]["std"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-15)
    assert f"{np.mean(per_seed):.4f} ± {np.std(per_seed, ddof=1):.4f}" in auc_table(two, "d")
    assert "n/a" not in auc_table(two, "d")


# -- one style per method ------------------------------------------------------------
def _fig2_styles(summary) -> dict[str, tuple]:
    """Label -> (colour, marker, line style) of the lines drawn in Fig. 2 and Fig. 4."""
    from lcft_tf.evaluation.figures import figure_gain_by_group

    out = {}
    for key, number in (("groups", 2), ("groups_by_local_samples", 4)):
        fig = figure_gain_by_group(summary, key, number)
        for ax in fig.axes:
            for c in ax.containers:
                line = c.lines[0]
                style = (matplotlib.colors.to_hex(line.get_color(), keep_alpha=True), line.get_marker(),
                         line.get_linestyle())
                assert out.setdefault(c.get_label(), style) == style  # same in every panel and figure
        plt.close(fig)
    return out


def test_a_method_keeps_its_colour_and_marker_across_runs():
    from lcft_tf.evaluation.figures import method_style

    data = _fleet()
    one = ["cloud", "local", "soft1", "new_aug"]
    other = ["cloud", "coda", "soft2", "new_aug", "soft1"]
    a = _fig2_styles(summarize({"m": _runs(data, methods=one)}, 0.3, one, resamples=20))
    b = _fig2_styles(summarize({"m": _runs(data, methods=other)}, 0.3, other, resamples=20))
    assert a["LCFT Soft1"] == b["LCFT Soft1"] and a["new_aug"] == b["new_aug"]
    # the registry order decides: soft1 is the registry's third method in both runs
    assert a["LCFT Soft1"][:2] == (matplotlib.colors.to_hex("C2", keep_alpha=True), "^")
    # an unknown name: deterministic, and unlike every registry method's colour and marker
    from lcft_tf.methods import METHODS

    known = {(method_style(m)["color"], method_style(m)["marker"]) for m in METHODS}
    assert (method_style("new_aug")["color"], method_style("new_aug")["marker"]) not in known
    assert method_style("new_aug") == method_style("new_aug")
    assert len({(method_style(m)["color"], method_style(m)["marker"]) for m in METHODS}) == len(METHODS)


# -- counts that match the users actually scored -----------------------------------------
def _scored(data):
    """Independently of the package: evaluated (both classes in the test labels) and left-out users
    (test samples, one class), from the per-user labels."""
    num_test, _, _, labels = data
    user_of = np.repeat(np.arange(len(num_test)), num_test)
    classes = np.array([len(np.unique(labels[user_of == u])) for u in range(len(num_test))])
    return classes == 2, (num_test > 0) & (classes == 1)


def test_group_counts_are_the_users_actually_scored(tmp_path):
    from lcft_tf.evaluation.figures import figure_gain_by_group, figure_local_ctr, figure_user_changes
    from lcft_tf.evaluation.grouping import DRIFT_EDGES, LOCAL_SAMPLE_EDGES
    from lcft_tf.evaluation.report import write_report

    data = _fleet()
    num_test, num_train, local, _ = data
    evaluated, left_out = _scored(data)
    assert left_out.sum() > 5 and (num_test == 0).sum() == 4  # the old "users" count would be wrong
    summary = summarize({"m": _runs(data)}, 0.3, ["cloud", "local", "soft1"], resamples=20)
    entry = summary["models"]["m"]
    assert (entry["users_used"], entry["users_left_out"], entry["users_without_test_samples"]) == (
        evaluated.sum(), left_out.sum(), 4)
    no_ctr = np.isnan(local)
    assert (entry["users_without_local_ctr_used"], entry["users_without_local_ctr_left_out"]) == (
        (no_ctr & evaluated).sum(), (no_ctr & left_out).sum())
    # drift buckets by hand ([lo, hi), the last one closed) and local sample groups by hand
    drift = np.abs(local - 0.3)
    by_drift = [(drift >= lo) & ((drift < hi) | (hi == DRIFT_EDGES[-1]))
                for lo, hi in zip(DRIFT_EDGES[:-1], DRIFT_EDGES[1:])]
    edges = [*LOCAL_SAMPLE_EDGES, np.inf]
    by_samples = [(num_train >= lo) & (num_train < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    write_report(tmp_path, {"title": "T"}, summary)
    text = (tmp_path / "report.md").read_text()
    for key, masks, number in (("groups", by_drift, 2), ("groups_by_local_samples", by_samples, 4)):
        groups = entry[key]
        fig = figure_gain_by_group(summary, key, number)
        for g, mask in zip(groups, masks, strict=True):
            used, left = int((mask & evaluated).sum()), int((mask & left_out).sum())
            assert (g["users_used"], g["users_left_out"]) == (used, left)
            assert text.count(f"| m | {g['label']} | {used} | {left} |") == 2  # the tables vs Cloud and vs Local
            for ax in fig.axes:
                assert f"{g['label']}\n{used} evaluated\n{left} left out" in [t.get_text() for t in ax.get_xticklabels()]
        if key == "groups":
            assert f"not shown (no local CTR): {(no_ctr & evaluated).sum()} evaluated" in fig.axes[0].get_xlabel()
        plt.close(fig)
        # every evaluated user is in one group row, or (local-CTR groups) among the users without local CTR
        ungrouped = entry["users_without_local_ctr_used"] if key == "groups" else 0
        assert sum(g["users_used"] for g in groups) + ungrouped == evaluated.sum()
    assert f"- m: {evaluated.sum()} of 90 users in the AUC; {left_out.sum()} left out (test set of one class); " \
           f"4 without test samples (not evaluated)." in text
    fig = figure_user_changes(summary)
    assert f"shares of {evaluated.sum()} evaluated users ({left_out.sum()} left out" in fig.axes[0].get_title()
    plt.close(fig)
    fig = figure_local_ctr(summary)
    assert f"{(~no_ctr & evaluated).sum()} evaluated, {(~no_ctr & left_out).sum()} left out" in fig.axes[0].get_title()
    plt.close(fig)


# -- how many users a fine-tune changed ----------------------------------------------------
def test_users_changed_by_each_method_against_an_independent_count():
    from sklearn.metrics import roc_auc_score

    from lcft_tf.evaluation.markdown import render_markdown

    data = _fleet(seed=1)
    num_test, _, _, labels = data
    runs = _runs(data, seeds=(0, 1, 2), unchanged=0.6)  # Local = Cloud for 60% of the users
    summary = summarize({"m": runs}, 0.3, ["cloud", "local", "soft1"], resamples=20)
    evaluated, _ = _scored(data)
    user_of = np.repeat(np.arange(len(num_test)), num_test)

    def per_user(run, method):
        return np.array([roc_auc_score(labels[user_of == u], run.predictions[method][user_of == u])
                         if evaluated[u] else np.nan for u in range(len(num_test))])

    text = render_markdown({"title": "T"}, summary)
    for base, method in (("cloud", "local"), ("cloud", "soft1"), ("local", "soft1")):
        counts = [int((np.abs(per_user(r, method) - per_user(r, base))[evaluated] > 1e-6).sum()) for r in runs.values()]
        entry = summary["models"]["m"]["user_changes"][f"vs_{base}"][method]
        assert entry["users_used"] == evaluated.sum()
        assert entry["users_changed"] == pytest.approx(np.mean(counts), abs=1e-12)
        assert entry["changed"] == pytest.approx(np.mean(counts) / evaluated.sum(), abs=1e-12)
        assert [s["users_changed"] for s in entry["per_seed"]] == counts
        assert entry["changed"] == pytest.approx(1 - entry["stayed"], abs=1e-12)
        n = np.mean(counts)
        shown = f"{n:.0f}" if float(n).is_integer() else f"{n:.1f}"
        label = {"local": "Local", "soft1": "LCFT Soft1", "cloud": "Cloud"}
        assert (f"- m: {label[method]} changed the test AUC of {shown} of {evaluated.sum()} evaluated users "
                f"({n / evaluated.sum():.1%}) against {label[base]}; {1 - n / evaluated.sum():.1%} are unchanged") in text
    # Local left 60% of the users exactly as Cloud had them: at most 40% changed
    assert summary["models"]["m"]["user_changes"]["vs_cloud"]["local"]["changed"] <= 0.41


# -- readable group labels ------------------------------------------------------------------
def _overlapping_tick_labels(fig) -> list[tuple[str, str]]:
    """Pairs of x tick labels (any panel) whose drawn boxes overlap."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for ax in fig.axes for t in ax.get_xticklabels()
             if t.get_visible() and t.get_text()]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:] if box_a.overlaps(box_b)]


@pytest.mark.parametrize("num_groups", [5, 9, 20])
def test_group_labels_never_overlap(num_groups):
    from lcft_tf.evaluation.figures import figure_gain_by_group
    from lcft_tf.evaluation.grouping import Grouping

    ratios = tuple(float(r) for r in range(1, num_groups + 1))
    rng = np.random.default_rng(num_groups)
    num_test, num_train, _, labels = _fleet(users=6 * num_groups)
    local = np.where(num_train > 0, 1.0 / (1.0 + rng.choice(ratios, len(num_train))), np.nan)
    data = (num_test, num_train, local, labels)
    summary = summarize({"m": _runs(data, seeds=(0,))}, 0.1, ["cloud", "local", "soft1"],
                        Grouping("negative_ratio", ratios=ratios), resamples=10)
    assert len(summary["models"]["m"]["groups"]) == num_groups
    fig = figure_gain_by_group(summary)
    assert len(fig.axes[0].get_xticklabels()) == num_groups
    assert _overlapping_tick_labels(fig) == []
    fig.tight_layout()  # as the report saves it
    assert _overlapping_tick_labels(fig) == []
    width = fig.get_size_inches()[0]
    plt.close(fig)
    if num_groups == 20:  # the figure grew with the groups
        assert width > 2 * 6.5
