"""Datasets: the synthetic drift generator (default) and the per-user view."""

from lcft_tf.data.dataset import CTRDataset, UserView
from lcft_tf.data.synthetic import SyntheticConfig, generate

__all__ = ["CTRDataset", "UserView", "SyntheticConfig", "generate"]
