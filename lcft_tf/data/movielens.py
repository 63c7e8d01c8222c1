"""MovieLens from the raw files a user already has (no download).

Formats, detected from the files present in ``data_dir``:

* ``csv`` — ml-20m, ml-25m, ml-latest, ml-latest-small: ``ratings.csv``,
  ``movies.csv`` and, if present, ``genome-scores.csv`` (the 1,128-d tag
  genome; ml-latest-small has none);
* ``dat`` — ml-1m: ``ratings.dat`` / ``movies.dat`` (``::``-separated, latin-1);
* ``100k`` — ml-100k: ``u.data`` (tab-separated) and ``u.item`` (pipe-separated,
  19 genre flags).

Rules (paper §5.1): a rating >= 4 is a click. Per sample: ``user_id``, the
candidate ``item_id`` and ``category`` (its first listed genre), ``pos_hist`` /
``neg_hist`` = the user's previous positively / negatively rated movies with a
strictly earlier timestamp (most recent first, 0-padded), and ``genome`` (the
candidate's tag-genome vector) when genome files are present.

Split: ``global`` — train ``timestamp <= cut`` (default the paper's
1,225,642,324), test after; ``per_user`` — each user's last ``test_fraction``
of ratings by time is test, ratings of the same second never split
(:func:`~lcft_tf.data.dataset.per_user_split`). ``auto`` (default) is ``global`` for data with a
genome (ml-20m / ml-25m, the paper's setting) and ``per_user`` otherwise
(ml-100k, ml-1m, ml-latest-small, where a global cut leaves few users with
data on both sides). A user is kept when they have at least ``min_train``
train and ``min_test`` test samples.

Every file may be gzipped (``ratings.csv.gz``). csv files must start with
their header; ids and timestamps are integer literals; genome tag ids are
bounded by ``genome-tags.csv`` (or ``MAX_GENOME_TAGS``); docs/data.md.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from lcft_tf import checks
from lcft_tf.data.dataset import (
    CTRDataset,
    category_ids,
    click_history_features,
    click_history_spec,
    split_samples,
    user_index,
    user_offsets,
    split_accounting,
    users_with_enough_samples,
)
from lcft_tf.data.raw import (
    MAX_INT,
    RawDataError,
    RowReader,
    check_header,
    check_split_options,
    loadtxt,
    read_header,
    resolve,
    split_exact,
    to_float,
    to_int,
)
from lcft_tf.features import DenseFeature, FeatureSpec

log = logging.getLogger(__name__)

PAPER_CUT = 1_225_642_324
PAPER_ML20M = {"users": 5677, "samples": 3_229_373, "global_ctr": 0.51}
LOADER_VERSION = 2
GENRES_100K = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir Horror "
    "Musical Mystery Romance Sci-Fi Thriller War Western"
).split()
FILES = {
    "csv": ("ratings.csv", "movies.csv"),
    "dat": ("ratings.dat", "movies.dat"),
    "100k": ("u.data", "u.item"),
}
WHERE = (
    "ml-20m/ml-25m/ml-latest: ratings.csv, movies.csv [, genome-scores.csv]; ml-1m: ratings.dat, movies.dat; "
    "ml-100k: u.data, u.item"
)


HEADERS = {
    "ratings.csv": ("userId", "movieId", "rating", "timestamp"),
    "movies.csv": ("movieId", "title", "genres"),
    "genome-scores.csv": ("movieId", "tagId", "relevance"),
    "genome-tags.csv": ("tagId", "tag"),
}
MAX_GENOME_TAGS = 10_000  # tag ids bound without genome-tags.csv (ml-20m / ml-25m have 1,128)


@dataclasses.dataclass(frozen=True)
class MovieLensOptions:
    """How MovieLens raw files become a dataset (rules: docs/data.md "MovieLens").

    Raises ``ValueError`` on construction for an unknown split, a
    ``test_fraction`` outside (0, 1) (NaN, inf and non-numbers included), a
    non-integer / out-of-range count, or a switch that is not a bool.
    """

    split: str = dataclasses.field(
        default="auto",
        metadata={"help": "auto | global | per_user; auto is global with a genome (the paper's ml-20m), else per_user."},
    )
    cut_timestamp: int = dataclasses.field(
        default=PAPER_CUT, metadata={"help": "Global split: train is timestamp <= cut (seconds; the paper's cut)."}
    )
    test_fraction: float = dataclasses.field(
        default=0.2, metadata={"help": "Per-user split: each user's last fraction of ratings that is test."}
    )
    min_train: int = dataclasses.field(default=5, metadata={"help": "Fewest train samples a kept user has."})
    min_test: int = dataclasses.field(default=1, metadata={"help": "Fewest test samples a kept user has."})
    history_length: int = dataclasses.field(default=20, metadata={"help": "Length of pos_hist / neg_hist."})
    use_genome: bool = dataclasses.field(
        default=True, metadata={"help": "Add the tag-genome feature when genome-scores.csv is there."}
    )
    skip_bad_rows: bool = dataclasses.field(
        default=False, metadata={"help": "Skip and count malformed rows instead of stopping."}
    )

    def __post_init__(self) -> None:
        checks.number(self.test_fraction, "test_fraction", 0.0, 1.0, low_open=True, high_open=True)
        for name in ("use_genome", "skip_bad_rows"):  # "false" from a dict would be truthy
            checks.flag(getattr(self, name), name)
        check_split_options(self, ("auto", "global", "per_user"))


def detect_format(data_dir: Path) -> str:
    """csv, dat or 100k: the format whose files are all present; otherwise
    one error naming every missing file of the closest format."""
    missing = {fmt: [n for n in names if resolve(data_dir, n) is None] for fmt, names in FILES.items()}
    for fmt, absent in missing.items():
        if not absent:
            return fmt
    closest = min(missing, key=lambda f: len(missing[f]))
    if len(missing[closest]) < len(FILES[closest]):
        raise FileNotFoundError(
            f"movielens: missing {', '.join(missing[closest])} (or .gz) in {data_dir} next to "
            f"{', '.join(n for n in FILES[closest] if n not in missing[closest])}; expected {WHERE}"
        )
    present = sorted(p.name for p in data_dir.iterdir()) if data_dir.is_dir() else []
    raise FileNotFoundError(
        f"movielens: no raw files (each may be .gz) in {data_dir} (found {present[:8]}); expected {WHERE}"
    )


def raw_files(data_dir: Path, fmt: str, use_genome: bool) -> list[Path]:
    """The files a build reads (the cache fingerprint covers exactly these)."""
    files = [resolve(data_dir, n) for n in FILES[fmt]]
    if fmt == "csv" and use_genome:
        files += [resolve(data_dir, n) for n in ("genome-scores.csv", "genome-tags.csv")]
    return [f for f in files if f is not None]


# -- parsing -------------------------------------------------------------------
def _rating_row(sep: str):
    def parse(line: str):
        user, item, rating, ts = split_exact(line, sep, 4)
        rating = to_float(rating, "rating")
        if not 0.5 <= rating <= 5.0:
            raise ValueError(f"rating {rating} outside [0.5, 5]")
        return to_int(user, "user id", 1), to_int(item, "movie id", 1), rating, to_int(ts, "timestamp")

    return parse


RATING_DTYPE = [("user", "i8"), ("item", "i8"), ("rating", "f8"), ("timestamp", "i8")]


def read_ratings(path: Path, fmt: str, reader: RowReader) -> np.ndarray:
    """Structured array of user, item, rating, timestamp (``RATING_DTYPE``;
    timestamps in seconds). Raises :class:`RawDataError` for a bad header or
    row (docs/data.md "Bad input") unless the reader skips rows, and for a
    damaged file (truncated / corrupt / not-gzip ``.gz``, I/O error) always."""
    sep = {"csv": ",", "dat": "::", "100k": "\t"}[fmt]
    header = HEADERS["ratings.csv"] if fmt == "csv" else None
    if header:
        check_header(path, read_header(path), header, sep)
        if not reader.skip_bad_rows:  # C parser for the 20M-row files; any problem -> the row loop says where
            data = loadtxt(path, RATING_DTYPE)
            if data is not None and _valid_ratings(data).all():
                return data
    encoding = "latin-1" if fmt != "csv" else "utf-8"
    rows = list(reader.rows(path, _rating_row(sep), encoding=encoding, header=header, sep=sep))
    return np.array(rows, dtype=RATING_DTYPE)


def _valid_ratings(data: np.ndarray) -> np.ndarray:
    """The row rules of ``_rating_row``, vectorised for the fast path."""
    ids = (data["user"] >= 1) & (data["user"] <= MAX_INT) & (data["item"] >= 1) & (data["item"] <= MAX_INT)
    times = (data["timestamp"] >= 0) & (data["timestamp"] <= MAX_INT)
    return ids & times & (data["rating"] >= 0.5) & (data["rating"] <= 5)


def read_genres(path: Path, fmt: str, reader: RowReader) -> dict[int, str]:
    """Raw movie id -> its first genre (paper §5.1's category). Raises
    :class:`RawDataError` for a bad row unless the reader skips rows, and
    for a damaged file always."""
    if fmt == "csv":

        def parse(line):
            fields = next(csv.reader([line]))
            if len(fields) != 3:
                raise ValueError(f"expected 3 columns (movieId,title,genres), got {len(fields)}")
            return to_int(fields[0], "movie id", 1), fields[2].split("|")[0]

        return dict(reader.rows(path, parse, header=HEADERS["movies.csv"]))
    if fmt == "dat":

        def parse(line):
            movie, _, genres = split_exact(line, "::", 3)
            return to_int(movie, "movie id", 1), genres.split("|")[0]

        return dict(reader.rows(path, parse, encoding="latin-1"))

    def parse(line):
        fields = split_exact(line, "|", 24)
        flags = [to_int(v, "genre flag", 0, 1) for v in fields[5:]]
        return to_int(fields[0], "movie id", 1), next((g for g, f in zip(GENRES_100K, flags) if f), "unknown")

    return dict(reader.rows(path, parse, encoding="latin-1"))


def read_tag_count(path: Path | None, reader: RowReader) -> int:
    """The largest tag id of ``genome-tags.csv``, or ``MAX_GENOME_TAGS`` without
    it (docs/data.md "Genome tag ids"). Raises :class:`RawDataError` for a bad
    row unless the reader skips rows, and for a damaged file always."""
    if path is None:
        return MAX_GENOME_TAGS

    def parse(line):
        return to_int(next(csv.reader([line]))[0], "tag id", 1, MAX_GENOME_TAGS)

    return max(reader.rows(path, parse, header=HEADERS["genome-tags.csv"]), default=0)


def read_genome(path: Path, reader: RowReader, max_tag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Movie ids (int64), tag ids (int64, 1 .. ``max_tag``) and relevances
    (float32) of ``genome-scores.csv``, each ``[rows]``. Raises
    :class:`RawDataError` for a bad header or row unless the reader skips
    rows, and for a damaged file always."""
    header = HEADERS["genome-scores.csv"]
    check_header(path, read_header(path), header, ",")
    dtype = [("movie", "i8"), ("tag", "i8"), ("relevance", "f8")]
    data = None if reader.skip_bad_rows else loadtxt(path, dtype)
    if data is not None:
        ok = (data["movie"] >= 1) & (data["movie"] <= MAX_INT) & (data["tag"] >= 1) & (data["tag"] <= max_tag)
        if not (ok & np.isfinite(data["relevance"]) & (np.abs(data["relevance"]) <= np.finfo(np.float32).max)).all():
            data = None
    if data is None:

        def parse(line):
            movie, tag, relevance = split_exact(line, ",", 3)
            return (to_int(movie, "movie id", 1), to_int(tag, "tag id", 1, max_tag), to_float(relevance, "relevance"))

        data = np.array(list(reader.rows(path, parse, header=header)), dtype=dtype)
    return data["movie"], data["tag"], data["relevance"].astype(np.float32)


# -- building ------------------------------------------------------------------
def build_movielens(data_dir: str | Path, options: MovieLensOptions | None = None) -> CTRDataset:
    """Parse the raw files in ``data_dir`` into a :class:`CTRDataset`
    (rules: module docstring, paper §5.1, docs/data.md "MovieLens").

    Ids are int32, labels int8 (rating >= 4), timestamps int64 seconds; the
    genome (float32, one row per movie) is a lookup. Raises
    ``FileNotFoundError`` when the folder or its files are missing,
    :class:`RawDataError` for bad rows, no ratings, or no user kept, and
    for a raw file that cannot be read (a truncated or corrupt ``.gz``, a
    ``.gz`` that is not gzip, an I/O error: named with the line being read,
    also under ``skip_bad_rows``).
    """
    options = options or MovieLensOptions()
    started = time.perf_counter()
    data_dir = Path(data_dir)
    fmt, reader, ratings, genres = _read_raw(data_dir, options)
    genome_path = resolve(data_dir, "genome-scores.csv")
    has_genome = fmt == "csv" and options.use_genome and genome_path is not None
    split_mode = options.split if options.split != "auto" else ("global" if has_genome else "per_user")
    users_raw, items_raw, timestamps, labels, accounting = _kept_samples(ratings, split_mode, options)
    offsets = user_offsets(users_raw)
    split = split_samples(offsets, timestamps, split_mode, options.cut_timestamp, options.test_fraction)
    movie_ids, items = np.unique(items_raw, return_inverse=True)
    items = (items + 1).astype(np.int32)
    movie_genre, num_genres, missing_genre = category_ids(genres, [int(m) for m in movie_ids])
    features = click_history_features(offsets, timestamps, items, movie_genre[items - 1], labels, options.history_length)
    spec_features = list(click_history_spec(len(offsets) - 1, len(movie_ids), num_genres, options.history_length))
    lookups, genome_info = {}, None
    if has_genome:
        max_tag = read_tag_count(resolve(data_dir, "genome-tags.csv"), reader)
        table, genome_info = _genome_table(read_genome(genome_path, reader, max_tag), movie_ids)
        spec_features.append(DenseFeature("genome", table.shape[1]))
        lookups["genome"] = ("item_id", table)
    dataset = CTRDataset(
        name="movielens",
        spec=FeatureSpec(tuple(spec_features)),
        features=features,
        labels=labels,
        timestamps=timestamps,
        offsets=offsets,
        split=split,
        lookups=lookups,
        info={
            "format": fmt,
            "data_dir": str(data_dir),
            "split": split_mode,
            "split_accounting": accounting,
            "options": dataclasses.asdict(options),
            "raw_ratings": int(len(ratings)),
            "skipped_rows": dict(reader.skipped),
            "movies_without_genre": missing_genre,
            "genome": genome_info,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    summary = dataset.summary()
    dataset.info["paper_ml20m"] = PAPER_ML20M
    log.info("movielens (%s, %s split): %s; split %s; the paper's ml-20m: %s", fmt, split_mode, summary, accounting,
             PAPER_ML20M)
    return dataset


def _read_raw(data_dir: Path, options: MovieLensOptions) -> tuple[str, RowReader, np.ndarray, dict[int, str]]:
    """The format, the reader (its skipped-row counts), the ratings and the genres."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"movielens: {data_dir} is not a folder — put the raw files there ({WHERE})")
    fmt = detect_format(data_dir)
    reader = RowReader(options.skip_bad_rows)
    ratings_path, movies_path = (resolve(data_dir, n) for n in FILES[fmt])
    ratings = read_ratings(ratings_path, fmt, reader)
    if len(ratings) == 0:
        raise RawDataError(f"{ratings_path}: no ratings")
    return fmt, reader, ratings, read_genres(movies_path, fmt, reader)


def _kept_samples(ratings: np.ndarray, split_mode: str, options: MovieLensOptions) -> tuple[np.ndarray, ...]:
    """Raw user ids, raw movie ids, timestamps and click labels (int8), sorted
    by (user, time, movie), of the users with enough train and test samples,
    and :func:`~lcft_tf.data.dataset.split_accounting` of the split."""
    users_raw, items_raw, timestamps = ratings["user"], ratings["item"], ratings["timestamp"]
    labels = (ratings["rating"] >= 4.0).astype(np.int8)  # a rating >= 4 is a click (paper §5.1)
    order = np.lexsort((items_raw, timestamps, users_raw))
    users_raw, items_raw, timestamps, labels = users_raw[order], items_raw[order], timestamps[order], labels[order]
    offsets = user_offsets(users_raw)
    split = split_samples(offsets, timestamps, split_mode, options.cut_timestamp, options.test_fraction)
    kept = users_with_enough_samples(offsets, split, options.min_train, options.min_test)[user_index(offsets)]
    if not kept.any():
        raise RawDataError(
            f"movielens: no user has >= {options.min_train} train and >= {options.min_test} test samples "
            f"with split {split_mode!r}"
        )
    accounting = split_accounting(offsets, split, timestamps, options.min_train, options.min_test)
    return users_raw[kept], items_raw[kept], timestamps[kept], labels[kept], accounting


def _genome_table(genome: tuple[np.ndarray, np.ndarray, np.ndarray], movie_ids: np.ndarray) -> tuple[np.ndarray, dict]:
    """float32 ``[num_movies + 1, num_tags]`` relevances (row 0 and movies
    without a genome are zeros) of ``read_genome``'s rows, and its info."""
    g_movies, g_tags, g_relevance = genome
    num_tags = int(g_tags.max()) if len(g_tags) else 0
    table = np.zeros((len(movie_ids) + 1, num_tags), np.float32)
    pos = np.searchsorted(movie_ids, g_movies)
    known = (pos < len(movie_ids)) & (movie_ids[np.minimum(pos, len(movie_ids) - 1)] == g_movies) & (g_tags >= 1)
    table[pos[known] + 1, g_tags[known] - 1] = g_relevance[known]
    return table, {"tags": num_tags, "movies_with_genome": int(len(np.unique(g_movies[known])))}
