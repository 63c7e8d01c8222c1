"""PNN with inner products (Qu et al., 2016): the MLP sees the field
embeddings and every pairwise inner product between them."""

import keras
import numpy as np
import tensorflow as tf

from lcft_tf.models.base import CTRModel
from lcft_tf.models.layers import MLP


@keras.saving.register_keras_serializable(package="lcft_tf")
class PNN(CTRModel):
    """IPNN, the inner-product PNN (Qu et al., 2016): an MLP over the field embeddings
    and their pairwise inner products."""

    model_name = "pnn"

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self.deep = MLP(self.hidden_units, seed=self.seed + 2, name="deep")

    def logits(self, features):
        """Click logits, float32 ``[B]``, for a dict of feature tensors
        (shapes and dtypes: :meth:`lcft_tf.features.FeatureSpec.shape` /
        ``dtype``)."""
        fields = self.field_embeddings(features)
        n = len(fields)
        stacked = tf.stack(fields, axis=1)  # [B, F, d]
        inner = tf.reshape(tf.matmul(stacked, stacked, transpose_b=True), [-1, n * n])
        rows, cols = np.triu_indices(n, k=1)
        pairs = tf.gather(inner, (rows * n + cols).astype(np.int32), axis=1)  # gather, not slicing
        deep = self.deep(tf.concat(fields + [pairs], axis=-1))
        return tf.reshape(deep, [-1])
