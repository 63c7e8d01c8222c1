"""EdgeRec-like model (Gong et al., 2020): a GRU encodes each behaviour
history (oldest to newest), the candidate attends over the GRU states."""

import keras
import tensorflow as tf

from lcft_tf.models.base import CTRModel
from lcft_tf.models.layers import GRU, MLP, AttentionPooling, Linear, masked_mean


@keras.saving.register_keras_serializable(package="lcft_tf")
class EdgeRec(CTRModel):
    """EdgeRec-like (Gong et al., 2020): a GRU per history that has a query,
    the projected candidate attending over its states, an MLP on top."""

    model_name = "edgerec"

    def __init__(self, spec, gru_units: int = 16, attention_units=(32,), **kwargs):
        super().__init__(spec, **kwargs)
        self.gru_units = int(gru_units)
        self.attention_units = tuple(int(u) for u in attention_units)
        encoded = [f for f in spec.sequences if f.query is not None]
        self.gru = {f.name: GRU(self.gru_units, seed=self.seed + 20 + i, name=f"gru_{f.name}") for i, f in enumerate(encoded)}
        self.query_projection = {
            f.name: Linear(self.gru_units, seed=self.seed + 40 + i, name=f"query_{f.name}") for i, f in enumerate(encoded)
        }
        self.attention = {
            f.name: AttentionPooling(self.attention_units, seed=self.seed + 60 + i, name=f"att_{f.name}")
            for i, f in enumerate(encoded)
        }
        self.deep = MLP(self.hidden_units, seed=self.seed + 2, name="deep")

    def logits(self, features):
        """EdgeRec's logits: each history sequence encoded by a GRU, pooled by
        attention to its projected query, then the MLP; float32 ``[B]``."""
        fields = self.field_embeddings(features, pool_sequences=False)
        for f in self.spec.sequences:
            keys, mask = self.embed_sequence(f, features[f.name])
            if f.name in self.gru:
                states = self.gru[f.name](keys, mask)
                query = self.query_projection[f.name](self.embed(f.query, features[f.query]))
                fields.append(self.attention[f.name](query, states, mask))
            else:
                fields.append(masked_mean(keys, mask))
        return tf.reshape(self.deep(tf.concat(fields, axis=-1)), [-1])

    def get_config(self):
        """Keras saving: the base config plus this model's own arguments."""
        return {**super().get_config(), "gru_units": self.gru_units, "attention_units": list(self.attention_units)}
