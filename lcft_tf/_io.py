"""Small file helpers: atomic writes, stale temps, sha256, strict JSON, safetensors reading."""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np


def atomic_write(path: str | os.PathLike, data: bytes, durable: bool = True) -> None:
    """Write via a temp file in the same folder + rename: readers never see a
    half file. The temp is named ``.<name>.<pid>.<random>.tmp`` so that
    :func:`remove_stale_temps` can tell a killed writer's leftover from a live
    writer's file; leftovers of ``path`` are removed first. ``durable``
    flushes the data to disk before the rename (``fsync``); only a file whose
    reader checks it (a fleet chunk, checksummed by its manifest) may skip
    that: after a power loss it may hold zeros, which the check catches."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete temps of :func:`atomic_write` for ``path`` whose writer process
    is gone (a kill mid-write leaves them); a temp of a live process, this one
    included, is kept. Returns the files removed."""
    import psutil

    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)\.[^.]+\.tmp")
    removed = []
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        match = pattern.fullmatch(tmp.name)
        if match is None:
            continue  # not our naming (e.g. an older release's temp): leave it
        pid = int(match.group(1))
        if pid == os.getpid() or psutil.pid_exists(pid):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass  # another process cleaned it first
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data`` (64 characters)."""
    return hashlib.sha256(data).hexdigest()


def json_ready(value):
    """``value`` with plain Python types, the one NaN rule of every JSON this
    package writes: NaN / inf (float or numpy) -> None (strict JSON null);
    numpy scalars -> bool / int / float, numpy arrays -> lists, tuples ->
    lists, dict keys -> str. Anything else (str, None, other objects) is
    returned as is."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def to_json(obj, indent: int | None = 2) -> bytes:
    """Strict JSON of :func:`json_ready` ``(obj)`` (NaN / inf become null,
    which other tools can read); other objects are written as their ``str``."""
    return json.dumps(json_ready(obj), indent=indent, default=str, allow_nan=False).encode()


def parse_safetensors(data: bytes, what: str) -> tuple[dict[str, str], dict]:
    """``(metadata, tensors)`` of safetensors ``data``; anything unreadable
    raises a one-line ``ValueError`` naming ``what`` it should have been."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, OverflowError) as err:
        raise ValueError(f"not a readable {what} ({err})") from None
    n = int.from_bytes(data[:8], "little")  # the JSON header's length (safetensors format)
    header = json.loads(data[8 : 8 + n])
    return header.get("__metadata__") or {}, tensors


def read_safetensors(path: str | os.PathLike, what: str) -> tuple[dict[str, str], dict]:
    """``(metadata, tensors)`` of a safetensors file; a missing file raises
    ``FileNotFoundError``, anything unreadable a one-line ``ValueError``
    naming the file and ``what`` it should have been."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise ValueError(f"{path}: not a readable {what} ({err.strerror})") from None
    try:
        return parse_safetensors(data, what)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
