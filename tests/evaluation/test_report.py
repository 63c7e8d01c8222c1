"""Report numbers against independent references (sklearn AUC, plain loops),
the paired bootstrap's coverage, user groups, and what the figures draw."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lcft_tf.artifacts.fleet_chunks import FleetResults
from lcft_tf.evaluation.metrics import change_shares, paired_bootstrap
from lcft_tf.evaluation.report import (
    Grouping,
    figure_gain_by_group,
    figure_user_changes,
    method_label,
    summarize,
    write_report,
)

U = 120


def _data(seed: int = 0, users: int = U):
    """Users, their test counts and labels, and a NaN local CTR for a few."""
    rng = np.random.default_rng(seed)
    num_test = rng.integers(2, 25, users)
    num_train = rng.integers(1, 30, users)
    num_train[:5] = 0
    local = np.where(num_train > 0, rng.uniform(0.0, 0.6, users), np.nan)
    labels = (rng.random(num_test.sum()) < 0.35).astype(np.int8)
    return num_test, num_train, local, labels


def _run(predictions: dict, data) -> FleetResults:
    num_test, num_train, local, labels = data
    return FleetResults(np.arange(len(num_test)), local, num_train, num_test, labels, predictions)


def _noisy_runs(data, seeds=(0, 1, 2), methods=("cloud", "local", "soft1")):
    labels = data[3]
    out = {}
    for s in seeds:
        rng = np.random.default_rng(100 + s)
        base = 0.4 * labels + rng.normal(0, 1, len(labels))
        preds = {m: base + (0.2 * i) * labels + rng.normal(0, 0.3, len(labels)) for i, m in enumerate(methods)}
        preds["cloud"] = base
        out[s] = _run(preds, data)
    return out


def _reference_auc(run: FleetResults, method: str, mask=None) -> float:
    """Eq. 12 by hand with sklearn: per-user AUC weighted by test samples."""
    users = np.repeat(np.arange(len(run.users)), run.num_test)
    total = weight = 0.0
    for u in range(len(run.users)):
        if mask is not None and not mask[u]:
            continue
        m = users == u
        if len(np.unique(run.labels[m])) < 2:
            continue
        total += m.sum() * roc_auc_score(run.labels[m], run.predictions[method][m])
        weight += m.sum()
    return total / weight if weight else float("nan")


# -- paired bootstrap ----------------------------------------------------------
def test_bootstrap_known_shift_excludes_zero_and_contains_truth():
    rng = np.random.default_rng(0)
    values = 0.05 + rng.normal(0, 0.1, (400, 1))
    weights = rng.integers(1, 20, 400).astype(float)
    estimate, low, high = paired_bootstrap(values, weights, resamples=2000, seed=1)
    assert estimate[0] == pytest.approx(np.average(values[:, 0], weights=weights), abs=1e-12)
    assert low[0] > 0
    assert low[0] < 0.05 < high[0]


def test_bootstrap_pure_noise_covers_zero():
    rng = np.random.default_rng(1)
    covered = 0
    for rep in range(50):
        values = rng.normal(0, 0.1, (200, 1))
        weights = rng.integers(1, 20, 200).astype(float)
        _, low, high = paired_bootstrap(values, weights, resamples=1000, seed=rep)
        covered += bool(low[0] <= 0 <= high[0])
    assert covered >= 45


def test_bootstrap_equals_a_plain_loop_whatever_the_block_size():
    rng = np.random.default_rng(2)
    values = rng.normal(0, 1, (37, 3))
    weights = rng.integers(1, 9, 37).astype(float)
    # the same draws, one resample at a time
    draws = np.random.default_rng(7)
    stats = []
    for _ in range(300):
        idx = draws.integers(0, 37, 37)
        stats.append([np.average(values[idx, k], weights=weights[idx]) for k in range(3)])
    expected = np.quantile(np.array(stats), [0.025, 0.975], axis=0)
    for block in (37, 37 * 7, 10**7):
        _, low, high = paired_bootstrap(values, weights, resamples=300, seed=7, max_block_elements=block)
        np.testing.assert_allclose(low, expected[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(high, expected[1], rtol=0, atol=1e-12)


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap(np.array([[np.nan]]), np.array([1.0]))
    with pytest.raises(ValueError, match="weights"):
        paired_bootstrap(np.zeros((3, 1)), np.ones(2))


# -- summarize -----------------------------------------------------------------
@pytest.mark.slow
def test_summary_matches_sklearn_reference_and_seed_mean():
    data = _data()
    runs = _noisy_runs(data)
    summary = summarize({"din": runs}, 0.35, ["cloud", "local", "soft1"], resamples=200)
    json.dumps(summary, allow_nan=False)  # strict JSON
    entry = summary["models"]["din"]
    for m in ("cloud", "local", "soft1"):
        per_seed = [_reference_auc(runs[s], m) for s in (0, 1, 2)]
        np.testing.assert_allclose(entry["methods"][m]["per_seed"], per_seed, rtol=0, atol=1e-12)
        assert entry["methods"][m]["mean"] == pytest.approx(np.mean(per_seed), abs=1e-12)
        assert entry["methods"][m]["std"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)
    # the bootstrap's point estimate is the table's gain: mean over seeds of AUC differences
    for base, method in (("cloud", "local"), ("cloud", "soft1"), ("local", "soft1")):
        gain = entry["gains"][f"vs_{base}"][method]
        expected = np.mean([_reference_auc(runs[s], method) - _reference_auc(runs[s], base) for s in (0, 1, 2)])
        assert gain["estimate"] == pytest.approx(expected, abs=1e-12)
        assert gain["ci"][0] <= gain["estimate"] <= gain["ci"][1]
    assert "cloud" not in entry["gains"]["vs_local"]  # Local's gain over Cloud is listed once
    left_out = sum(len(np.unique(data[3][np.repeat(np.arange(U), data[0]) == u])) < 2 for u in range(U))
    assert (entry["users_used"], entry["users_left_out"]) == (U - left_out, left_out)


def test_identical_methods_give_exactly_zero_interval():
    data = _data()
    runs = _noisy_runs(data)
    for r in runs.values():
        r.predictions["soft2"] = r.predictions["soft1"].copy()
    summary = summarize({"m": runs}, 0.35, ["cloud", "soft1", "soft2"], resamples=300)
    # soft1 vs soft2 is not a listed comparison; compare both with Cloud: identical numbers
    gains = summary["models"]["m"]["gains"]["vs_cloud"]
    assert gains["soft1"] == gains["soft2"]
    same = {s: _run({"cloud": r.predictions["soft1"], "local": r.predictions["soft1"]}, data) for s, r in runs.items()}
    zero = summarize({"m": same}, 0.35, ["cloud", "local"], resamples=300)["models"]["m"]
    assert zero["gains"]["vs_cloud"]["local"]["estimate"] == 0.0
    assert zero["gains"]["vs_cloud"]["local"]["ci"] == [0.0, 0.0]
    assert zero["gains"]["vs_cloud"]["local"]["excludes_zero"] is False
    assert zero["user_changes"]["vs_cloud"]["local"]["stayed"] == 1.0


def test_group_numbers_and_figures_agree_with_the_seed_mean():
    data = _data()
    runs = _noisy_runs(data)
    global_ctr = 0.35
    summary = summarize({"din": runs}, global_ctr, ["cloud", "local", "soft1"], resamples=200)
    entry = summary["models"]["din"]
    drift = np.abs(data[2] - global_ctr)
    fig = figure_gain_by_group(summary)
    ax_cloud = fig.axes[0]
    lines = {c.get_label(): c.lines[0] for c in ax_cloud.containers}  # errorbar: (data line, caps, bars)
    for g, (lo, hi) in enumerate(zip(Grouping().drift_edges[:-1], Grouping().drift_edges[1:])):
        mask = (drift >= lo) & ((drift < hi) | (hi == 1.0))
        assert entry["groups"][g]["users"] == mask.sum()
        expected = np.mean([_reference_auc(runs[s], "soft1", mask) - _reference_auc(runs[s], "cloud", mask)
                            for s in (0, 1, 2)])
        assert entry["groups"][g]["gains"]["vs_cloud"]["soft1"]["estimate"] == pytest.approx(expected, abs=1e-12)
        assert lines["LCFT Soft1"].get_ydata()[g] == pytest.approx(expected, abs=1e-12)  # Fig. 2 = table
    plt.close(fig)
    # Fig. 3 bars are the seed means of the per-seed shares
    fig = figure_user_changes(summary)
    users = np.repeat(np.arange(U), data[0])

    def per_user(run, m):
        out = np.full(U, np.nan)
        for u in range(U):
            k = users == u
            if len(np.unique(run.labels[k])) == 2:
                out[u] = roc_auc_score(run.labels[k], run.predictions[m][k])
        return out

    rose = np.mean([change_shares(per_user(r, "cloud"), per_user(r, "local"), 1e-6)["rose"] for r in runs.values()])
    green = [p for p in fig.axes[0].patches if p.get_facecolor()[:3] == matplotlib.colors.to_rgb("#5cb85c")]
    assert green[0].get_height() == pytest.approx(rose, abs=1e-12)
    plt.close(fig)


def test_users_without_local_ctr_are_in_no_drift_bucket():
    data = _data()
    summary = summarize({"m": _noisy_runs(data, seeds=(0,))}, 0.35, ["cloud", "local"], resamples=50)
    entry = summary["models"]["m"]
    assert entry["users_without_local_ctr"] == 5
    assert sum(g["users"] for g in entry["groups"]) == U - 5
    # a drift of exactly the top edge is in the last bucket, not lost
    group, _ = Grouping(drift_edges=(0.0, 0.5, 1.0)).assign(np.array([1.0, 0.0, np.nan, 0.5]), 0.0)
    assert group.tolist() == [1, 0, -1, 1]
    with pytest.raises(ValueError, match="drift edges"):
        Grouping(drift_edges=(0.0, 0.3)).assign(np.array([0.9]), 0.1)


def test_negative_ratio_grouping(tmp_path):
    ratios = (1, 2, 4, 9)
    rng = np.random.default_rng(3)
    r = rng.choice(ratios, U)
    num_test, num_train, _, labels = _data()
    local = np.where(num_train > 0, 1.0 / (1.0 + r), np.nan)
    data = (num_test, num_train, local, labels)
    grouping = Grouping.from_info({"local_ctr_groups": "negative_ratio", "negative_ratios": list(ratios)})
    assert grouping.kind == "negative_ratio" and grouping.ratios == ratios
    summary = summarize({"m": _noisy_runs(data, seeds=(0, 1))}, 1 / 6, ["cloud", "local"], grouping, resamples=50)
    groups = summary["models"]["m"]["groups"]
    assert [g["negative_ratio"] for g in groups] == [1.0, 2.0, 4.0, 9.0]
    assert [g["users"] for g in groups] == [int(((r == k) & (num_train > 0)).sum()) for k in ratios]
    # without the ratio list: the distinct local CTR values, same groups
    values = Grouping("negative_ratio").assign(local, 1 / 6)[0]
    np.testing.assert_array_equal(values, Grouping("negative_ratio", ratios=ratios).assign(local, 1 / 6)[0])
    with pytest.raises(ValueError, match="no negative ratio"):
        Grouping("negative_ratio", ratios=ratios).assign(np.array([0.5, 0.3]), 1 / 6)
    assert Grouping.from_info({}).kind == "drift"
    # a ratio nobody has: an empty group, reported as such (None), strict JSON, figures still drawn
    empty = summarize({"m": _noisy_runs(data, seeds=(0,))}, 1 / 6, ["cloud", "local"],
                      Grouping("negative_ratio", ratios=(*ratios, 20)), resamples=20)
    last = empty["models"]["m"]["groups"][-1]
    assert (last["users"], last["gains"]["vs_cloud"]["local"]["estimate"]) == (0, None)
    json.dumps(empty, allow_nan=False)
    write_report(tmp_path, {"title": "T"}, empty)
    assert "| m | r=20 (w_i=0.048) | 0 | 0 | – |" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="grouping kind"):
        Grouping.from_info({"local_ctr_groups": "by_age"})


def test_seeds_must_share_users_and_labels():
    data = _data()
    runs = _noisy_runs(data, seeds=(0, 1))
    runs[1].labels = 1 - runs[1].labels
    with pytest.raises(ValueError, match="seed 1"):
        summarize({"m": runs}, 0.35, ["cloud", "local"])
    with pytest.raises(ValueError, match="no predictions"):
        summarize({"m": _noisy_runs(data, seeds=(0,))}, 0.35, ["cloud", "coda"])


def test_stayed_tolerance_is_a_parameter():
    data = _data()
    runs = _noisy_runs(data, seeds=(0,))
    tight = summarize({"m": runs}, 0.35, ["cloud", "local"], stayed_tolerance=0.0, resamples=20)
    loose = summarize({"m": runs}, 0.35, ["cloud", "local"], stayed_tolerance=1.0, resamples=20)
    assert loose["models"]["m"]["user_changes"]["vs_cloud"]["local"]["stayed"] == 1.0
    assert tight["models"]["m"]["user_changes"]["vs_cloud"]["local"]["stayed"] < 0.5
    assert loose["stayed_tolerance"] == 1.0


# -- figures and report.md -----------------------------------------------------
def test_identical_methods_stay_visible_in_fig2():
    data = _data()
    runs = _noisy_runs(data, seeds=(0,))
    for r in runs.values():
        r.predictions["soft2"] = r.predictions["soft1"].copy()
        r.predictions["hard"] = r.predictions["soft1"].copy()
    summary = summarize({"m": runs}, 0.35, ["cloud", "local", "soft1", "soft2", "hard"], resamples=50)
    fig = figure_gain_by_group(summary)
    for ax in fig.axes:
        drawn = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar: (data line, caps, bars)
        assert sorted(drawn) == sorted(t.get_text() for t in ax.get_legend().get_texts())
        by_label = drawn
        same = [by_label[method_label(m)] for m in ("soft1", "soft2", "hard")]
        np.testing.assert_array_equal(same[0].get_ydata(), same[1].get_ydata())  # equal values...
        xs = [tuple(line.get_xdata()) for line in same]
        assert len(set(xs)) == 3  # ...drawn at distinct x offsets
        assert len({line.get_marker() for line in same}) == 3
        assert len({line.get_linestyle() for line in same}) == 3
    plt.close(fig)


def test_write_report_with_unknown_methods(tmp_path):
    data = _data()
    methods = ["cloud", "local", "coda", "coda_lcft", "retrieval_only", "mystery_method"]
    runs = _noisy_runs(data, seeds=(0, 1), methods=methods)
    summary = summarize({"lr": runs}, 0.35, methods, stayed_tolerance=1e-4, resamples=100)
    paths = write_report(tmp_path, {"title": "T", "dataset": "synthetic", "notes": ["a note"]}, summary)
    assert [p.name for p in paths] == ["report.md", "fig1_local_ctr.png", "fig2_auc_by_drift.png",
                                       "fig3_user_changes.png", "fig4_gain_by_local_samples.png"]
    text = (tmp_path / "report.md").read_text()
    for label in ("CoDA", "CoDA + LCFT", "Retrieval only", "mystery_method"):
        assert f"| {label} |" in text
    assert "at most 0.0001 in absolute value" in text
    gain = summary["models"]["lr"]["gains"]["vs_cloud"]["mystery_method"]
    assert f"{gain['estimate']:+.4f} [{gain['ci'][0]:+.4f}, {gain['ci'][1]:+.4f}]" in text
    assert "are in no group: lr: 5." in text
    for p in paths[1:]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_users_are_grouped_by_local_sample_count():
    from lcft_tf.evaluation.report import local_sample_groups

    group, groups = local_sample_groups(np.array([0, 3, 5, 9, 10, 25, 250, 199]))
    assert group.tolist() == [0, 0, 1, 1, 2, 3, 6, 5]
    assert [g["label"] for g in groups] == ["0–4", "5–9", "10–19", "20–49", "50–99", "100–199", "≥ 200"]
    with pytest.raises(ValueError, match="start at 0"):
        local_sample_groups(np.array([1]), (1, 5))
