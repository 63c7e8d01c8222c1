"""DIN (Zhou et al., 2018): attention of the candidate over each behaviour
history (positive and negative), concatenated with the other fields."""

import keras
import tensorflow as tf

from lcft_tf.models.base import CTRModel
from lcft_tf.features import SparseFeature
from lcft_tf.models.layers import MLP, AttentionPooling, Embedding, masked_mean


@keras.saving.register_keras_serializable(package="lcft_tf")
class DIN(CTRModel):
    """DIN (Zhou et al., 2018): attention of the candidate over
    each history that has a query, mean pooling of the others, an MLP, plus
    optional per-id offsets (``first_order``; docs/din_on_movielens.md).
    Raises ``ValueError`` for a ``first_order`` name that is not a sparse
    feature, or that repeats."""

    model_name = "din"

    def __init__(self, spec, attention_units=(32,), first_order=(), **kwargs):
        super().__init__(spec, **kwargs)
        self.attention_units = tuple(int(u) for u in attention_units)
        # A scalar weight per id of these sparse features, added to the logit
        # (e.g. ("user_id",): a per-user offset with a parameter of its own,
        # which a level change on the device moves without touching the
        # ranking; docs/din_on_movielens.md). () is the paper's DIN.
        self.first_order = tuple(str(n) for n in first_order)
        for n in self.first_order:
            if n not in spec.names or not isinstance(spec[n], SparseFeature):
                raise ValueError(f"first_order: {n!r} is not a sparse feature of the spec")
        if len(set(self.first_order)) != len(self.first_order):
            raise ValueError(f"first_order names a feature twice: {list(self.first_order)}")
        self.offsets = {
            n: Embedding(spec[n].vocab_size, 1, seed=self.seed + 20 + i, name=f"offset_{n}")
            for i, n in enumerate(self.first_order)
        }
        self.attention = {
            f.name: AttentionPooling(self.attention_units, seed=self.seed + 10 + i, name=f"att_{f.name}")
            for i, f in enumerate(spec.sequences)
            if f.query is not None
        }
        self.deep = MLP(self.hidden_units, seed=self.seed + 2, name="deep")

    def logits(self, features):
        """DIN's logits: each history sequence pooled by attention to its query
        (the candidate item), then the MLP; float32 ``[B]``."""
        fields = self.field_embeddings(features, pool_sequences=False)
        for f in self.spec.sequences:
            keys, mask = self.embed_sequence(f, features[f.name])
            if f.name in self.attention:
                query = self.embed(f.query, features[f.query])
                fields.append(self.attention[f.name](query, keys, mask))
            else:
                fields.append(masked_mean(keys, mask))
        logits = tf.reshape(self.deep(tf.concat(fields, axis=-1)), [-1])
        for n, table in self.offsets.items():
            logits = logits + tf.reshape(table(features[n]), [-1])
        return logits

    def get_config(self):
        """Keras saving: the base config plus this model's own arguments."""
        return {
            **super().get_config(),
            "attention_units": list(self.attention_units),
            "first_order": list(self.first_order),
        }
