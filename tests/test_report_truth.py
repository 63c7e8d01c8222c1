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
    """Users with 0-20 test samples (a few none, many one class), some without train samples."""
    rng = np.random.default_rng(seed)
    num_test = rng.integers(0, 21, users)
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
