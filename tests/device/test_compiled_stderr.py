"""The compiled runtime silences the process's stderr (fd 2, process-wide)
only around ``restore``, the one signature LiteRT prints on: every other
signature call leaves fd 2 alone and writes nothing to it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BATCH, build_tiny, random_features

from lcft_tf.cloud.export import ExportConfig, export_tflite
from lcft_tf.device.model import OnDeviceModel


@pytest.fixture(scope="module")
def path(spec, tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled_stderr") / "din.tflite"
    export_tflite(build_tiny("din", spec), out, ExportConfig(batch_size=BATCH, global_ctr=0.4))
    return out


def every_call(device: OnDeviceModel, spec) -> None:
    features = random_features(spec, BATCH + 2, seed=1)
    labels = (np.arange(BATCH + 2) % 2).astype(np.float32)
    device.train(features, device.correct(labels, "soft1"))
    device.infer(features)
    device.infer({k: v[:1] for k, v in features.items()})  # infer_one
    device.restore(device.save())


def test_only_restore_is_silenced_and_nothing_else_prints(path, spec, capfd):
    quiet = OnDeviceModel(path, runtime="compiled")
    assert [k for k, r in quiet._runners.items() if r.quiet] == ["restore"]
    capfd.readouterr()
    every_call(quiet, spec)
    assert capfd.readouterr().err == ""
    # the same calls with nothing silenced: restore's line reaches fd 2 (so the capture above would see it)
    loud = OnDeviceModel(path, runtime="compiled", litert_logs=True)
    capfd.readouterr()
    every_call(loud, spec)
    err = capfd.readouterr().err
    assert "num_restored" in err and len(err.strip().splitlines()) == 1
