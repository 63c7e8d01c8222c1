"""User-weighted AUC, per-user breakdowns, reports and figures.

Entry points: :func:`lcft_tf.evaluation.report.summarize` and
:func:`lcft_tf.evaluation.report.write_report`; definitions in docs/evaluation.md.
"""
