"""DIN (Zhou et al., 2018): attention of the candidate over each behaviour
history (positive and negative), concatenated with the other fields."""

import keras
import tensorflow as tf

from lcft_tf.models.base import CTRModel
from lcft_tf.models.layers import MLP, AttentionPooling, masked_mean


@keras.saving.register_keras_serializable(package="lcft_tf")
class DIN(CTRModel):
    model_name = "din"

    def __init__(self, spec, attention_units=(32,), **kwargs):
        super().__init__(spec, **kwargs)
        self.attention_units = tuple(int(u) for u in attention_units)
        self.attention = {
            f.name: AttentionPooling(self.attention_units, seed=self.seed + 10 + i, name=f"att_{f.name}")
            for i, f in enumerate(spec.sequences)
            if f.query is not None
        }
        self.deep = MLP(self.hidden_units, seed=self.seed + 2, name="deep")

    def logits(self, features):
        fields = self.field_embeddings(features, pool_sequences=False)
        for f in self.spec.sequences:
            keys, mask = self.embed_sequence(f, features[f.name])
            if f.name in self.attention:
                query = self.embed(f.query, features[f.query])
                fields.append(self.attention[f.name](query, keys, mask))
            else:
                fields.append(masked_mean(keys, mask))
        return tf.reshape(self.deep(tf.concat(fields, axis=-1)), [-1])

    def get_config(self):
        return {**super().get_config(), "attention_units": list(self.attention_units)}
