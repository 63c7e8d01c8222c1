"""The main job: stages from the dataset to the report (docs/pipeline.md).

* :mod:`~lcft_tf.pipeline.experiment` -- :class:`ExperimentConfig`, the stage table, :func:`run_experiment`.
* :mod:`~lcft_tf.pipeline.stages` -- config-hashed stage records and the run lock.
* :mod:`~lcft_tf.pipeline.hard_search` -- the hard-table grid search, which drives devices for the cloud.
"""
