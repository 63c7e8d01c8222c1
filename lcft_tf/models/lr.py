"""Logistic regression: one weight per id and per dense input."""

import keras

from lcft_tf.models.base import CTRModel
from lcft_tf.models.layers import LinearTerms


@keras.saving.register_keras_serializable(package="lcft_tf")
class LR(CTRModel):
    """Logistic regression: a weight per id and per dense input, no
    embeddings (``needs_embeddings`` False); no global bias, so an id the
    device never sees keeps its cloud score (the paper's Example 1). A history feature has
    its own weights unless ``tie_history`` (then it reads the candidate id's
    column; docs/cloud_base.md measures both)."""

    model_name = "lr"
    needs_embeddings = False

    def __init__(self, spec, tie_history: bool = False, **kwargs):
        super().__init__(spec, **kwargs)
        self.tie_history = bool(tie_history)
        self.linear = LinearTerms(spec, seed=self.seed, tie_sequences=self.tie_history, name="linear")

    def get_config(self):
        """Keras saving: the base arguments and ``tie_history``."""
        return {**super().get_config(), "tie_history": self.tie_history}

    def logits(self, features):
        """Click logits, float32 ``[B]``, for a dict of feature tensors
        (shapes and dtypes: :meth:`lcft_tf.features.FeatureSpec.shape` /
        ``dtype``)."""
        return self.linear(features)
