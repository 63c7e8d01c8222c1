"""Benchmarks: ``python -m lcft_tf benchmark --suite <name>``, one module per suite.

- :mod:`~lcft_tf.benchmarks.interpreter` (``--suite interpreter``, the
  default): LiteRT signatures vs the same step in TF: latency, file size,
  wrapper overhead, interpreter memory (:class:`BenchmarkConfig`).
- :mod:`~lcft_tf.benchmarks.fleet` (``--suite fleet``): the fleet at
  MovieLens-20M scale vs the naive Keras fine-tune and vs tuned TF graphs in
  one worker (:class:`FleetBenchmarkConfig`); also the cloud side both
  fleet-scale suites start from (:class:`CloudSideConfig`).
- :mod:`~lcft_tf.benchmarks.coda` (``--suite coda``): retrieval cost, the
  fleet with CoDA vs Local alone, the sample classifier in LiteRT
  (:class:`CodaBenchmarkConfig`).
- :mod:`~lcft_tf.benchmarks.vocab` (``--suite vocab``): the full model vs
  the per-device submodel at growing item vocabularies
  (:class:`VocabBenchmarkConfig`).
- :mod:`~lcft_tf.benchmarks.timing`: what the suites measure with (latency
  statistics, interleaved timing, timed calls, interpreter memory).

Each suite's config dataclass lives in its module; timings are machine
dependent and nothing here asserts them.
"""
