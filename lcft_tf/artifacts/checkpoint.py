"""The device checkpoint format: a safetensors file of every state tensor.

``__metadata__`` holds ``format`` (:data:`CHECKPOINT_FORMAT`), ``model`` (its
name) and ``state`` (:func:`state_fingerprint` of the model's state layout),
so a checkpoint of another model or export layout is refused on load
(docs/tflite_training.md). The exported metadata's ``checkpoint`` section
carries the same fingerprint, so any host (Kotlin included) can stamp
checkpoints without recomputing it.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from lcft_tf._io import sha256

CHECKPOINT_FORMAT = "lcft-checkpoint-v1"  # safetensors __metadata__["format"] of device checkpoints


def state_fingerprint(tensors: Iterable[Mapping[str, Any]]) -> str:
    """sha256 (64 hex digits) over the sorted ``(name, shape, dtype)`` triples
    of ``tensors`` (each ``{"name", "shape", "dtype"}``): identifies a
    model's checkpoint layout."""
    triples = sorted([t["name"], [int(d) for d in t["shape"]], t["dtype"]] for t in tensors)
    return sha256(json.dumps(triples).encode())


def checkpoint_section(state: list[Mapping[str, Any]]) -> dict[str, Any]:
    """The exported metadata's ``checkpoint`` section for state tensors ``state``."""
    return {
        "format": CHECKPOINT_FORMAT,
        "container": "safetensors",
        "fingerprint": state_fingerprint(state),
        "tensors": [s["name"] for s in state],
    }
