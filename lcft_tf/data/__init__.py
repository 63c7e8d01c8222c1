"""Datasets: the synthetic drift generator (default) and the per-user view."""

from lcft_tf.data.dataset import CTRDataset, UserView
from lcft_tf.data.synthetic import SyntheticConfig, generate

__all__ = ["CTRDataset", "UserView", "SyntheticConfig", "generate"]


def load_real_dataset(name: str, data_dir: str | None) -> CTRDataset:
    """A real dataset prepared from raw files the user already has."""
    raise ValueError(f"unknown dataset {name!r}; choose from ['synthetic']")
