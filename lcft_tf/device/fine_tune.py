"""One device's fine-tune: restore, train in time order, predict (docs/pipeline.md)."""

from __future__ import annotations

import numpy as np

from lcft_tf.device.model import OnDeviceModel


def fine_tune_and_predict(
    device: OnDeviceModel,
    cloud_state: dict[str, np.ndarray],
    train_features: dict[str, np.ndarray],
    train_labels: np.ndarray | None,
    test_features: dict[str, np.ndarray],
    learning_rate: float,
    epochs: int,
) -> np.ndarray:
    """Test click probabilities ``[num_test]`` float32 of one device after
    restoring ``cloud_state`` and fine-tuning ``epochs`` passes over the train
    samples in their order on ``train_labels`` (raw or corrected, ``[num_train]``;
    None or empty: no fine-tuning, i.e. the Cloud method). Raises
    ``ValueError`` from :class:`OnDeviceModel` on bad inputs."""
    device.restore(cloud_state, probe=False)  # vetted once, when the worker started (DeviceWorker)
    if train_labels is not None and len(train_labels):
        for _ in range(epochs):
            device.train(train_features, train_labels, learning_rate=learning_rate)
    return device.infer(test_features)
