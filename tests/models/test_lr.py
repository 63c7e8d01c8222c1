"""LR's first-order terms (lcft_tf.models.lr, docs/cloud_base.md): untied
history weights, against a numpy reference."""

from __future__ import annotations

import numpy as np

from lcft_tf import models


def _table(model, name: str) -> np.ndarray:
    [weights] = [w for w in model.weights if name in w.path.split("/")]
    return np.asarray(weights.numpy())


def test_untied_lr_logit_equals_a_numpy_sum_of_its_own_tables(tiny_dataset):
    data = tiny_dataset().data
    model = models.build("lr", data.spec, seed=3).build_from_spec()
    rng = np.random.default_rng(0)
    for w in model.weights:  # random values, so that a wrong table would show
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    rows = data.take(slice(0, 50))
    logits = np.asarray(model.logits(rows))
    expected = np.zeros(50, np.float64)
    for f in data.spec.sparse:
        expected += _table(model, f"lin_{f.table}")[rows[f.name], 0]
    for f in data.spec.sequences:
        ids = rows[f.name]
        own = _table(model, f"lin_{f.name}")[ids, 0]  # the feature's own table, not the candidate's column
        real = ids != f.padding_id
        expected += np.where(real, own, 0).sum(1) / np.maximum(real.sum(1), 1)
    for f in data.spec.dense:
        kernel = [w for w in model.weights if f"lin_{f.name}" in w.path and "kernel" in w.path][0].numpy()
        bias = [w for w in model.weights if f"lin_{f.name}" in w.path and "bias" in w.path]
        expected += rows[f.name] @ kernel[:, 0] + (bias[0].numpy()[0] if bias else 0.0)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert data.spec.sequences, "the fixture must have history features for this test to mean anything"


def test_tied_lr_reads_history_weights_from_the_candidates_table(tiny_dataset):
    data = tiny_dataset().data
    tied = models.build("lr", data.spec, seed=3, tie_history=True).build_from_spec()
    untied = models.build("lr", data.spec, seed=3).build_from_spec()
    names = lambda m: {w.path.split("/")[-2] for w in m.weights}
    seq = {f"lin_{f.name}" for f in data.spec.sequences}
    assert not (seq & names(tied)) and seq <= names(untied)
    assert tied.get_config()["tie_history"] is True
