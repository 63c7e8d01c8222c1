"""Logistic regression: one weight per id and per dense input."""

import keras

from lcft_tf.models.base import CTRModel
from lcft_tf.models.layers import LinearTerms


@keras.saving.register_keras_serializable(package="lcft_tf")
class LR(CTRModel):
    """Logistic regression: a weight per id and per dense input, no embeddings (``needs_embeddings`` False)."""

    model_name = "lr"
    needs_embeddings = False

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self.linear = LinearTerms(spec, seed=self.seed, name="linear")

    def logits(self, features):
        """Click logits, float32 ``[B]``, for a dict of feature tensors
        (shapes and dtypes: :meth:`lcft_tf.features.FeatureSpec.shape` /
        ``dtype``)."""
        return self.linear(features)
