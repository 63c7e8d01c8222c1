"""Many phones: the fleet simulation (docs/pipeline.md, docs/scaling.md).

* :mod:`~lcft_tf.fleet.config` -- :class:`FleetConfig`.
* :mod:`~lcft_tf.fleet.executors` -- where tasks run: serial, a process pool, Ray.
* :mod:`~lcft_tf.fleet.worker` -- :class:`DeviceWorker`, one worker's loaded model,
  dataset and CoDA inputs, and the per-user fine-tune of every method.
* :mod:`~lcft_tf.fleet.simulate` -- :func:`simulate`: chunks of users, the
  manifest, resume.
* :mod:`~lcft_tf.fleet.profile` -- :class:`PhaseClock`: where a worker's time goes.

No TensorFlow: workers run the LiteRT interpreter only.
"""
