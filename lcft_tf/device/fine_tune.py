"""One device's fine-tune: restore, train in time order, predict (docs/pipeline.md)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

import numpy as np

from lcft_tf.device.model import OnDeviceModel


def _no_phase(name: str) -> ContextManager[Any]:
    return contextlib.nullcontext()


def fine_tune_and_predict(
    device: OnDeviceModel,
    cloud_state: dict[str, np.ndarray],
    train_features: dict[str, np.ndarray],
    train_labels: np.ndarray | None,
    test_features: dict[str, np.ndarray],
    learning_rate: float,
    epochs: int,
    phase: Callable[[str], ContextManager[Any]] = _no_phase,
) -> np.ndarray:
    """Test click probabilities ``[num_test]`` float32 of one device after
    restoring ``cloud_state`` and fine-tuning ``epochs`` passes over the train
    samples in their order on ``train_labels`` (raw or corrected, ``[num_train]``;
    None or empty: no fine-tuning, i.e. the Cloud method). ``phase(name)``
    wraps the ``restore``, ``train`` and ``infer`` parts (a fleet worker's
    :meth:`lcft_tf.fleet.profile.PhaseClock.phase`). Raises ``ValueError``
    from :class:`OnDeviceModel` on bad inputs."""
    with phase("restore"):
        device.restore(cloud_state, probe=False)  # vetted once, when the worker started (DeviceWorker)
    if train_labels is not None and len(train_labels):
        with phase("train"):
            for _ in range(epochs):
                device.train(train_features, train_labels, learning_rate=learning_rate)
    with phase("infer"):
        return device.infer(test_features)
