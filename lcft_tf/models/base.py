"""Base class for the CTR models: embedding tables built from a FeatureSpec."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from lcft_tf.features import FeatureSpec, SequenceFeature
from lcft_tf.models.layers import Embedding, Linear, masked_mean, sequence_mask


class CTRModel(keras.Model):
    """A Keras model mapping a dict of feature tensors to click logits,
    float32 ``[B]``.

    Subclasses implement ``logits(features)``. The model outputs logits
    because cloud training and the device's ``train`` signature share
    :func:`lcft_tf.models.losses.corrected_log_loss`, which is written on
    logits (docs/loss_and_correction.md); ``predict_proba`` and the exported
    ``infer`` signature apply the sigmoid. Raises ``TypeError`` when ``spec``
    is not a :class:`~lcft_tf.features.FeatureSpec`.
    """

    model_name: str = ""
    needs_embeddings: bool = True  # False for models using only LinearTerms

    def __init__(self, spec: FeatureSpec, embedding_dim: int = 8, hidden_units=(64, 32), seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(spec, FeatureSpec):
            raise TypeError(f"spec must be a FeatureSpec, got {type(spec).__name__}")
        self.spec = spec
        self.embedding_dim = int(embedding_dim)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.seed = int(seed)
        self.tables = {}
        self.dense_projections = {}
        if self.needs_embeddings:
            self.tables = {
                table: Embedding(size, self.embedding_dim, seed=self.seed + i, name=f"emb_{table}")
                for i, (table, size) in enumerate(sorted(spec.tables.items()))
            }
            self.dense_projections = {
                f.name: Linear(self.embedding_dim, seed=self.seed + 500 + i, name=f"proj_{f.name}")
                for i, f in enumerate(spec.dense)
            }

    # -- helpers shared by the models -------------------------------------
    def embed(self, name: str, ids):
        """Rows of feature ``name``'s table for int32 ``ids`` of any shape
        ``S``: float32 ``[*S, embedding_dim]``."""
        return self.tables[self.spec[name].table](ids)

    def embed_sequence(self, feature: SequenceFeature, ids):
        """Return the [B, L, d] embeddings and the [B, L] padding mask."""
        return self.embed(feature.name, ids), sequence_mask(ids, feature)

    def field_embeddings(self, features, pool_sequences: bool = True) -> list:
        """One [B, d] vector per feature: sparse lookups, mean-pooled
        sequences (if ``pool_sequences``) and projected dense vectors."""
        fields = [self.embed(f.name, features[f.name]) for f in self.spec.sparse]
        if pool_sequences:
            for f in self.spec.sequences:
                fields.append(masked_mean(*self.embed_sequence(f, features[f.name])))
        fields += [self.dense_projections[f.name](features[f.name]) for f in self.spec.dense]
        return fields

    # -- keras plumbing ---------------------------------------------------
    def call(self, features, training=None):
        """Keras entry point: :meth:`logits` (``training`` is unused)."""
        return self.logits(features)

    def logits(self, features):  # pragma: no cover - abstract
        """Click logits, float32 ``[B]``; raises ``NotImplementedError`` here."""
        raise NotImplementedError

    def predict_proba(self, features, batch_size: int = 1024) -> np.ndarray:
        """Click probabilities, float32 ``[N]``, for a dict of numpy features
        (eager, ``batch_size`` rows at a time); raises ``ValueError`` from
        :meth:`FeatureSpec.validate` for missing or mis-shaped features."""
        features = self.spec.validate(features)
        n = len(next(iter(features.values())))
        out = [
            tf.sigmoid(self({k: v[i : i + batch_size] for k, v in features.items()})).numpy()
            for i in range(0, n, batch_size)
        ]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def build_from_spec(self, batch_size: int = 2) -> "CTRModel":
        """Create the weights by calling the model once on a dummy batch."""
        dummy = {
            name: tf.zeros([batch_size, *self.spec.shape(name)[1:]], dtype=self.spec.dtype(name))
            for name in self.spec.names
        }
        self(dummy)
        return self

    def get_build_config(self):
        """Keras saving: rebuild from the spec (:meth:`build_from_config`)."""
        return {"from_spec": True}

    def build_from_config(self, config):
        """Keras loading: create the weights with :meth:`build_from_spec`."""
        # Weights are created from the spec (dict of int/float inputs); the
        # generic Keras path would build with float inputs and fail.
        self.build_from_spec()

    def get_config(self):
        """Keras saving: the constructor's arguments, the spec as JSON."""
        return {
            "spec": self.spec.to_json(),
            "embedding_dim": self.embedding_dim,
            "hidden_units": list(self.hidden_units),
            "seed": self.seed,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        """Keras loading: the model from :meth:`get_config`'s dict."""
        config = dict(config)
        spec = FeatureSpec.from_json(config.pop("spec"))
        return cls(spec, **config)
