"""Logistic regression: one weight per id and per dense input."""

import keras

from lcft_tf.models.base import CTRModel
from lcft_tf.models.layers import LinearTerms


@keras.saving.register_keras_serializable(package="lcft_tf")
class LR(CTRModel):
    model_name = "lr"
    needs_embeddings = False

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self.linear = LinearTerms(spec, seed=self.seed, name="linear")

    def logits(self, features):
        return self.linear(features)
