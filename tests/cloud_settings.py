"""Cloud training settings shared by tests that do not test cloud training."""

from lcft_tf.cloud.train import CloudConfig


def fixed_epochs_cloud(**settings) -> CloudConfig:
    """A cloud config that trains exactly ``epochs`` epochs without a
    validation search, at batch 32 with the rate decayed x0.1 per epoch: the
    settings in which the tests' measured margins were taken (before the
    defaults chose the rate and the epochs on validation, docs/cloud_base.md),
    and the cheapest for CI."""
    return CloudConfig(**{"batch_size": 32, "decay_per_epoch": 0.1, "validation_fraction": 0.0, **settings})
