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
