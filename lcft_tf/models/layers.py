"""Layers whose forward *and gradient* graphs convert to TFLite builtin ops.

Why these exist (docs/tflite_training.md): TF's stock gradients of ReLU, strided
slices and Keras 3's GRU need the Flex delegate, which the plain LiteRT
interpreter does not ship. Everything here avoids them: custom-gradient
activations, ``tf.split`` / ``tf.gather`` instead of slicing, explicit
reshapes instead of broadcasting matmuls.

Every sublayer gets an explicit name derived from its owner's name (e.g.
``deep_hidden0``): exported state names come from variable paths, and Keras's
auto-numbering (``linear_3`` vs ``linear_24``) would make them depend on what
else the process built (docs/tflite_training.md).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from lcft_tf.features import SequenceFeature


@tf.custom_gradient
def relu(x: tf.Tensor):
    """ReLU with a gradient built from builtins (stock ``ReluGrad`` needs Flex)."""

    def grad(dy):
        return dy * tf.cast(x > 0, dy.dtype)

    return tf.maximum(x, 0.0), grad


@tf.custom_gradient
def sigmoid(x: tf.Tensor):
    """Sigmoid whose gradient is ``y * (1 - y)`` in plain ops (no ``SigmoidGrad``)."""
    y = tf.sigmoid(x)

    def grad(dy):
        return dy * y * (1.0 - y)

    return y, grad


@tf.custom_gradient
def tanh(x: tf.Tensor):
    """Tanh whose gradient is ``1 - y^2`` in plain ops (no ``TanhGrad``)."""
    y = tf.tanh(x)

    def grad(dy):
        return dy * (1.0 - y * y)

    return y, grad


def _initializer(seed: int | None, stddev: float | None = None):
    if stddev is not None:
        return keras.initializers.RandomNormal(stddev=stddev, seed=seed)
    return keras.initializers.GlorotUniform(seed=seed)


class Embedding(keras.layers.Layer):
    """Embedding table with one extra out-of-vocabulary row.

    Ids outside ``[0, vocab_size)`` read row ``vocab_size`` instead of
    failing the gather inside the interpreter (docs/tflite_training.md).
    """

    def __init__(self, vocab_size: int, dim: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.dim = dim
        self.embeddings = self.add_weight(
            shape=(vocab_size + 1, dim),
            initializer=_initializer(seed, stddev=0.05),
            name="embeddings",
        )

    def call(self, ids):
        """Rows for int ``ids`` of any shape ``S``: float32 ``[*S, dim]``; an id
        outside ``[0, vocab_size)`` reads the extra out-of-vocabulary row."""
        oov = tf.logical_or(ids < 0, ids >= self.vocab_size)
        ids = tf.where(oov, tf.fill(tf.shape(ids), self.vocab_size), ids)
        return tf.gather(self.embeddings, ids)


class Linear(keras.layers.Layer):
    """``x @ W + b`` over the last axis; rank-3 inputs are reshaped to rank 2
    so the gradient is a plain matmul (no broadcasting batch-matmul)."""

    def __init__(self, units: int, activation: str | None = None, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if activation not in (None, "relu"):
            raise ValueError(f"unsupported activation {activation!r}")
        self.units = units
        self.activation = activation
        self.seed = seed

    def build(self, input_shape):
        """Create ``kernel`` ``[d_in, units]`` and ``bias`` ``[units]``."""
        self.kernel = self.add_weight(
            shape=(int(input_shape[-1]), self.units), initializer=_initializer(self.seed), name="kernel"
        )
        self.bias = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, x):
        """float32 ``[B, d_in]`` or ``[B, L, d_in]`` -> ``[B, units]`` or ``[B, L, units]``."""
        shape = x.shape
        if len(shape) == 3:
            x = tf.reshape(x, [-1, shape[-1]])
        y = tf.matmul(x, self.kernel) + self.bias
        if self.activation == "relu":
            y = relu(y)
        if len(shape) == 3:
            y = tf.reshape(y, [-1, shape[1], self.units])
        return y


class MLP(keras.layers.Layer):
    """ReLU hidden layers followed by a linear output of ``out_units``."""

    def __init__(self, hidden_units, out_units: int | None = 1, seed: int | None = None, **kwargs):
        if not kwargs.get("name"):
            raise ValueError("MLP needs an explicit name (its variable names derive from it)")
        super().__init__(**kwargs)
        self.hidden = [
            Linear(u, "relu", seed=_offset(seed, i), name=f"{self.name}_hidden{i}") for i, u in enumerate(hidden_units)
        ]
        self.out = Linear(out_units, seed=_offset(seed, len(self.hidden)), name=f"{self.name}_out") if out_units else None

    def call(self, x):
        """float32 ``[..., d_in]`` -> ``[..., out_units]`` (the last hidden
        width when ``out_units`` is None)."""
        for layer in self.hidden:
            x = layer(x)
        return self.out(x) if self.out is not None else x


def _offset(seed: int | None, i: int) -> int | None:
    return None if seed is None else seed + 1000 * (i + 1)


def sequence_mask(ids, feature: SequenceFeature):
    """1.0 where a sequence position holds a real id, 0.0 at padding."""
    return tf.cast(tf.not_equal(ids, feature.padding_id), tf.float32)


def masked_mean(values, mask):
    """Mean of ``values`` [B, L, d] over the unmasked positions (0 if none)."""
    summed = tf.reduce_sum(values * tf.expand_dims(mask, -1), axis=1)
    count = tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)
    return summed / count


class AttentionPooling(keras.layers.Layer):
    """DIN's local activation unit: score each key against the query with a
    small MLP over ``[q, k, q - k, q * k]``, softmax over the real positions,
    return the weighted sum of the keys (zeros for an empty sequence)."""

    def __init__(self, hidden_units=(32,), seed: int | None = None, **kwargs):
        if not kwargs.get("name"):
            raise ValueError("AttentionPooling needs an explicit name (its variable names derive from it)")
        super().__init__(**kwargs)
        self.scorer = MLP(hidden_units, out_units=1, seed=seed, name=f"{self.name}_scorer")

    def call(self, query, keys, mask):
        """``query`` float32 ``[B, d]``, ``keys`` ``[B, L, d]``, ``mask``
        ``[B, L]`` (1 real, 0 padding) -> pooled keys ``[B, d]``."""
        length = keys.shape[1]
        q = tf.tile(tf.expand_dims(query, 1), [1, length, 1])
        scores = tf.reshape(self.scorer(tf.concat([q, keys, q - keys, q * keys], axis=-1)), [-1, length])
        weights = tf.nn.softmax(scores + (mask - 1.0) * 1e9, axis=-1) * mask
        return tf.reduce_sum(keys * tf.expand_dims(weights, -1), axis=1)


class GRU(keras.layers.Layer):
    """A GRU unrolled over a fixed length with ``tf.split`` (Keras 3's GRU
    needs ``StridedSliceGrad``). Steps run from the last position to the
    first, i.e. oldest to newest for most-recent-first histories; padded
    steps keep the previous state. Returns the state after every step,
    aligned with the input positions: [B, L, units]."""

    def __init__(self, units: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.seed = seed

    def build(self, input_shape):
        """Create ``kernel`` ``[d, 3 units]``, ``recurrent_kernel`` ``[units, 3 units]``, ``bias``."""
        d = int(input_shape[-1])
        self.kernel = self.add_weight(shape=(d, 3 * self.units), initializer=_initializer(self.seed), name="kernel")
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, 3 * self.units), initializer=_initializer(_offset(self.seed, 0)), name="recurrent_kernel"
        )
        self.bias = self.add_weight(shape=(3 * self.units,), initializer="zeros", name="bias")

    def call(self, inputs, mask):
        """``inputs`` float32 ``[B, L, d]``, ``mask`` ``[B, L]`` -> states ``[B, L, units]``."""
        length = inputs.shape[1]
        xs = tf.split(inputs, length, axis=1)
        ms = tf.split(mask, length, axis=1)
        h = tf.zeros([tf.shape(inputs)[0], self.units])
        states = [None] * length
        for t in reversed(range(length)):
            x = tf.reshape(xs[t], [-1, inputs.shape[-1]])
            xz, xr, xn = tf.split(tf.matmul(x, self.kernel) + self.bias, 3, axis=-1)
            hz, hr, hn = tf.split(tf.matmul(h, self.recurrent_kernel), 3, axis=-1)
            z = sigmoid(xz + hz)
            r = sigmoid(xr + hr)
            n = tanh(xn + r * hn)
            new_h = (1.0 - z) * n + z * h
            h = ms[t] * new_h + (1.0 - ms[t]) * h
            states[t] = h
        return tf.stack(states, axis=1)


class LinearTerms(keras.layers.Layer):
    """The first-order part of a CTR model: a scalar weight per id (mean over
    a sequence's real ids) and a linear map of dense features.

    ``tie_sequences`` (default) reads a sequence feature's weights from its
    embedding table's column, the one the candidate id uses; untied, each
    sequence feature has its own scalar table (``lin_<feature>``), so "item
    j in the click history" and "item j as the candidate" get separate
    weights (docs/cloud_base.md: untied LR +0.005 validation AUC on
    MovieLens-100k)."""

    def __init__(self, spec, seed: int | None = None, tie_sequences: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.tie_sequences = bool(tie_sequences)
        used = {f.table for f in spec.sparse} | ({f.table for f in spec.sequences} if self.tie_sequences else set())
        self.weights_by_table = {
            table: Embedding(size, 1, seed=_offset(seed, i), name=f"lin_{table}")
            for i, (table, size) in enumerate(sorted(spec.tables.items())) if table in used
        }
        # Own tables of untied sequence features, still indexed by their embedding table's ids (submodels read them).
        self.weights_by_feature = {} if self.tie_sequences else {
            f.name: Embedding(spec.tables[f.table], 1, seed=_offset(seed, 200 + i), name=f"lin_{f.name}")
            for i, f in enumerate(spec.sequences)
        }
        self.dense = {f.name: Linear(1, seed=_offset(seed, 100 + i), name=f"lin_{f.name}") for i, f in enumerate(spec.dense)}

    def call(self, features):
        """The first-order logit, float32 ``[B]``, of a feature dict."""
        terms = []
        for f in self.spec.sparse:
            terms.append(self.weights_by_table[f.table](features[f.name]))
        for f in self.spec.sequences:
            ids = features[f.name]
            weights = self.weights_by_feature[f.name] if f.name in self.weights_by_feature else self.weights_by_table[f.table]
            terms.append(masked_mean(weights(ids), sequence_mask(ids, f)))
        for f in self.spec.dense:
            terms.append(self.dense[f.name](features[f.name]))
        return tf.reshape(tf.add_n(terms), [-1])
