"""Fleet results on disk: checksummed chunk files and the manifest that lists them.

A fleet run writes ``<out>/chunks/<start:08d>.safetensors`` per chunk of
users (no pickle) and ``<out>/fleet.json``, the manifest: its key and hash,
the user range, and per chunk its user range and sha256 (docs/pipeline.md).
A chunk counts only once the manifest lists it with a matching checksum.

Chunk tensors: ``user`` [U] int64, ``local_ctr`` [U] float64 (NaN: no train
samples), ``num_train`` / ``num_test`` [U] int64, ``labels`` [S] int8 (test
labels, users' blocks in order), ``pred.<method>`` [S] float32 and, for CoDA
methods, ``kept.<method>`` [U] int64.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from safetensors.numpy import save as safetensors_bytes

from lcft_tf._io import parse_safetensors, sha256

MANIFEST_FORMAT = "lcft-fleet-v2"
MANIFEST = "fleet.json"
CHUNKS = "chunks"


class ChunkError(ValueError):
    """A chunk file that is missing, damaged or not what the manifest says."""


def chunk_name(start: int) -> str:
    """The file name of the chunk whose users start at ``start``."""
    return f"{start:08d}.safetensors"


@dataclasses.dataclass
class FleetResults:
    """Per-user and per-test-sample outputs of a fleet run."""

    users: np.ndarray  # [U] dataset user index
    local_ctr: np.ndarray  # [U] w_i (NaN: no train samples)
    num_train: np.ndarray  # [U]
    num_test: np.ndarray  # [U]
    labels: np.ndarray  # [S] test labels, users' blocks in order
    predictions: dict[str, np.ndarray]  # method -> [S]
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    kept: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # CoDA method -> [U] kept samples


def encode_chunk(users: tuple[int, int], arrays: Mapping[str, np.ndarray]) -> bytes:
    """The safetensors bytes of one chunk of users ``[start, stop)``."""
    return safetensors_bytes(dict(arrays), metadata={"format": MANIFEST_FORMAT, "users": json.dumps(list(users))})


def read_chunk(path: Path, expected_sha256: str, users: tuple[int, int]) -> dict[str, np.ndarray]:
    """The arrays of one chunk file, checked against its manifest entry;
    raises :class:`ChunkError` (one line naming the file) otherwise."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ChunkError(f"{path}: cannot read ({err.strerror})") from None
    if sha256(data) != expected_sha256:
        raise ChunkError(f"{path}: checksum differs from the manifest (damaged or replaced)")
    try:
        _, arrays = parse_safetensors(data, "chunk")
    except ValueError as err:
        raise ChunkError(f"{path}: {err}") from None
    inside = arrays.get("user")
    if inside is None or (len(inside) and not (users[0] <= inside.min() and inside.max() < users[1])):
        raise ChunkError(f"{path}: holds users outside its manifest range {list(users)}")
    return arrays


def load_results(out_dir: str | os.PathLike, methods: Iterable[str], coda_methods: Iterable[str] = ()) -> FleetResults:
    """The fleet's results from the chunks its manifest lists (checksummed,
    covering the manifest's user range exactly once). ``coda_methods``: the
    methods whose kept counts are read too. Raises ``FileNotFoundError``
    without a manifest, :class:`ChunkError` for a gap or a damaged chunk."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no fleet results under {out_dir} (no {MANIFEST})")
    manifest = json.loads(manifest_path.read_text())
    chunks = sorted(manifest["chunks"].items(), key=lambda kv: kv[1]["users"][0])
    expected, stop = manifest["users"]
    for name, entry in chunks:
        if entry["users"][0] != expected:
            break
        expected = entry["users"][1]
    if expected != stop:
        raise ChunkError(f"{manifest_path}: chunks do not cover users {manifest['users']} (gap at user {expected})")
    parts = [read_chunk(out_dir / CHUNKS / name, e["sha256"], tuple(e["users"])) for name, e in chunks]
    cat = lambda key: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)
    return FleetResults(
        users=cat("user"),
        local_ctr=cat("local_ctr"),
        num_train=cat("num_train"),
        num_test=cat("num_test"),
        labels=cat("labels"),
        predictions={m: cat(f"pred.{m}") for m in methods},
        kept={m: cat(f"kept.{m}") for m in coda_methods},
    )
