"""One input check for both runtimes: ``run_signature`` refuses missing or
extra names, a lossy dtype cast and a wrong shape with the same one-line
``ValueError`` under the Interpreter and ``runtime="compiled"``; both take
``num_threads`` None or an int >= 1; a compiled load is quiet unless asked."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import BATCH, random_features

from lcft_tf.device.model import OnDeviceModel

RUNTIMES = ("interpreter", "compiled")


def _feed(spec):
    x = random_features(spec, BATCH, seed=1)
    return {**x, "label": (np.arange(BATCH) % 2).astype(np.float32), "sample_weight": np.ones(BATCH, np.float32),
            "learning_rate": np.float32(0.5)}


BAD = {
    "int64 beyond int32": (lambda f: {**f, "item_id": f["item_id"].astype(np.int64) + 2**32},
                           r"input 'item_id': expected int32\[8\], got int64\[8\]"),
    "float id": (lambda f: {**f, "item_id": f["item_id"] + 0.7}, r"input 'item_id': expected int32\[8\], got float64\[8\]"),
    "float64 not exact": (lambda f: {**f, "genome": f["genome"].astype(np.float64) + 0.1},
                          r"input 'genome': expected float32\[8, 3\], got float64\[8, 3\]"),
    "python float rate": (lambda f: {**f, "learning_rate": 0.1}, r"input 'learning_rate': expected float32\[\], got float64\[\]"),
    "extra": (lambda f: {**f, "bogus": np.ones(BATCH, np.float32)}, r"unexpected \['bogus'\]"),
    "missing": (lambda f: {k: v for k, v in f.items() if k != "label"}, r"missing \['label'\]"),
    "batch": (lambda f: {**f, "user_id": f["user_id"][:-1]}, r"input 'user_id': expected int32\[8\], got int32\[7\]"),
    "rank": (lambda f: {**f, "label": f["label"][:, None]}, r"input 'label': expected float32\[8\], got float32\[8, 1\]"),
    "string": (lambda f: {**f, "genome": f["genome"].astype(str)}, r"input 'genome': expected float32\[8, 3\], got str"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_inputs_give_the_same_one_line_error_under_both_runtimes(exported, spec, case):
    make, pattern = BAD[case]
    bad = make(_feed(spec))
    messages = []
    for runtime in RUNTIMES:
        device = OnDeviceModel(exported["din"][1], runtime=runtime)
        before = device.save()
        with pytest.raises(ValueError, match=rf"^din: signature 'train'.*{pattern}") as err:
            device.run_signature("train", bad)
        assert "\n" not in str(err.value)
        messages.append(str(err.value))
        for k, v in device.save().items():  # nothing ran
            np.testing.assert_array_equal(v, before[k], err_msg=k)
    assert messages[0] == messages[1]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_wrong_batch_in_infer_names_signature_input_and_shape(exported, spec, runtime):
    device = OnDeviceModel(exported["wide_deep"][1], runtime=runtime)
    x = random_features(spec, BATCH - 1)
    with pytest.raises(ValueError, match=r"^wide_deep: signature 'infer' input 'user_id': expected int32\[8\], got int32\[7\]$"):
        device.run_signature("infer", x)
    with pytest.raises(ValueError, match=r"signature 'infer_one' input 'user_id': expected int32\[1\], got int32\[7\]"):
        device.run_signature("infer_one", x)


def test_exact_casts_are_accepted_and_both_runtimes_agree_bit_for_bit(exported, spec):
    exact = _feed(spec)
    cast = {**exact, "item_id": exact["item_id"].astype(np.int64), "category": exact["category"].astype(np.int16),
            "genome": exact["genome"].astype(np.float64), "label": exact["label"].astype(np.int64),
            "learning_rate": 0.5}
    results = {}
    for runtime in RUNTIMES:
        for name, feed in (("exact", exact), ("cast", cast)):
            device = OnDeviceModel(exported["din"][1], runtime=runtime)
            out = device.run_signature("train", feed)
            assert int(out["applied"]) == 1
            results[runtime, name] = (out, device.save(), device.run_signature("infer", {k: exact[k] for k in spec.names}))
    reference = results["interpreter", "exact"]
    for key, (out, state, infer) in results.items():
        for name in reference[0]:
            np.testing.assert_array_equal(out[name], reference[0][name], err_msg=f"{key} {name}")
        for name in reference[1]:
            np.testing.assert_array_equal(state[name], reference[1][name], err_msg=f"{key} {name}")
        np.testing.assert_array_equal(infer["probability"], reference[2]["probability"], err_msg=str(key))
    initial = OnDeviceModel(exported["din"][1]).save()
    assert any(not np.array_equal(initial[k], reference[1][k]) for k in initial)  # the step moved the weights


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("threads", [0, -1, 2.5, True, "2"])
def test_num_threads_must_be_none_or_a_positive_int(exported, runtime, threads):
    with pytest.raises(ValueError, match=rf"^num_threads must be None or an int >= 1, got {threads!r}$"):
        OnDeviceModel(exported["lr"][1], num_threads=threads, runtime=runtime)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("threads", [None, 1, 2, np.int64(3)])
def test_valid_thread_counts_load(exported, spec, runtime, threads):
    device = OnDeviceModel(exported["lr"][1], num_threads=threads, runtime=runtime)
    assert device.infer(random_features(spec, 3)).shape == (3,)


_LOAD = """
import sys
from lcft_tf.device.model import OnDeviceModel
m = OnDeviceModel(sys.argv[1], runtime="compiled")
m.restore(m.save())
print("python stderr still works", file=sys.stderr)
"""


def _compiled_load_stderr(path, **env) -> list[str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environ = {**os.environ, "PYTHONPATH": root, **env}
    done = subprocess.run([sys.executable, "-c", _LOAD, str(path)], capture_output=True, text=True, env=environ,
                          timeout=300, check=True)
    return done.stderr.splitlines()


def test_compiled_load_is_quiet_unless_asked(exported):
    path = exported["din"][1]
    quiet = _compiled_load_stderr(path, LCFT_LITERT_LOGS="0")
    # Load, restore and Python's own stderr: nothing from LiteRT before the
    # marker. Only LiteRT's static teardown at process exit (after Python is
    # gone: 2 DestroyAccelerator lines) is left.
    marker = quiet.index("python stderr still works")
    assert quiet[:marker] == [], quiet
    assert all("DestroyAccelerator" in line for line in quiet[marker + 1 :]) and len(quiet) <= 3, quiet
    loud = _compiled_load_stderr(path, LCFT_LITERT_LOGS="1")
    assert any("compiler_plugin" in line or "registry" in line for line in loud), loud
