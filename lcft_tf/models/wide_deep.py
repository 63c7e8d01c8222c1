"""Wide & Deep (Cheng et al., 2016): linear terms + an MLP over field embeddings."""

import keras
import tensorflow as tf

from lcft_tf.models.base import CTRModel
from lcft_tf.models.layers import MLP, LinearTerms


@keras.saving.register_keras_serializable(package="lcft_tf")
class WideDeep(CTRModel):
    """Wide & Deep (Cheng et al., 2016): linear terms + an MLP over
    the field embeddings."""

    model_name = "wide_deep"

    def __init__(self, spec, **kwargs):
        super().__init__(spec, **kwargs)
        self.wide = LinearTerms(spec, seed=self.seed + 1, name="wide")
        self.deep = MLP(self.hidden_units, seed=self.seed + 2, name="deep")

    def logits(self, features):
        """Click logits, float32 ``[B]``, for a dict of feature tensors
        (shapes and dtypes: :meth:`lcft_tf.features.FeatureSpec.shape` /
        ``dtype``)."""
        deep = self.deep(tf.concat(self.field_embeddings(features), axis=-1))
        return self.wide(features) + tf.reshape(deep, [-1])
