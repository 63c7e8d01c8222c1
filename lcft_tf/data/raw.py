"""Reading user-supplied raw files: row errors that name file and line,
optional skipping (counted), and the cache fingerprint of the inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator


class RawDataError(ValueError):
    """A raw file is missing, of the wrong format, or has a malformed row."""


@dataclasses.dataclass
class RowReader:
    """Parses rows with ``parse`` (which raises ``ValueError`` on a bad row);
    bad rows raise :class:`RawDataError` with ``file:line`` or, with
    ``skip_bad_rows``, are skipped and counted in ``skipped``."""

    skip_bad_rows: bool = False
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def rows(
        self,
        path: Path,
        parse: Callable[[str], Any],
        encoding: str = "utf-8",
        header: bool = False,
    ) -> Iterator[Any]:
        with open(path, encoding=encoding, newline="") as f:
            for number, line in enumerate(f, start=1):
                if (header and number == 1) or not line.strip():
                    continue
                try:
                    yield parse(line.rstrip("\r\n"))
                except (ValueError, IndexError, KeyError, SyntaxError) as err:
                    if not self.skip_bad_rows:
                        raise RawDataError(
                            f"{path}:{number}: {err} (pass --skip_bad_rows to skip and count such rows)"
                        ) from None
                    self.skipped[path.name] = self.skipped.get(path.name, 0) + 1


def split_exact(line: str, sep: str, count: int) -> list[str]:
    parts = line.split(sep)
    if len(parts) != count:
        raise ValueError(f"expected {count} columns separated by {sep!r}, got {len(parts)}")
    return parts


def to_int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} is not an integer: {text!r}") from None


def to_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} is not a number: {text!r}") from None
    if value != value:
        raise ValueError(f"{what} is NaN")
    return value


def require_files(directory: Path, names: Iterable[str], dataset: str, where: str) -> None:
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: missing {', '.join(missing)} in {directory} — put the raw files there ({where})"
        )


def fingerprint(files: Iterable[Path], options: dict[str, Any], loader_version: int) -> dict[str, Any]:
    """What a prepared cache depends on: loader + package version, options,
    and each raw file's name, size and modification time."""
    from lcft_tf import __version__

    return {
        "package_version": __version__,
        "loader_version": loader_version,
        "options": options,
        "files": [
            {"name": p.name, "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in sorted(files)
        ],
    }


def cache_dir_for(root: str | os.PathLike, dataset: str, print_: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(print_, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / dataset / digest
