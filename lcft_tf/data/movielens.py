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
from typing import Any

import numpy as np

from lcft_tf.data.dataset import CTRDataset, global_split, per_user_split, previous_items, users_with_enough_samples
from lcft_tf.data.raw import (
    MAX_INT,
    RawDataError,
    RowReader,
    check_header,
    check_int,
    loadtxt,
    read_header,
    resolve,
    split_exact,
    to_float,
    to_int,
)
from lcft_tf.features import DenseFeature, FeatureSpec, SequenceFeature, SparseFeature

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
    """How MovieLens raw files become a dataset (rules: docs/data.md).

    Fields:
      split: auto | global | per_user. auto is global with a genome (ml-20m,
        ml-25m, the paper's setting), per_user otherwise.
      cut_timestamp: global split: train is timestamp <= cut (default the
        paper's 1,225,642,324).
      test_fraction: per_user split: each user's last fraction of ratings is
        test (same-second ratings stay together).
      min_train: a user is kept with at least this many train samples.
      min_test: ... and at least this many test samples.
      history_length: length of pos_hist / neg_hist.
      use_genome: add the tag-genome feature when genome-scores.csv is there.
      skip_bad_rows: skip and count malformed rows instead of stopping.
    """

    split: str = "auto"
    cut_timestamp: int = PAPER_CUT
    test_fraction: float = 0.2
    min_train: int = 5
    min_test: int = 1
    history_length: int = 20
    use_genome: bool = True
    skip_bad_rows: bool = False

    def __post_init__(self) -> None:
        if self.split not in ("auto", "global", "per_user"):
            raise ValueError(f"split must be auto, global or per_user, got {self.split!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction!r}")
        check_int(self.cut_timestamp, "cut_timestamp")
        for name in ("min_train", "min_test", "history_length"):
            if check_int(getattr(self, name), name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


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
    """Structured array of user, item, rating, timestamp (``RATING_DTYPE``)."""
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
    """Raw movie id -> its first genre."""
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
    """The largest tag id of ``genome-tags.csv``, or ``MAX_GENOME_TAGS`` without it."""
    if path is None:
        return MAX_GENOME_TAGS

    def parse(line):
        return to_int(next(csv.reader([line]))[0], "tag id", 1, MAX_GENOME_TAGS)

    return max(reader.rows(path, parse, header=HEADERS["genome-tags.csv"]), default=0)


def read_genome(path: Path, reader: RowReader, max_tag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Movie ids, tag ids (1 .. ``max_tag``), relevances of ``genome-scores.csv``."""
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
    """Parse the raw files in ``data_dir`` into a :class:`CTRDataset`."""
    options = options or MovieLensOptions()
    started = time.perf_counter()
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"movielens: {data_dir} is not a folder — put the raw files there ({WHERE})")
    fmt = detect_format(data_dir)
    reader = RowReader(options.skip_bad_rows)
    ratings_path, movies_path = (resolve(data_dir, n) for n in FILES[fmt])
    ratings = read_ratings(ratings_path, fmt, reader)
    if len(ratings) == 0:
        raise RawDataError(f"{ratings_path}: no ratings")
    genres = read_genres(movies_path, fmt, reader)
    genome_path = resolve(data_dir, "genome-scores.csv")
    has_genome = fmt == "csv" and options.use_genome and genome_path is not None

    users_raw = ratings["user"]
    items_raw = ratings["item"]
    timestamps = ratings["timestamp"]
    labels = (ratings["rating"] >= 4.0).astype(np.int8)
    order = np.lexsort((items_raw, timestamps, users_raw))
    users_raw, items_raw, timestamps, labels = users_raw[order], items_raw[order], timestamps[order], labels[order]

    split_mode = options.split if options.split != "auto" else ("global" if has_genome else "per_user")
    kept = _keep_users(users_raw, timestamps, split_mode, options)
    users_raw, items_raw, timestamps, labels = users_raw[kept], items_raw[kept], timestamps[kept], labels[kept]
    if len(labels) == 0:
        raise RawDataError(
            f"movielens: no user has >= {options.min_train} train and >= {options.min_test} test samples "
            f"with split {split_mode!r}"
        )
    _, user_ids = np.unique(users_raw, return_inverse=True)
    offsets = np.r_[0, np.cumsum(np.bincount(user_ids))]
    split = _split(offsets, timestamps, split_mode, options)

    movie_ids, items = np.unique(items_raw, return_inverse=True)
    items = (items + 1).astype(np.int32)
    genre_names = sorted(set(genres.values()) | {"(unknown)"})
    genre_index = {g: i + 1 for i, g in enumerate(genre_names)}
    movie_genre = np.array([genre_index[genres.get(int(m), "(unknown)")] for m in movie_ids], np.int32)
    missing_genre = int(sum(int(m) not in genres for m in movie_ids))

    features = {
        "user_id": (user_ids + 1).astype(np.int32),
        "item_id": items,
        "category": movie_genre[items - 1],
        "pos_hist": previous_items(offsets, timestamps, items, labels == 1, options.history_length),
        "neg_hist": previous_items(offsets, timestamps, items, labels == 0, options.history_length),
    }
    spec_features: list[Any] = [
        SparseFeature("user_id", len(offsets)),
        SparseFeature("item_id", len(movie_ids) + 1),
        SparseFeature("category", len(genre_names) + 1),
        SequenceFeature("pos_hist", len(movie_ids) + 1, options.history_length, embedding="item_id", query="item_id"),
        SequenceFeature("neg_hist", len(movie_ids) + 1, options.history_length, embedding="item_id", query="item_id"),
    ]
    lookups = {}
    genome_info = None
    if has_genome:
        max_tag = read_tag_count(resolve(data_dir, "genome-tags.csv"), reader)
        g_movies, g_tags, g_relevance = read_genome(genome_path, reader, max_tag)
        num_tags = int(g_tags.max()) if len(g_tags) else 0
        table = np.zeros((len(movie_ids) + 1, num_tags), np.float32)
        pos = np.searchsorted(movie_ids, g_movies)
        known = (pos < len(movie_ids)) & (movie_ids[np.minimum(pos, len(movie_ids) - 1)] == g_movies) & (g_tags >= 1)
        table[pos[known] + 1, g_tags[known] - 1] = g_relevance[known]
        spec_features.append(DenseFeature("genome", num_tags))
        lookups["genome"] = ("item_id", table)
        genome_info = {"tags": num_tags, "movies_with_genome": int(len(np.unique(g_movies[known])))}

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
    log.info("movielens (%s, %s split): %s; the paper's ml-20m: %s", fmt, split_mode, summary, PAPER_ML20M)
    return dataset


def _split(offsets: np.ndarray, timestamps: np.ndarray, mode: str, options: MovieLensOptions) -> np.ndarray:
    if mode == "global":
        return global_split(offsets, timestamps, options.cut_timestamp)
    return per_user_split(offsets, options.test_fraction, timestamps)


def _keep_users(users: np.ndarray, timestamps: np.ndarray, mode: str, options: MovieLensOptions) -> np.ndarray:
    """Sample mask of users with enough train and test samples."""
    _, user_ids = np.unique(users, return_inverse=True)
    offsets = np.r_[0, np.cumsum(np.bincount(user_ids))]
    split = _split(offsets, timestamps, mode, options)
    return users_with_enough_samples(offsets, split, options.min_train, options.min_test)[user_ids]
