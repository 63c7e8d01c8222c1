"""lcft-tf: on-device fine-tuning of CTR models with TFLite and label correction."""

__version__ = "0.1.0"
