"""Writes small raw files in the exact formats of MovieLens (ml-20m csv,
ml-1m dat, ml-100k) and Amazon Electronics, for the loader tests.

Run as a script to write them to a folder: ``python tests/raw_fixtures.py OUT``.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np

CUT = 1_225_642_324
GENRES = ["Action", "Comedy", "Drama", "Sci-Fi", "Romance"]


def movielens_ratings(num_users: int = 30, num_movies: int = 25, per_user: int = 12, seed: int = 0):
    """(user, movie, rating, timestamp) rows; timestamps straddle the paper's cut
    and include same-second ties."""
    rng = np.random.default_rng(seed)
    rows = []
    for user in range(1, num_users + 1):
        movies = rng.choice(np.arange(1, num_movies + 1) * 3, per_user, replace=False)  # sparse raw ids
        start = CUT - int(rng.integers(10, 200)) * 3600
        ts = np.sort(start + rng.integers(0, 400, per_user) * 3600)
        ts[1] = ts[0]  # a tie
        for m, t in zip(movies, ts):
            rows.append((user, int(m), float(rng.choice([1, 2, 3, 3.5, 4, 4.5, 5])), int(t)))
    return rows


def write_movielens(out: Path, fmt: str = "csv", genome: bool = True, seed: int = 0, **kwargs) -> list[tuple]:
    out.mkdir(parents=True, exist_ok=True)
    rows = movielens_ratings(seed=seed, **kwargs)
    movies = sorted({r[1] for r in rows})
    genre = {m: GENRES[m % len(GENRES)] for m in movies}
    if fmt == "csv":
        lines = ["userId,movieId,rating,timestamp"] + [f"{u},{m},{r},{t}" for u, m, r, t in rows]
        (out / "ratings.csv").write_text("\n".join(lines) + "\n")
        lines = ["movieId,title,genres"] + [f'{m},"Movie {m}, The (1999)",{genre[m]}|Drama' for m in movies]
        (out / "movies.csv").write_text("\n".join(lines) + "\n")
        if genome:
            rng = np.random.default_rng(seed + 1)
            lines = ["movieId,tagId,relevance"] + [
                f"{m},{t},{rng.random():.5f}" for m in movies[:-2] for t in range(1, 5)  # two movies lack a genome
            ]
            (out / "genome-scores.csv").write_text("\n".join(lines) + "\n")
            (out / "genome-tags.csv").write_text("tagId,tag\n" + "".join(f"{t},tag {t}\n" for t in range(1, 5)))
    elif fmt == "dat":
        (out / "ratings.dat").write_text("".join(f"{u}::{m}::{int(r)}::{t}\n" for u, m, r, t in rows), encoding="latin-1")
        (out / "movies.dat").write_text(
            "".join(f"{m}::Movie {m} (1999)::{genre[m]}|Drama\n" for m in movies), encoding="latin-1"
        )
    elif fmt == "100k":
        (out / "u.data").write_text("".join(f"{u}\t{m}\t{int(r)}\t{t}\n" for u, m, r, t in rows), encoding="latin-1")
        names = "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir " \
                "Horror Musical Mystery Romance Sci-Fi Thriller War Western".split()
        lines = []
        for m in movies:
            flags = ["1" if n in (genre[m], "Drama") else "0" for n in names]
            lines.append("|".join([str(m), f"Movie {m} (1999)", "01-Jan-1999", "", "http://x"] + flags))
        (out / "u.item").write_text("\n".join(lines) + "\n", encoding="latin-1")
    else:
        raise ValueError(fmt)
    if fmt != "csv":
        rows = [(u, m, float(int(r)), t) for u, m, r, t in rows]
    return rows


def write_amazon(
    out: Path,
    num_users: int = 25,
    num_items: int = 30,
    per_user: int = 10,
    seed: int = 0,
    category: str = "Electronics",
    meta: bool = True,
) -> list[dict]:
    """``reviews_<category>_5.json`` (JSON lines) and ``meta_<category>.json``
    (Python-literal lines, as in the original dump). Some reviews of a user
    share a second (as in the real dumps)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cut = 1_385_078_400
    reviews = []
    for u in range(num_users):
        items = rng.choice(num_items, per_user, replace=False)
        ts = np.sort(cut - 86400 * 200 + rng.integers(0, 300, per_user) * 86400)
        ts[-2] = ts[-1]  # a same-second pair
        for i, t in zip(items, ts):
            reviews.append({"reviewerID": f"U{u:04d}", "asin": f"B{i:05d}", "overall": float(rng.integers(1, 6)),
                            "unixReviewTime": int(t), "reviewText": "fine, really"})
    (out / f"reviews_{category}_5.json").write_text("".join(json.dumps(r) + "\n" for r in reviews))
    if meta:
        lines = [
            repr({"asin": f"B{i:05d}", "title": f"Thing {i}", "categories": [["Electronics", "Gadgets", f"Cat{i % 4}"]]})
            for i in range(num_items)
        ]
        (out / f"meta_{category}.json").write_text("\n".join(lines) + "\n")
    return reviews


def gzip_files(folder: Path) -> None:
    """Replace every file in ``folder`` by ``<name>.gz`` (the loaders read both)."""
    for path in sorted(folder.iterdir()):
        (folder / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes(), mtime=0))
        path.unlink()


def insert_line(path: Path, number: int, line: bytes) -> None:
    """Put raw bytes ``line`` as line ``number`` (1-based) of ``path``."""
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[: number - 1] + [line + b"\n"] + lines[number - 1 :]))


if __name__ == "__main__":
    root = Path(sys.argv[1])
    for fmt in ("csv", "dat", "100k"):
        write_movielens(root / f"movielens_{fmt}", fmt)
    write_amazon(root / "amazon")
    print(f"wrote fixtures under {root}")
