"""The training loss shared by cloud training and the on-device ``train`` signature.

:func:`corrected_log_loss` is the loss; :class:`CorrectedLogLoss` is its
Keras face, registered here so that ``import lcft_tf.models`` is all a saved
cloud model needs to load (``keras.models.load_model``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Logit bound used only for targets outside [0, 1] (see corrected_log_loss).
LOGIT_BOUND = 10.0


@tf.custom_gradient
def corrected_log_loss(logits: tf.Tensor, targets: tf.Tensor):
    """Per-sample log loss on logits, well defined for targets outside [0, 1].

    Written in logit form, ``softplus(z) - t * z``, whose gradient is
    ``sigmoid(z) - t`` — linear in the target, which is what makes LCFT's
    mean-matching argument hold (docs/loss_and_correction.md). For ``t`` in [0, 1] this is
    the usual binary cross-entropy. Soft2 can give ``t > 1`` or ``t < 0``,
    where the loss has no minimum and would drive the logit to infinity; for
    those samples only, the logit is capped at ``±LOGIT_BOUND`` inside the
    loss (probability 4.5e-5 .. 0.99995): the value is computed at the capped
    logit and the gradient is zero once the cap is reached. Below the cap the
    gradient is exactly ``sigmoid(z) - t``, so the correction is not weakened
    (clipping targets to [0, 1] would turn soft2 into plain Local for half
    the users).
    """
    above = tf.logical_and(targets > 1.0, logits >= LOGIT_BOUND)
    below = tf.logical_and(targets < 0.0, logits <= -LOGIT_BOUND)
    capped = tf.where(above, LOGIT_BOUND, tf.where(below, -LOGIT_BOUND, logits))
    # Stable softplus from builtins: max(z, 0) + log(1 + exp(-|z|)).
    softplus = tf.maximum(capped, 0.0) + tf.math.log(1.0 + tf.exp(-tf.abs(capped)))
    loss = softplus - targets * capped

    def grad(dy):
        g = tf.sigmoid(logits) - targets
        return dy * tf.where(tf.logical_or(above, below), tf.zeros_like(g), g), tf.zeros_like(targets)

    return loss, grad


def weighted_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``sum(w * x) / sum(w)``; 0 when every weight is 0 (an all-padding batch)."""
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1e-12)


@keras.saving.register_keras_serializable(package="lcft_tf")
class CorrectedLogLoss(keras.losses.Loss):
    """Keras face of :func:`corrected_log_loss` (the device's loss), so cloud
    and device optimise the same objective."""

    def __init__(self, name: str = "corrected_log_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        """Per-sample loss, float32 ``[B]``, of logits ``y_pred`` against
        (possibly corrected) targets ``y_true``."""
        return corrected_log_loss(tf.reshape(y_pred, [-1]), tf.cast(tf.reshape(y_true, [-1]), tf.float32))
