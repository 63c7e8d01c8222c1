"""Reading user-supplied raw files: row errors that name file and line,
optional skipping (counted), transparent gzip, one rule for integer fields,
and the cache fingerprint of the inputs (rules: docs/data.md).

A file that cannot be read as a whole (a truncated or corrupt ``.gz``, a
``.gz`` that is not gzip, an I/O error) is a :class:`RawDataError` naming
the file (and the line being read), never a bare ``EOFError`` /
``zlib.error`` traceback, and is not a bad row: ``skip_bad_rows`` does not
hide it."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import math
import os
import re
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

import numpy as np


class RawDataError(ValueError):
    """A raw file is missing, of the wrong format, damaged, or has a malformed row."""


# Every parsed integer (ids, timestamps) lies in [0, MAX_INT]: it stays exact
# in float64 and fits int64 (a 2**70 timestamp used to overflow numpy).
MAX_INT = 2**53
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Row errors: ValueError covers UnicodeDecodeError (invalid UTF-8);
# RecursionError comes from a pathologically nested JSON / literal line.
ROW_ERRORS = (ValueError, IndexError, KeyError, TypeError, SyntaxError, RecursionError, OverflowError, MemoryError)
# Errors of the byte stream itself, never of one row: a truncated .gz
# (EOFError), corrupt deflate data (zlib.error), a bad gzip header or CRC
# (gzip.BadGzipFile, an OSError), a failing disk (OSError).
STREAM_ERRORS = (OSError, EOFError, zlib.error)
GZIP_MAGIC = b"\x1f\x8b"


def resolve(directory: Path, name: str) -> Path | None:
    """``directory/name`` or its gzipped ``name.gz``, whichever exists."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped when it starts with the gzip magic.

    Raises :class:`RawDataError` naming ``path`` when it cannot be opened,
    or when it is named ``*.gz`` but is not gzip (an uncompressed file under
    a ``.gz`` name would otherwise be read as text, garbage as bad rows).
    Errors while reading the stream are the caller's to convert, with
    :func:`stream_error`."""
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
        if magic == GZIP_MAGIC:
            return gzip.open(path, "rb")
        if path.name.endswith(".gz"):
            plain = path.name[: -len(".gz")]
            raise RawDataError(
                f"{path}: not gzip data (a .gz file must start with the bytes 1f 8b, this one "
                f"{'is empty' if not magic else 'starts with ' + magic.hex(' ')}); if it is already uncompressed, "
                f"rename it to {plain} — a damaged file, not a bad row: --skip_bad_rows cannot skip it"
            )
        return open(path, "rb")
    except STREAM_ERRORS as err:
        raise stream_error(path, err) from err


def stream_error(path: Path, err: BaseException, line: int | None = None) -> RawDataError:
    """The one-line :class:`RawDataError` for ``err`` (one of ``STREAM_ERRORS``)
    raised while reading ``path`` (at 1-based ``line`` when known): it names
    the file, says what broke and that ``--skip_bad_rows`` cannot skip it."""
    where = f"{path}:{line}" if line else str(path)
    if isinstance(err, EOFError):
        what = "the compressed data ends early (truncated .gz?)"
    elif isinstance(err, (zlib.error, gzip.BadGzipFile)):
        what = f"corrupt gzip data ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
    else:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else (str(err) or type(err).__name__)
        what = f"cannot read: {reason.splitlines()[0]}"
    return RawDataError(
        f"{where}: {what} — a damaged file, not a bad row: --skip_bad_rows cannot skip it; "
        "re-download or re-compress the file"
    )


@dataclasses.dataclass
class RowReader:
    """Parses rows with ``parse`` (which raises on a bad row); bad rows raise
    :class:`RawDataError` with ``file:line`` or, with ``skip_bad_rows``, are
    skipped and counted in ``skipped``. Lines are decoded one by one so an
    invalid byte is a bad row like any other."""

    skip_bad_rows: bool = False
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)

    def rows(
        self,
        path: Path,
        parse: Callable[[str], Any],
        encoding: str = "utf-8",
        header: tuple[str, ...] | None = None,
        sep: str = ",",
    ) -> Iterator[Any]:
        """``parse(line)`` of every non-blank line after the checked header
        (``sep``-separated), decoded with ``encoding``. Raises
        :class:`RawDataError` for a bad header, a bad row unless skipping, or
        a damaged file (truncated / corrupt / not gzip, I/O error: named with
        the line being read, also when skipping)."""
        with open_binary(path) as f:
            number = 0
            while True:
                try:
                    raw = f.readline()
                except STREAM_ERRORS as err:
                    raise stream_error(path, err, number + 1) from err
                if not raw:
                    break
                number += 1
                if number == 1 and header is not None:
                    check_header(path, raw, header, sep, encoding)
                    continue
                try:
                    line = raw.decode(encoding)
                    if not line.strip():
                        continue
                    value = parse(line.rstrip("\r\n"))
                except ROW_ERRORS as err:
                    if not self.skip_bad_rows:
                        check_stream(path, number)  # corrupt gzip data decodes to garbage rows: say so instead
                    self.bad_row(path, number, describe(err))
                    continue
                yield value

    def bad_row(self, path: Path, number: int, message: str) -> None:
        """Count the bad row, or raise :class:`RawDataError` ``path:number: message``."""
        if not self.skip_bad_rows:
            raise RawDataError(f"{path}:{number}: {message} (pass --skip_bad_rows to skip and count such rows)")
        self.skipped[path.name] = self.skipped.get(path.name, 0) + 1


def describe(err: BaseException) -> str:
    """A one-line reason for a row error (invalid bytes and deep nesting named)."""
    if isinstance(err, RecursionError):
        return "nested too deeply to parse"
    if isinstance(err, UnicodeDecodeError):
        return f"invalid {err.encoding} byte {err.object[err.start:err.start + 1]!r} at column {err.start + 1}"
    return str(err) or type(err).__name__


def check_header(path: Path, raw: bytes, expected: tuple[str, ...], sep: str, encoding: str = "utf-8") -> None:
    """A csv must start with its header, matched by column names: a file
    without one would otherwise silently lose its first data row. Raises
    :class:`RawDataError` ``path:1: ...`` otherwise."""
    got = raw.decode(encoding, errors="replace").strip().lstrip("\ufeff")
    if [c.strip() for c in got.split(sep)] != list(expected):
        check_stream(path, 1)
        raise RawDataError(f"{path}:1: expected the header {sep.join(expected)!r}, got {got[:80]!r}")


def check_stream(path: Path, line: int) -> None:
    """Reads a gzipped ``path`` to its end and raises :func:`stream_error`
    (at ``line``, where rows started to look bad) if the gzip stream is
    truncated or corrupt: damaged deflate data often decodes to garbage rows
    before the CRC check at the end fails, and the damage, not the row, is
    what to report. Plain files are not re-read. Called on error paths only."""
    with open_binary(path) as f:
        if not isinstance(f, gzip.GzipFile):
            return
        try:
            while f.read(1 << 20):
                pass
        except STREAM_ERRORS as err:
            raise stream_error(path, err, line) from err


def read_header(path: Path) -> bytes:
    """The first line's raw bytes (gunzipped), for :func:`check_header`.
    Raises :class:`RawDataError` ``path:1: ...`` when the file is damaged."""
    with open_binary(path) as f:
        try:
            return f.readline()
        except STREAM_ERRORS as err:
            raise stream_error(path, err, 1) from err


def split_exact(line: str, sep: str, count: int) -> list[str]:
    """``line`` split on ``sep``; raises ``ValueError`` unless there are ``count`` columns."""
    parts = line.split(sep)
    if len(parts) != count:
        raise ValueError(f"expected {count} columns separated by {sep!r}, got {len(parts)}")
    return parts


def to_int(text: str, what: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """The one integer rule: an integer literal (``3``, not ``3.0`` or
    ``1e20``) in ``[minimum, maximum]``."""
    if not _INTEGER.fullmatch(text):
        raise ValueError(f"{what} is not an integer literal: {text[:40]!r}")
    return check_int(int(text), what, minimum, maximum)


def check_int(value: Any, what: str, minimum: int = 0, maximum: int = MAX_INT) -> int:
    """The same rule for values already parsed (JSON): an ``int``, not a float
    or bool, in ``[minimum, maximum]``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r:.40}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{what} {value} outside [{minimum}, {maximum}]")
    return value


def to_float(text: str, what: str) -> float:
    """A finite number that also fits float32 (``1e39`` would become inf)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} is not a number: {text[:40]!r}") from None
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        raise ValueError(f"{what} is not finite in float32: {text[:40]!r}")
    return value


def loadtxt(path: Path, dtype: list[tuple[str, str]], sep: str = ",") -> np.ndarray | None:
    """numpy's C parser for the big files (header already checked), or None
    when any row fails its dtype or the stream breaks (a truncated .gz): the
    caller's row loop then says where (:meth:`RowReader.rows` raises
    :class:`RawDataError` with the line). Raises :class:`RawDataError` when
    the file cannot be opened or is a ``.gz`` that is not gzip."""
    with open_binary(path) as f:
        try:
            return np.loadtxt(io.TextIOWrapper(f, "utf-8"), delimiter=sep, skiprows=1, ndmin=1, dtype=dtype)
        except (ValueError, *STREAM_ERRORS):
            return None


def require_files(directory: Path, names: Iterable[str], dataset: str, where: str) -> list[Path]:
    """The paths of ``names`` (each possibly ``.gz``); all missing ones named in one error."""
    found = {n: resolve(directory, n) for n in names}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: missing {', '.join(missing)} (or .gz) in {directory} — put the raw files there ({where})"
        )
    return [p for p in found.values() if p is not None]


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
    """``root/dataset/<16 hex of sha256 of the fingerprint>`` (docs/data.md)."""
    digest = hashlib.sha256(json.dumps(print_, sort_keys=True).encode()).hexdigest()[:16]
    return Path(root) / dataset / digest


def check_split_options(options: Any, splits: tuple[str, ...]) -> None:
    """The option rules the loaders share (docs/data.md): ``split`` one of
    ``splits``, ``test_fraction`` in (0, 1), ``cut_timestamp`` an integer in
    ``[0, MAX_INT]``, ``min_train`` / ``min_test`` / ``history_length``
    integers >= 1. Raises ``ValueError`` naming the first bad field."""
    if options.split not in splits:
        raise ValueError(f"split must be {', '.join(splits[:-1])} or {splits[-1]}, got {options.split!r}")
    if not 0.0 < options.test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {options.test_fraction!r}")
    check_int(options.cut_timestamp, "cut_timestamp")
    for name in ("min_train", "min_test", "history_length"):
        if check_int(getattr(options, name), name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(options, name)}")
