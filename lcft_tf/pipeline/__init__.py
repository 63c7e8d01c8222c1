"""The main job: stages from the dataset to the report (docs/pipeline.md).

* :mod:`~lcft_tf.pipeline.config` -- :class:`ExperimentConfig`, checked before anything is written.
* :mod:`~lcft_tf.pipeline.stage_table` -- the stages, declared once; one loop builds or reuses them.
* :mod:`~lcft_tf.pipeline.experiment` -- :func:`run_experiment`: run folder, stages, baselines, report.
* :mod:`~lcft_tf.pipeline.stages` -- config-hashed stage records and the run lock.
* :mod:`~lcft_tf.pipeline.hard_search` -- the hard-table grid search, which drives devices for the cloud.
"""
