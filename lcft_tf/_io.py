"""Small file helpers shared by export, devices and checkpoints."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write via a temp file in the same folder + rename: readers never see a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_json(obj, indent: int | None = 2) -> bytes:
    """Strict JSON (NaN / inf become null, which other tools can read)."""
    import json
    import math

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(obj), indent=indent, default=str, allow_nan=False).encode()


CHECKPOINT_FORMAT = "lcft-checkpoint-v1"  # safetensors __metadata__["format"] of device checkpoints


def state_fingerprint(tensors) -> str:
    """Identifies a model's checkpoint layout: sha256 over its sorted
    ``(name, shape, dtype)`` triples. Stored in the model's metadata so any
    host (Kotlin included) can stamp checkpoints without recomputing it."""
    import json

    triples = sorted([t["name"], [int(d) for d in t["shape"]], t["dtype"]] for t in tensors)
    return sha256(json.dumps(triples).encode())
