"""The two LiteRT runtimes of OnDeviceModel (the Interpreter's signature
runners and the CompiledModel API) give the same numbers over train /
infer / save / restore, and batch-1 ``infer_one`` scores a row as ``infer``
does."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BATCH, random_features

from lcft_tf import models
from lcft_tf.device.model import OnDeviceModel

STEPS = 4


@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_compiled_model_equals_the_interpreter_bit_for_bit(exported, spec, name):
    _, path = exported[name]
    interp, compiled = OnDeviceModel(path), OnDeviceModel(path, runtime="compiled")
    rng = np.random.default_rng(0)
    start = {k: v + rng.normal(0, 0.01, v.shape).astype(v.dtype) for k, v in interp.save().items()}
    for device in (interp, compiled):
        device.restore(start)
    for key, value in compiled.save().items():  # restore then save is the identity on both
        np.testing.assert_array_equal(value, start[key], err_msg=key)
    features = random_features(spec, STEPS * BATCH - 2, seed=1)
    labels = (rng.random(STEPS * BATCH - 2) < 0.4).astype(np.float32)
    corrected = compiled.correct(labels, "soft2")
    np.testing.assert_array_equal(corrected, interp.correct(labels, "soft2"))
    np.testing.assert_array_equal(compiled.train(features, corrected, learning_rate=0.3),
                                  interp.train(features, corrected, learning_rate=0.3))
    test = random_features(spec, BATCH + 3, seed=2)
    np.testing.assert_array_equal(compiled.infer(test), interp.infer(test))
    saved_c, saved_i = compiled.save(), interp.save()
    assert max(np.abs(saved_i[k] - start[k]).max() for k in start) > 1e-3  # the steps moved the weights
    for key in saved_i:
        np.testing.assert_array_equal(saved_c[key], saved_i[key], err_msg=key)


@pytest.mark.parametrize("runtime", ["interpreter", "compiled"])
@pytest.mark.parametrize("name", sorted(models.REGISTRY))
def test_infer_one_scores_a_row_as_the_batch_does(exported, spec, name, runtime):
    _, path = exported[name]
    device = OnDeviceModel(path, runtime=runtime)
    assert "infer_one" in device.signatures and device.metadata["signatures"]["infer_one"]["outputs"] == [
        {"name": "probability", "shape": [1], "dtype": "float32"}]
    rows = random_features(spec, BATCH, seed=3)
    batch = device.infer(rows)
    one = np.concatenate([device.infer({k: v[i : i + 1] for k, v in rows.items()}) for i in range(BATCH)])
    np.testing.assert_allclose(one, batch, atol=1e-6, rtol=0)
    direct = device.run_signature("infer_one", {k: v[:1] for k, v in rows.items()})["probability"]
    np.testing.assert_allclose(direct, batch[:1], atol=1e-6, rtol=0)


def test_unknown_runtime_is_refused(exported):
    with pytest.raises(ValueError, match="runtime must be one of"):
        OnDeviceModel(exported["lr"][1], runtime="gpu")
