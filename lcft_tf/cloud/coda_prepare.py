"""The cloud's side of CoDA for one cloud model: sample embeddings, coarse
matching (retrieval) and the sample classifier every device starts from
(docs/coda.md). Writes the folder :mod:`lcft_tf.artifacts.coda_files`
describes, which the fleet's workers read (memory-mapped).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from lcft_tf import checks
from lcft_tf.artifacts.coda_files import CLASSIFIER, EMBEDDINGS, RETRIEVAL
from lcft_tf.cloud.retrieval import RetrievalConfig, dataset_embeddings, retrieval_precision, retrieve
from lcft_tf.data.dataset import CTRDataset

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """The on-device sample classifier as exported (logistic regression by
    default; docs/coda.md).

    Raises ``ValueError`` on construction for a hidden layer width or a
    batch size that is not an integer >= 1, or a learning rate that is not
    finite and >= 0 as a float32 (:func:`lcft_tf.checks.learning_rate`).
    """

    hidden_units: tuple[int, ...] = dataclasses.field(
        default=(), metadata={"help": "CoDA: hidden layer widths of the sample classifier (integers >= 1); empty: logistic regression"})
    learning_rate: float = dataclasses.field(
        default=0.5, metadata={"help": "CoDA: the classifier file's default learning rate (--coda_classifier_lr "
                                       "overrides it on the device)"})
    batch_size: int = dataclasses.field(
        default=32, metadata={"help": "CoDA: static batch of the classifier's train signature (rows per step), an integer >= 1"})

    def __post_init__(self) -> None:
        if isinstance(self.hidden_units, str) or not isinstance(self.hidden_units, (tuple, list)):
            raise ValueError(f"hidden_units must be a list of integers >= 1 (empty: logistic regression), "
                             f"got {self.hidden_units!r}")
        for units in self.hidden_units:
            checks.integer(units, "hidden_units", 1)
        # Checked here, not first when the classifier file is exported after the cloud stage.
        checks.learning_rate(self.learning_rate)
        checks.integer(self.batch_size, "batch_size", 1)


def prepare_coda(
    model,
    dataset: CTRDataset,
    directory: str | os.PathLike,
    retrieval: RetrievalConfig = RetrievalConfig(),
    classifier: ClassifierConfig = ClassifierConfig(),
    seed: int = 0,
) -> dict[str, Any]:
    """Write the three CoDA files for ``model`` into ``directory``; returns
    the cost (seconds, peak memory) and the retrieval's precision
    diagnostics (:func:`retrieval_precision`) for the report."""
    from lcft_tf.cloud.export import ExportConfig, export_tflite  # TensorFlow: the cloud side only
    from lcft_tf.models.sample_classifier import build_sample_classifier

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    embeddings = dataset_embeddings(model, dataset, retrieval.fields)
    np.save(directory / EMBEDDINGS, embeddings, allow_pickle=False)
    embedding_seconds = time.perf_counter() - started
    result = retrieve(embeddings, dataset.offsets, dataset.split, dataclasses.replace(retrieval, seed=seed),
                      dataset.local_start)
    result.stats["precision"] = retrieval_precision(dataset, result.ids, seed=seed)  # recorded per run
    result.save(directory / RETRIEVAL)
    clf = build_sample_classifier(embeddings.shape[1], hidden_units=classifier.hidden_units, seed=seed)
    export_tflite(clf, directory / CLASSIFIER,
                  ExportConfig(batch_size=classifier.batch_size, learning_rate=classifier.learning_rate))
    stats = {"embedding_seconds": round(embedding_seconds, 2), "embedding_dim": int(embeddings.shape[1]),
             "retrieval": result.stats, "seconds": round(time.perf_counter() - started, 2)}
    log.info("coda: embeddings %.1f s, retrieval %s", embedding_seconds, result.stats)
    return stats
