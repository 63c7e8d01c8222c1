"""Property tests (hypothesis) of the device wrapper and the correction: any
input either raises ValueError and changes nothing, or gives a defined answer."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import HARD_TABLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcft_tf.correction import CORRECTIONS, correct_labels, correction_pair
from lcft_tf.device.model import OnDeviceModel

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
INT32 = (-(2**31), 2**31 - 1)
floats_any = st.floats(allow_nan=True, allow_infinity=True, width=64)


@pytest.fixture(scope="module")
def device(exported):
    return OnDeviceModel(exported["din"][1])


@st.composite
def train_inputs(draw, spec):
    """Mostly valid inputs (ids anywhere in int32, so out of range too) with a
    few defects each: wrong shape, dtype, non-finite values, bad rates."""
    n = draw(st.integers(1, 20))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    bad = lambda: draw(st.integers(0, 14)) == 0
    features = {}
    for f in spec.features:
        shape = spec.shape(f.name, n)
        if bad():
            shape = (draw(st.integers(0, 3)), *shape[1:]) if draw(st.booleans()) else (*shape, 2)
        dense = spec.dtype(f.name) == np.float32
        kind = draw(st.sampled_from(["int32", "int64", "float32", "float64", "bool"])) if bad() else spec.dtype(f.name).name
        if dense:
            values = draw(st.lists(floats_any if bad() else st.floats(-1e3, 1e3), min_size=1, max_size=3))
        else:
            values = draw(st.lists(st.integers(*INT32), min_size=1, max_size=3))
        with np.errstate(over="ignore", invalid="ignore"):
            features[f.name] = rng.choice(np.array(values, np.float64 if dense else np.int64), shape).astype(kind)
    label_values = draw(st.lists(floats_any if bad() else st.sampled_from([0.0, 1.0, -40.0, 40.0, 0.4]), min_size=1, max_size=3))
    labels = rng.choice(np.array(label_values), n + 1 if bad() else n)
    lr = draw(st.one_of(floats_any, st.sampled_from([1e39, 3e38, -1e-9]))) if bad() else draw(st.floats(0, 2))
    return features, labels, lr


def _state_equal(a, b):
    return all(np.array_equal(a[k], b[k]) for k in a)


def test_any_train_input_raises_or_trains_to_finite_weights(device, spec):
    initial = device.save()
    probe = {n: np.ones((3, *spec.shape(n)[1:]), spec.dtype(n)) for n in spec.names}
    seen = {"raised": 0, "trained": 0}

    @SETTINGS
    @given(train_inputs(spec))
    def check(inputs):
        features, labels, lr = inputs
        device.restore(initial)
        before = device.infer(probe)
        try:
            device.train(features, labels, learning_rate=lr)
        except ValueError:
            seen["raised"] += 1
            assert np.array_equal(device.infer(probe), before)
            assert _state_equal(device.save(), initial)
            return
        seen["trained"] += 1
        assert all(np.all(np.isfinite(v)) for v in device.save().values())

    check()
    device.restore(initial)
    assert seen["raised"] and seen["trained"], seen  # both branches were exercised


def test_any_correct_call_raises_or_matches_python(device):
    @SETTINGS
    @given(
        labels=st.lists(st.sampled_from([0, 1, 0.5, 2, -1]), max_size=25),
        method=st.one_of(st.sampled_from(CORRECTIONS), st.text(max_size=6)),
        ctr=st.one_of(st.none(), floats_any),
    )
    def check(labels, method, ctr):
        try:
            out = device.correct(np.array(labels), method, ctr)
        except ValueError:
            return
        assert method in CORRECTIONS and set(labels) <= {0, 1}
        if labels:
            w_i = np.mean(labels) if ctr is None else ctr
            alpha, beta = correction_pair(method, w_i, device.global_ctr, HARD_TABLE)
            np.testing.assert_allclose(out, np.where(np.array(labels) == 1, alpha, beta), atol=2e-6, rtol=1e-6)
            if ctr is None:
                np.testing.assert_allclose(out, correct_labels(labels, method, device.global_ctr, HARD_TABLE), atol=2e-6, rtol=1e-6)

    check()


def test_correct_signature_on_any_id_and_rate(device):
    labels = np.array([1, 0, 1, 0, 0, 0, 1, 0], np.float32)

    @SETTINGS
    @given(method=st.integers(*INT32), ctr=st.floats(width=32, allow_nan=True, allow_infinity=True))
    def check(method, ctr):
        out = device.run_signature("correct", {"label": labels, "local_ctr": np.float32(ctr), "method": np.int32(method)})
        known = 0 <= method < len(CORRECTIONS) and 0.0 <= ctr <= 1.0
        assert int(out["valid"]) == int(known)
        if not known:
            np.testing.assert_array_equal(out["corrected_label"], labels)
        else:
            alpha, beta = correction_pair(CORRECTIONS[method], ctr, device.global_ctr, HARD_TABLE)
            np.testing.assert_allclose([out["alpha"], out["beta"]], [alpha, beta], rtol=1e-5, atol=1e-5)

    check()
