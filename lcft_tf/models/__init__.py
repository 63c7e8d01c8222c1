"""CTR models that train inside the TFLite interpreter, and a registry by name."""

from __future__ import annotations

from lcft_tf.features import FeatureSpec
from lcft_tf.models.base import CTRModel
from lcft_tf.models.deepfm import DeepFM
from lcft_tf.models.din import DIN
from lcft_tf.models.edgerec import EdgeRec
from lcft_tf.models.losses import CorrectedLogLoss  # registered for keras.models.load_model
from lcft_tf.models.lr import LR
from lcft_tf.models.pnn import PNN
from lcft_tf.models.wide_deep import WideDeep

REGISTRY: dict[str, type[CTRModel]] = {cls.model_name: cls for cls in (LR, WideDeep, DeepFM, PNN, DIN, EdgeRec)}


def check_names(names) -> tuple[str, ...]:
    """``names`` as a tuple; raises ``ValueError`` unless it is non-empty and
    every name is a model of :data:`REGISTRY`."""
    names = tuple(names)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown or not names:
        raise ValueError(f"unknown models {unknown or '(none given)'}; choose from {sorted(REGISTRY)}")
    return names


def build(name: str, spec: FeatureSpec, **kwargs) -> CTRModel:
    """Build registry model ``name`` for ``spec`` with its weights created.

    ``kwargs`` go to the model (``embedding_dim``, ``hidden_units``,
    ``seed``, and model-specific ones such as DIN's ``attention_units``).
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(REGISTRY)}")
    return REGISTRY[name](spec, name=name, **kwargs).build_from_spec()


__all__ = ["CTRModel", "CorrectedLogLoss", "REGISTRY", "build", "check_names", "LR", "WideDeep", "DeepFM", "PNN", "DIN", "EdgeRec"]
