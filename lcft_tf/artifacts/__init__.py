"""The cloud->device contract: every file that crosses the seam, TensorFlow-free.

The cloud (``lcft_tf.cloud``) writes these files and the devices and the
fleet (``lcft_tf.device``, ``lcft_tf.fleet``) read them; neither side
imports the other, both import this package (docs/architecture.md).

* :mod:`~lcft_tf.artifacts.tflite` -- ``<name>.tflite`` + ``<name>.json``:
  format, signature table, metadata reader.
* :mod:`~lcft_tf.artifacts.checkpoint` -- device checkpoints (safetensors).
* :mod:`~lcft_tf.artifacts.pack` -- per-device submodel packs and merge-back updates.
* :mod:`~lcft_tf.artifacts.coda_files` -- CoDA's embeddings, retrieval and classifier folder.
* :mod:`~lcft_tf.artifacts.fleet_chunks` -- fleet result chunks and their manifest.
"""
