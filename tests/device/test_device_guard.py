"""A finite state that predicts NaN is unreachable through ``train`` (the
in-graph guard also checks the new weights' logits and probabilities on the
step's own batch), refused by ``restore`` and ``save_checkpoint`` (a probe
batch), and never scored silently by ``infer``
(docs/loss_and_correction.md#gradient-clipping-and-rollback)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BATCH, random_features
from safetensors.numpy import save_file

from lcft_tf.artifacts.checkpoint import CHECKPOINT_FORMAT
from lcft_tf.device.model import OnDeviceModel

RUNTIMES = ("interpreter", "compiled")


def _train_feed(spec, seed: int, lr: float) -> tuple[dict, dict]:
    x = random_features(spec, BATCH, seed=seed)
    labels = (np.random.default_rng(seed).random(BATCH) < 0.5).astype(np.float32)
    return x, {**x, "label": labels, "sample_weight": np.ones(BATCH, np.float32), "learning_rate": np.float32(lr)}


def _broken(state: dict) -> dict:
    """Every float tensor times 1e30: finite, but the model overflows (NaN)."""
    return {k: (v * np.float32(1e30) if v.dtype.kind == "f" else v) for k, v in state.items()}


def _assert_state_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# Measured before the fix (tiny test models): each of these applied a step
# whose new weights predict NaN on the very batch it trained on.
@pytest.mark.parametrize("name,lr", [("wide_deep", 1e9), ("din", 1e9), ("din", 1e30), ("lr", 1e30)])
def test_a_step_whose_new_weights_predict_nan_is_rolled_back_bit_exactly(exported, spec, name, lr):
    device = OnDeviceModel(exported[name][1])
    applied = rolled = 0
    for step in range(10):
        x, feed = _train_feed(spec, step, lr)
        before = device.save()
        out = device.run_signature("train", feed)
        after = device.save()
        if int(out["applied"]) == 0:
            rolled += 1
            _assert_state_equal(after, before)
        else:
            applied += 1
        probs = device.run_signature("infer", x)["probability"]  # the bare call: no check of its own
        assert np.all(np.isfinite(probs)), (step, int(out["applied"]), probs)
        assert all(np.all(np.isfinite(v)) for v in after.values())
    assert rolled >= 1  # the guard was exercised


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_infer_raises_instead_of_returning_a_non_finite_score(exported, spec, runtime):
    device = OnDeviceModel(exported["wide_deep"][1], runtime=runtime)
    x = random_features(spec, BATCH + 3, seed=4)
    good = device.infer(x)
    assert np.all(np.isfinite(good))
    device.run_signature("restore", _broken(device.save()))  # bypasses restore's probe on purpose
    with pytest.raises(ValueError, match=rf"^wide_deep: {BATCH + 3} of {BATCH + 3} scores are NaN or inf") as err:
        device.infer(x)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^wide_deep: 1 of 1 scores are NaN or inf"):
        device.infer({k: v[:1] for k, v in x.items()})  # infer_one


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_restore_refuses_a_finite_state_that_predicts_nan(exported, spec, runtime):
    device = OnDeviceModel(exported["din"][1], runtime=runtime)
    x = random_features(spec, BATCH, seed=5)
    before, scores = device.save(), device.infer(x)
    broken = _broken(before)
    assert all(np.all(np.isfinite(v)) for v in broken.values())
    with pytest.raises(ValueError, match=r"^din: not restoring a state that predicts NaN or inf"):
        device.restore(broken)
    _assert_state_equal(device.save(), before)
    np.testing.assert_array_equal(device.infer(x), scores)


def test_no_checkpoint_is_written_or_loaded_from_a_state_that_predicts_nan(exported, spec, tmp_path):
    device = OnDeviceModel(exported["wide_deep"][1])
    path = tmp_path / "user.safetensors"
    device.save_checkpoint(path)
    good_bytes, good_state = path.read_bytes(), device.save()
    device.run_signature("restore", _broken(good_state))
    with pytest.raises(ValueError, match=r"^not saving .*predicts NaN or inf"):
        device.save_checkpoint(path)
    assert path.read_bytes() == good_bytes
    assert not list(tmp_path.glob(".*.tmp"))

    device.restore(good_state)
    bad = tmp_path / "bad.safetensors"  # e.g. written by an older version
    meta = {"format": CHECKPOINT_FORMAT, "model": device.name, "state": device.state_fingerprint}
    save_file(_broken(good_state), bad, metadata=meta)
    with pytest.raises(ValueError, match="predicts NaN or inf"):
        device.load_checkpoint(bad)
    _assert_state_equal(device.save(), good_state)


def test_train_at_a_huge_learning_rate_leaves_a_usable_model(exported, spec, tmp_path):
    """The fleet symptom: lr 1e30 used to leave weights that score NaN at the
    end of the run; now every such step is dropped and the model still
    scores and checkpoints."""
    device = OnDeviceModel(exported["lr"][1])
    x = random_features(spec, 4 * BATCH, seed=6)
    labels = (np.arange(4 * BATCH) % 2).astype(np.float32)
    device.train(x, labels, learning_rate=1e30)
    assert device.rolled_back_steps >= 1
    assert np.all(np.isfinite(device.infer(random_features(spec, 3 * BATCH, seed=7))))
    device.save_checkpoint(tmp_path / "ok.safetensors")
