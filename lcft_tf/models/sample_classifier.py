"""CoDA's on-device sample classifier: local (1) vs retrieved (0) samples.

A :class:`CTRModel` subclass, so it is exported by the same
``export_tflite`` path as the CTR models and trains in LiteRT through
``OnDeviceModel`` (its ``correct`` signature is written too and unused).
Its one input is the sample embedding of :mod:`lcft_tf.cloud.retrieval`
as a dense feature; the model is logistic regression (``hidden_units=()``,
the default) or a small ReLU MLP (docs/coda.md).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from lcft_tf.features import DenseFeature, FeatureSpec
from lcft_tf.models.base import CTRModel
from lcft_tf.models.layers import MLP

EMBEDDING_FEATURE = "sample_embedding"


def classifier_spec(dim: int) -> FeatureSpec:
    """The classifier's spec: one float32 dense feature ``[B, dim]``."""
    return FeatureSpec((DenseFeature(EMBEDDING_FEATURE, int(dim)),))


@keras.saving.register_keras_serializable(package="lcft_tf")
class SampleClassifier(CTRModel):
    """Local-vs-retrieved logits, float32 ``[B]``, from one sample embedding
    (docs/coda.md). Raises ``ValueError`` for any spec other than
    :func:`classifier_spec`'s."""

    model_name = "sample_classifier"
    needs_embeddings = False

    def __init__(self, spec: FeatureSpec, hidden_units=(), **kwargs):
        super().__init__(spec, hidden_units=hidden_units, **kwargs)
        if spec.names != (EMBEDDING_FEATURE,):
            raise ValueError(f"the sample classifier takes one dense feature {EMBEDDING_FEATURE!r}, got {spec.names}")
        self.mlp = MLP(self.hidden_units, out_units=1, seed=self.seed, name="mlp")

    def logits(self, features):
        """Logits, float32 ``[B]``, of ``features[EMBEDDING_FEATURE]`` ``[B, dim]``."""
        return tf.reshape(self.mlp(features[EMBEDDING_FEATURE]), [-1])


def build_sample_classifier(dim: int, hidden_units=(), seed: int = 0) -> SampleClassifier:
    """A sample classifier over ``dim``-d embeddings, weights created."""
    return SampleClassifier(classifier_spec(dim), hidden_units=hidden_units, seed=seed, name="sample_classifier").build_from_spec()
