"""CoDA's folder, written by the cloud and read by every fleet worker (docs/coda.md).

* ``embeddings.npy``                 [N, D] float32 unit rows, one per sample
* ``retrieval.safetensors``          per user, the retrieved sample indices
  (:class:`Retrieval`: ``ids`` [U, K] int64 global sample indices, -1 padded,
  and ``scores`` [U, K] float32; no pickle)
* ``classifier.tflite`` + ``.json``  the untrained sample classifier

Numpy only: no TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save as safetensors_bytes

from lcft_tf._io import atomic_write, read_safetensors

USER_FEATURE = "user_id"  # left out of the embedding: it identifies the user, not the sample
RETRIEVAL_FORMAT = "lcft-retrieval-v1"
EMBEDDINGS, RETRIEVAL, CLASSIFIER = "embeddings.npy", "retrieval.safetensors", "classifier.tflite"
FILES = (EMBEDDINGS, RETRIEVAL, CLASSIFIER, "classifier.json")


@dataclasses.dataclass
class Retrieval:
    """Per user: the retrieved samples' global indices (best first, -1 padded)."""

    ids: np.ndarray  # [U, K] int64
    scores: np.ndarray  # [U, K] float32, inner product; 0 where ids == -1
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)

    def user(self, u: int) -> np.ndarray:
        """User ``u``'s retrieved sample indices (padding dropped)."""
        row = self.ids[u]
        return row[row >= 0]

    def save(self, path: str | os.PathLike) -> None:
        """Write ``ids`` and ``scores`` as one safetensors file, atomically."""
        meta = {"format": RETRIEVAL_FORMAT, "stats": json.dumps(self.stats, default=str)}
        atomic_write(path, safetensors_bytes({"ids": self.ids, "scores": self.scores}, metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Retrieval":
        """Read a file of :meth:`save`; raises ``ValueError`` (one line naming the
        file) for another format, tensor set, dtype or shape."""
        meta, arrays = read_safetensors(path, "retrieval file")
        if meta.get("format") != RETRIEVAL_FORMAT or set(arrays) != {"ids", "scores"}:
            raise ValueError(f"{path}: not a retrieval file (format {meta.get('format')!r}, tensors {sorted(arrays)})")
        ids, scores = arrays["ids"], arrays["scores"]
        if ids.dtype != np.int64 or ids.ndim != 2 or scores.shape != ids.shape:
            raise ValueError(f"{path}: ids must be int64 [U, K] with scores of the same shape")
        return cls(ids=ids, scores=scores, stats=json.loads(meta.get("stats", "{}")))


def check_retrieval(retrieval: Retrieval, offsets: np.ndarray, split: np.ndarray, where: str) -> None:
    """Refuse a retrieval that does not belong to this dataset or would leak:
    one row per user, ids in ``[0, N)`` (``-1`` padding), and each retrieved
    sample a *train* sample of *another* user (docs/coda.md). ``offsets``
    ``[U + 1]`` and ``split`` ``[U]`` are the dataset's user blocks and the
    index of each user's first test sample. Raises ``ValueError`` naming
    ``where`` and the first offending user."""
    offsets, split, ids = np.asarray(offsets), np.asarray(split), retrieval.ids
    num_users, num_samples = len(offsets) - 1, int(offsets[-1])
    if ids.shape[0] != num_users:
        raise ValueError(f"{where}: {ids.shape[0]} users retrieved for, the dataset has {num_users} (another dataset?)")
    if ids.size and (ids.min() < -1 or ids.max() >= num_samples):
        raise ValueError(f"{where}: sample ids outside [0, {num_samples}) (another dataset?)")
    found = ids >= 0
    owner = np.searchsorted(offsets, np.where(found, ids, 0), side="right") - 1
    own = found & (owner == np.arange(num_users)[:, None])
    test = found & (ids >= split[owner])
    for what, bad in (("the user's own samples", own), ("test samples", test)):
        if bad.any():
            user = int(np.flatnonzero(bad.any(axis=1))[0])
            raise ValueError(f"{where}: user {user} is given {what} (a leak; retrieval must come from other "
                             "users' train samples)")


@dataclasses.dataclass
class CodaInputs:
    """What a fleet worker reads from the CoDA folder."""

    retrieval: Retrieval
    embeddings: np.ndarray  # memory-mapped
    classifier_path: Path

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "CodaInputs":
        """The folder's files (embeddings memory-mapped); raises
        ``FileNotFoundError`` naming every missing file."""
        directory = Path(directory)
        missing = [f for f in FILES if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{directory}: CoDA files missing: {', '.join(missing)}")
        return cls(
            retrieval=Retrieval.load(directory / RETRIEVAL),
            embeddings=np.load(directory / EMBEDDINGS, mmap_mode="r", allow_pickle=False),
            classifier_path=directory / CLASSIFIER,
        )
