"""Device-side safety: unknown correction ids, bounded and guarded training
steps, float32 learning rates, stale temp files, metadata checked against the
interpreter, and state names that do not depend on Keras auto-numbering."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import BATCH, HARD_TABLE, REPO, TESTS, build_tiny, random_features

from lcft_tf import checks, models
from lcft_tf.cloud.export import CLIP_NORM, ExportConfig, export_tflite
from lcft_tf.cloud.train import CloudConfig
from lcft_tf.correction import CORRECTIONS, correction_pair
from lcft_tf.device.model import OnDeviceModel

NAMES = sorted(models.REGISTRY)


# -- 1. the correct signature never picks a correction for an unknown id ------
def test_unknown_method_ids_return_raw_labels_and_valid_zero(exported):
    device = OnDeviceModel(exported["lr"][1])
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 1], np.float32)
    run = lambda method, ctr=0.25: device.run_signature(
        "correct", {"label": labels, "local_ctr": np.float32(ctr), "method": np.int32(method)}
    )
    for method in (-5, -1, len(CORRECTIONS), 7, 2**31 - 1, -(2**31)):
        out = run(method)
        assert int(out["valid"]) == 0, method
        assert (float(out["alpha"]), float(out["beta"])) == (1.0, 0.0), method
        np.testing.assert_array_equal(out["corrected_label"], labels)
    for ctr in (-0.1, 1.5, np.nan):
        assert int(run(2, ctr)["valid"]) == 0
        np.testing.assert_array_equal(run(2, ctr)["corrected_label"], labels)
    for i, method in enumerate(CORRECTIONS):  # known ids: valid, and the Python pair
        out = run(i)
        assert int(out["valid"]) == 1
        expected = correction_pair(method, 0.25, device.global_ctr, HARD_TABLE)
        np.testing.assert_allclose([out["alpha"], out["beta"]], expected, atol=1e-6)
    assert device.metadata["correction"]["unknown_method"].startswith("raw labels")
    outputs = {t["name"]: t for t in device.metadata["signatures"]["correct"]["outputs"]}
    assert outputs["valid"] == {"name": "valid", "shape": [], "dtype": "int32"}


def test_hard_without_a_table_is_invalid_in_the_model(spec, tmp_path):
    path = tmp_path / "lr.tflite"
    export_tflite(build_tiny("lr", spec), path, ExportConfig(batch_size=4))
    out = OnDeviceModel(path).run_signature(
        "correct", {"label": np.ones(4, np.float32), "local_ctr": np.float32(0.9), "method": np.int32(3)}
    )
    assert int(out["valid"]) == 0 and float(out["alpha"]) == 1.0


# -- 2. soft2 at lr 1.0 cannot diverge; non-finite steps roll back -------------
def _extreme_users(spec, n=100):
    """Two users of ``n`` samples: one click (w_i 0.01) and one skip (w_i 0.99)."""
    for positives in (1, n - 1):
        yield random_features(spec, n, seed=positives), np.array([1] * positives + [0] * (n - positives))


@pytest.mark.parametrize("name", NAMES)
def test_soft2_extreme_users_at_lr_1_stay_finite_and_bounded(exported, spec, name):
    epochs = 4
    for x, raw in _extreme_users(spec):
        device = OnDeviceModel(exported[name][1])
        start = device.save()
        labels = device.correct(raw, "soft2")  # targets 40 / -39 for w_g 0.4
        assert labels.max() > 30 or labels.min() < -30
        steps = 0
        for _ in range(epochs):
            steps += len(device.train(x, labels, learning_rate=1.0))
        end = device.save()
        assert all(np.all(np.isfinite(v)) for v in end.values())
        # SGD moves the weights by lr * (clipped gradient), norm <= lr * clip_norm per step.
        moved = np.sqrt(sum(np.sum((end[k].astype(np.float64) - start[k]) ** 2) for k in end))
        assert moved <= steps * 1.0 * CLIP_NORM * (1 + 1e-5), (moved, steps)
        assert moved > 0.5 * CLIP_NORM  # it did train, and hard (clipped) steps
        assert np.all(np.isfinite(device.infer(x)))
        assert device.rolled_back_steps == 0


def test_non_finite_steps_roll_back_bit_exactly_and_are_counted(exported, spec, caplog):
    device = OnDeviceModel(exported["wide_deep"][1])
    x = random_features(spec, BATCH, seed=7)
    batch = {**x, "label": np.ones(BATCH, np.float32), "sample_weight": np.ones(BATCH, np.float32)}
    outcomes = []
    for _ in range(4):
        before = device.save()
        out = device.run_signature("train", {**batch, "learning_rate": np.float32(3e38)})
        after = device.save()
        assert all(np.all(np.isfinite(v)) for v in after.values())
        if int(out["applied"]) == 0:
            assert all(np.array_equal(before[k], after[k]) for k in before)
        outcomes.append(int(out["applied"]))
    assert 0 in outcomes

    caplog.set_level(logging.WARNING, logger="lcft_tf.device.model")
    before = device.save()
    losses = device.train({k: np.concatenate([v, v]) for k, v in x.items()}, np.ones(2 * BATCH), learning_rate=3e38)
    assert losses.shape == (2,)
    assert device.rolled_back_steps >= 1
    assert "rolled back" in caplog.text
    if device.rolled_back_steps == 2:
        assert all(np.array_equal(before[k], v) for k, v in device.save().items())


def test_save_checkpoint_refuses_non_finite_state(exported, tmp_path, monkeypatch):
    device = OnDeviceModel(exported["lr"][1])
    path = tmp_path / "user.safetensors"
    device.save_checkpoint(path)
    good = path.read_bytes()
    state = device.save()
    first = next(iter(state))
    bad = {**state, first: np.full_like(state[first], np.nan)}
    monkeypatch.setattr(device, "save", lambda: bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        device.save_checkpoint(path)
    assert path.read_bytes() == good
    assert not list(tmp_path.glob(".*.tmp"))


# -- 3. learning rates are checked as float32, in one place ------------------
@pytest.mark.parametrize("bad", [1e39, -1e39, float("inf"), float("nan"), -0.5, "fast"])
def test_learning_rate_must_be_finite_in_float32(exported, spec, bad):
    with pytest.raises(ValueError, match="learning_rate"):
        checks.learning_rate(bad)
    with pytest.raises(ValueError, match="learning_rate"):
        ExportConfig(learning_rate=bad)
    with pytest.raises(ValueError, match="learning_rate"):
        CloudConfig(learning_rate=bad)
    device = OnDeviceModel(exported["lr"][1])
    x = random_features(spec, 4)
    before = device.save()
    with pytest.raises(ValueError, match="learning_rate"):
        device.train(x, np.ones(4), learning_rate=bad)
    assert all(np.array_equal(before[k], v) for k, v in device.save().items())


def test_learning_rate_accepts_the_float32_range():
    assert checks.learning_rate(3e38) == 3e38
    assert checks.learning_rate(0) == 0.0
    assert checks.learning_rate(np.float32(0.01)) == pytest.approx(0.01)


# -- 4. temp files of killed writers are cleaned, live writers' are not ------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temps_are_removed_on_save_and_load(exported, tmp_path):
    device = OnDeviceModel(exported["lr"][1])
    path = tmp_path / "user.safetensors"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        stale = [tmp_path / f".user.safetensors.{dead}.abc{i}xyz.tmp" for i in range(3)]
        kept = [
            tmp_path / f".user.safetensors.{live.pid}.live0000.tmp",  # another live writer
            tmp_path / f".user.safetensors.{os.getpid()}.self0000.tmp",  # this process
            tmp_path / f".other.safetensors.{dead}.abcdefgh.tmp",  # another target
            tmp_path / ".user.safetensors.oldstyle.tmp",  # not our naming
        ]
        for p in stale + kept:
            p.write_bytes(b"partial")
        device.save_checkpoint(path)
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in kept)

        stale[0].write_bytes(b"partial")
        device.load_checkpoint(path)
        assert not stale[0].exists()
        assert all(p.exists() for p in kept)
    finally:
        live.kill()
        live.wait()


# -- 5. the JSON beside the file must describe the file ----------------------
@pytest.mark.parametrize(
    "field, edit",
    [
        ("batch_size", lambda m: m.update(batch_size=m["batch_size"] * 2)),
        ("pos_hist", lambda m: [f.update(length=f["length"] + 1) for f in m["feature_spec"]["features"] if f["name"] == "pos_hist"]),
        ("train.inputs.label.shape", lambda m: m["signatures"]["train"]["inputs"][-3].update(shape=[BATCH * 2])),
        ("infer.outputs.probability.dtype", lambda m: m["signatures"]["infer"]["outputs"][0].update(dtype="float64")),
        ("correct.outputs", lambda m: m["signatures"]["correct"]["outputs"].pop()),
        ("format", lambda m: m.update(format_version=1)),
    ],
)
def test_edited_metadata_is_refused_naming_the_field(exported, tmp_path, field, edit):
    src = exported["din"][1]
    path = tmp_path / "din.tflite"
    shutil.copy(src, path)
    meta = json.loads(src.with_suffix(".json").read_text())
    edit(meta)
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=field.split(".")[-1]) as err:
        OnDeviceModel(path)
    assert "\n" not in str(err.value)


# -- 6. state names are stable across processes and auto-numbering -----------
_EXPORT_IN_SUBPROCESS = """
import sys
sys.path.insert(0, {tests!r})
from conftest import BATCH, build_tiny
from lcft_tf.cloud.export import ExportConfig, export_tflite
from lcft_tf.features import FeatureSpec
spec = FeatureSpec.from_json({spec!r})
meta = export_tflite(build_tiny({name!r}, spec), {path!r}, ExportConfig(batch_size=BATCH))
"""


@pytest.mark.parametrize("name", ["din", "edgerec"])
def test_state_names_do_not_depend_on_what_else_was_built(exported, spec, tmp_path, name):
    first = json.loads(exported[name][1].with_suffix(".json").read_text())["checkpoint"]["tensors"]
    for other in NAMES:  # shift Keras's per-process layer numbering
        build_tiny(other, spec)
    path = tmp_path / f"{name}.tflite"
    again = export_tflite(build_tiny(name, spec), path, ExportConfig(batch_size=BATCH))["checkpoint"]["tensors"]
    assert again == first
    assert not [n for n in first if "linear_" in n or "mlp" in n]

    # A checkpoint of one export restores into the other with equal predictions.
    a, b = OnDeviceModel(exported[name][1]), OnDeviceModel(path)
    x = random_features(spec, 20, seed=9)
    a.train(x, np.ones(20), learning_rate=0.3)
    a.save_checkpoint(tmp_path / "a.safetensors")
    b.load_checkpoint(tmp_path / "a.safetensors")
    np.testing.assert_array_equal(b.infer(x), a.infer(x))


@pytest.mark.slow
def test_state_names_match_an_export_made_in_another_process(exported, spec, tmp_path):
    path = tmp_path / "din.tflite"
    code = _EXPORT_IN_SUBPROCESS.format(
        tests=str(TESTS), spec=json.dumps(spec.to_json()), name="din", path=str(path)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, timeout=600)
    theirs = json.loads(path.with_suffix(".json").read_text())["checkpoint"]
    ours = json.loads(exported["din"][1].with_suffix(".json").read_text())["checkpoint"]
    assert theirs["tensors"] == ours["tensors"]
    assert theirs["fingerprint"] == ours["fingerprint"]
