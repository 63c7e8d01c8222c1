"""``report.md`` and the four figures of a fleet run (paper Table 2, Figs. 1-3).

:func:`write_report` renders a summary (from
:func:`lcft_tf.evaluation.summary.summarize`) as ``report.md`` and the
figures. The work is done by :mod:`~lcft_tf.evaluation.grouping` (user
groups), :mod:`~lcft_tf.evaluation.summary` (the numbers),
:mod:`~lcft_tf.evaluation.markdown` (the text) and
:mod:`~lcft_tf.evaluation.figures` (the PNGs). Definitions: docs/evaluation.md.

The other names imported here are re-exported for the callers that still
import them from this module; new code imports them from their own module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from lcft_tf._io import atomic_write
from lcft_tf.evaluation.figures import figure_gain_by_group, figure_user_changes, plot_figures
from lcft_tf.evaluation.grouping import Grouping, local_sample_groups
from lcft_tf.evaluation.markdown import auc_table, render_markdown
from lcft_tf.evaluation.summary import summarize
from lcft_tf.methods import label as method_label

__all__ = [
    "write_report",
    # re-exported from their own modules (see the module docstring)
    "Grouping",
    "auc_table",
    "figure_gain_by_group",
    "figure_user_changes",
    "local_sample_groups",
    "method_label",
    "summarize",
]


def write_report(out_dir: str | os.PathLike, title_info: Mapping[str, Any], summary: Mapping[str, Any]) -> list[Path]:
    """Write ``report.md`` and the figures under ``out_dir`` (created if
    needed); return their paths, ``report.md`` first, then the figures in
    order (:func:`~lcft_tf.evaluation.figures.plot_figures`: Fig. 1 always,
    Figs. 2-4 when the summary has a comparison).

    ``summary``: the dict of :func:`~lcft_tf.evaluation.summary.summarize`.
    ``title_info``: ``title`` (heading), optional ``dataset`` (name in the
    table) and ``notes`` (list of paragraphs under the heading: data, config).
    Files are written atomically. Raises ``OSError`` if they cannot be
    written. Definitions: docs/evaluation.md.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = plot_figures(summary, out_dir)
    path = out_dir / "report.md"
    atomic_write(path, render_markdown(title_info, summary, [p.name for p in figures]).encode())
    return [path, *figures]
