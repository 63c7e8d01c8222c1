"""User-weighted AUC, per-user breakdowns, reports and figures.

Entry points: :func:`lcft_tf.evaluation.summary.summarize` (the numbers)
and :func:`lcft_tf.evaluation.report.write_report` (report.md and the
figures); definitions in docs/evaluation.md. Modules: ``metrics`` (AUC,
eq. 12, bootstrap), ``grouping`` (user groups), ``summary``, ``markdown``,
``figures``, ``report``.
"""
