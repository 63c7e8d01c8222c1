"""DeepFM (Guo et al., 2017): linear terms + FM pairwise interactions + an MLP,
all sharing the field embeddings."""

import keras
import tensorflow as tf

from lcft_tf.models.base import CTRModel
from lcft_tf.models.layers import MLP, LinearTerms


@keras.saving.register_keras_serializable(package="lcft_tf")
class DeepFM(CTRModel):
    """DeepFM (Guo et al., 2017): linear terms + FM pairwise
    interactions + an MLP, all over the shared field embeddings."""

    model_name = "deepfm"

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self.linear = LinearTerms(spec, seed=self.seed + 1, name="linear")
        self.deep = MLP(self.hidden_units, seed=self.seed + 2, name="deep")

    def logits(self, features):
        """Click logits, float32 ``[B]``, for a dict of feature tensors
        (shapes and dtypes: :meth:`lcft_tf.features.FeatureSpec.shape` /
        ``dtype``)."""
        fields = self.field_embeddings(features)
        stacked = tf.stack(fields, axis=1)  # [B, F, d]
        summed = tf.reduce_sum(stacked, axis=1)
        fm = 0.5 * tf.reduce_sum(summed * summed - tf.reduce_sum(stacked * stacked, axis=1), axis=-1)
        deep = tf.reshape(self.deep(tf.concat(fields, axis=-1)), [-1])
        return self.linear(features) + fm + deep
