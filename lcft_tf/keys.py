"""Config keys and hashes: what a stage or a fleet manifest was built from.

The pipeline's stages (:mod:`lcft_tf.pipeline.stages`) and the fleet's
manifest (:mod:`lcft_tf.fleet.simulate`) key their outputs by
:func:`config_hash` of a canonical config, and name what changed with
:func:`changed_fields` when a resume finds another key (docs/pipeline.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping


class ConfigChangedError(ValueError):
    """Resume asked for a run whose recorded stage was built with another config."""


def canonical(value: Any) -> Any:
    """A JSON-ready, order-stable form of configs (dataclasses, tuples, paths)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 30 from Python and 30.0 from the command line are one config
    return value


def config_hash(key: Mapping[str, Any]) -> str:
    """16 hex digits of sha256 over the canonical JSON of ``key``."""
    text = json.dumps(canonical(key), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``["cloud.epochs: 2 -> 1", ...]``: the leaves that differ between two keys."""
    old, new = canonical(old), canonical(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            name = f"{prefix}.{k}" if prefix else k
            if k not in old:
                out.append(f"{name}: (absent) -> {json.dumps(new[k], default=str)}")
            elif k not in new:
                out.append(f"{name}: {json.dumps(old[k], default=str)} -> (absent)")
            else:
                out += changed_fields(old[k], new[k], name)
        return out
    if old != new:
        return [f"{prefix or 'value'}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]
    return []


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks; raises ``OSError`` if unreadable."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def digest_files(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """File name -> :func:`file_sha256` of ``directory / name``, sorted by name."""
    return {name: file_sha256(directory / name) for name in sorted(names)}
