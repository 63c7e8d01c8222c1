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

MANIFEST_FORMAT = "lcft-fleet-v3"  # v3: per-chunk statistics in each chunk and its manifest entry
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


def encode_chunk(users: tuple[int, int], arrays: Mapping[str, np.ndarray], stats: Mapping[str, Any]) -> bytes:
    """The safetensors bytes of one chunk of users ``[start, stop)``, with its
    statistics (device steps, rolled-back steps, runtimes) in the metadata."""
    meta = {"format": MANIFEST_FORMAT, "users": json.dumps(list(users)), "stats": json.dumps(stats)}
    return safetensors_bytes(dict(arrays), metadata=meta)


def read_chunk(path: Path, expected_sha256: str, users: tuple[int, int]) -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, statistics)`` of one chunk file, checked against its
    manifest entry; raises :class:`ChunkError` (one line naming the file)
    otherwise."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ChunkError(f"{path}: cannot read ({err.strerror})") from None
    if sha256(data) != expected_sha256:
        raise ChunkError(f"{path}: checksum differs from the manifest (damaged or replaced)")
    try:
        meta, arrays = parse_safetensors(data, "chunk")
        stats = json.loads(meta.get("stats", "null"))
    except ValueError as err:
        raise ChunkError(f"{path}: {err}") from None
    if meta.get("format") != MANIFEST_FORMAT or not isinstance(stats, dict):
        raise ChunkError(f"{path}: chunk format {meta.get('format')!r}, this package writes {MANIFEST_FORMAT!r}")
    inside = arrays.get("user")
    if inside is None or (len(inside) and not (users[0] <= inside.min() and inside.max() < users[1])):
        raise ChunkError(f"{path}: holds users outside its manifest range {list(users)}")
    return arrays, stats


def add_stats(total: dict[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """``total`` plus ``part`` (chunk statistics: numbers, or dicts of
    numbers summed key by key)."""
    for key, value in part.items():
        if isinstance(value, Mapping):
            add_stats(total.setdefault(key, {}), value)
        else:
            total[key] = total.get(key, 0) + value
    return total


def check_manifest(manifest: Any, path: Path) -> dict[str, Any]:
    """``manifest`` if it has the shape :func:`lcft_tf.fleet.simulate.simulate`
    writes; raises :class:`ChunkError` naming ``path`` and what is wrong."""
    def bad(what: str) -> ChunkError:
        return ChunkError(f"{path}: {what}")

    if not isinstance(manifest, dict):
        raise bad(f"expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise bad(f"manifest format {manifest.get('format')!r}, this package writes {MANIFEST_FORMAT!r}")
    if not isinstance(manifest.get("hash"), str) or not isinstance(manifest.get("key"), dict):
        raise bad("no hash or key")
    if not _is_range(manifest.get("users")) or not isinstance(manifest.get("chunks"), dict):
        raise bad("no user range or chunk list")
    for name, entry in manifest["chunks"].items():
        if not (isinstance(entry, dict) and _is_range(entry.get("users")) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("stats"), dict)):
            raise bad(f"chunk entry {name!r} needs users [start, stop], sha256 and stats")
    return manifest


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest under ``out_dir``, checked (:func:`check_manifest`);
    raises ``FileNotFoundError`` without one, :class:`ChunkError` when it is
    not valid JSON or not a manifest."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"no fleet results under {out_dir} (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ChunkError(f"{path}: not valid JSON ({err})") from None
    return check_manifest(manifest, path)


def _is_range(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value)
            and 0 <= value[0] <= value[1])


def load_results(out_dir: str | os.PathLike, methods: Iterable[str], coda_methods: Iterable[str] = ()) -> FleetResults:
    """The fleet's results from the chunks its manifest lists (checksummed,
    covering the manifest's user range exactly once); ``stats`` holds the
    chunks' statistics summed (:func:`add_stats`), resumed chunks included.
    ``coda_methods``: the methods whose kept counts are read too. Raises
    ``FileNotFoundError`` without a manifest, :class:`ChunkError` for a
    damaged manifest, a gap or a damaged chunk."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    manifest = read_manifest(out_dir)
    chunks = sorted(manifest["chunks"].items(), key=lambda kv: kv[1]["users"][0])
    expected, stop = manifest["users"]
    for name, entry in chunks:
        if entry["users"][0] != expected:
            break
        expected = entry["users"][1]
    if expected != stop:
        raise ChunkError(f"{manifest_path}: chunks do not cover users {manifest['users']} (gap at user {expected})")
    read = [read_chunk(out_dir / CHUNKS / name, e["sha256"], tuple(e["users"])) for name, e in chunks]
    parts = [arrays for arrays, _ in read]
    stats: dict[str, Any] = {}
    for _, part in read:
        add_stats(stats, part)
    cat = lambda key: np.concatenate([p[key] for p in parts]) if parts else np.zeros(0)
    return FleetResults(
        stats=stats,
        users=cat("user"),
        local_ctr=cat("local_ctr"),
        num_train=cat("num_train"),
        num_test=cat("num_test"),
        labels=cat("labels"),
        predictions={m: cat(f"pred.{m}") for m in methods},
        kept={m: cat(f"kept.{m}") for m in coda_methods},
    )
