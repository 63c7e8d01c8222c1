"""Runs you can trust: config-hashed stages and an exclusive lock per run folder.

Every stage of a run (dataset, cloud model, hard search, export, fleet) is
keyed by a hash of its config and of the hashes of the stages it reads
(docs/pipeline.md). A finished stage writes ``stage.json`` beside its
outputs, last: its key, hash, the sha256 of each output file and of the
upstream outputs it consumed. On resume a stage is reused only if all three
still match:

* a different *config* hash refuses the run with a one-line message that
  names the changed fields (nothing is written before every stage was
  checked);
* damaged or missing outputs, or upstream outputs that changed since, are
  rebuilt with a warning naming the file.

:class:`RunLock` holds an ``flock`` on ``<run>/.lock`` for the whole run, so
two runs can never write into one folder; the kernel drops it when the
holder dies, so a killed run never leaves a stale lock.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from lcft_tf._io import atomic_write, to_json
from lcft_tf.keys import canonical, config_hash, digest_files, file_sha256

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"


class RunInUseError(RuntimeError):
    """Another process holds the run folder's lock."""


@dataclasses.dataclass
class Stage:
    """One stage of a run: ``directory/stage.json`` records what built it.

    ``key`` is the config (plus upstream stage hashes); ``inputs`` maps an
    upstream stage name to the digest of the outputs this stage consumes.
    """

    name: str
    directory: Path
    key: dict[str, Any]
    inputs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def hash(self) -> str:
        """16 hex digits of the key's hash (:func:`lcft_tf.keys.config_hash`)."""
        return config_hash(self.key)

    @property
    def record_path(self) -> Path:
        """``<directory>/stage.json``."""
        return self.directory / STAGE_FILE

    def record(self) -> dict[str, Any] | None:
        """The stage record, or None when absent or unreadable (a warning says so)."""
        try:
            record = json.loads(self.record_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError):
            record = None
        if not (isinstance(record, dict) and isinstance(record.get("outputs"), dict)
                and isinstance(record.get("info", {}), dict)):
            log.warning("%s: unreadable stage record, the stage will be rebuilt", self.record_path)
            return None
        return record

    def reusable(self) -> bool:
        """True if the recorded stage has this config, these inputs and intact outputs."""
        record = self.record()
        if record is None:
            return False
        if record.get("hash") != self.hash:
            return False
        if record.get("inputs") != canonical(self.inputs):
            log.warning("%s: its inputs changed since it was built; rebuilding", self.directory)
            return False
        for name, digest in record.get("outputs", {}).items():
            path = self.directory / name
            if not path.is_file() or file_sha256(path) != digest:
                log.warning("%s: missing or damaged, stage %s will be rebuilt", path, self.name)
                return False
        return True

    def outputs(self) -> dict[str, str]:
        """Output file name -> sha256, as recorded."""
        record = self.record() or {}
        return record.get("outputs", {})

    def info(self) -> dict[str, Any]:
        """What the build reported (timings, costs), as recorded."""
        return (self.record() or {}).get("info", {})

    def commit(self, outputs: Iterable[str], info: Mapping[str, Any] | None = None) -> dict[str, str]:
        """Record the finished stage (after its outputs are on disk)."""
        digests = digest_files(self.directory, outputs)
        record = {
            "stage": self.name,
            "hash": self.hash,
            "key": canonical(self.key),
            "inputs": canonical(self.inputs),
            "outputs": digests,
            "info": canonical(dict(info or {})),
        }
        atomic_write(self.record_path, to_json(record))
        return digests


class RunLock:
    """Exclusive, non-blocking lock on a run folder (``flock`` on ``.lock``)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES):
                raise RunInUseError(f"{self.directory} is in use by another run (pid {holder}); wait for it "
                                    "or choose another --name") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
