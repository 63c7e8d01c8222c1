"""A raw file that cannot be read (a truncated or corrupt .gz, a .gz that is
not gzip, an I/O error) is a one-line RawDataError naming the file (and the
line where there is one), through load_real_dataset, the loaders and the tfds
builders alike; --skip_bad_rows does not hide it (a damaged file is not a bad
row) and nothing is cached."""

from __future__ import annotations

import errno
import gzip
import re
from pathlib import Path

import pytest
from raw_fixtures import gzip_files, insert_line, write_amazon, write_movielens

from lcft_tf.data import load_real_dataset
from lcft_tf.data.amazon import build_amazon
from lcft_tf.data.movielens import MovieLensOptions, build_movielens
from lcft_tf.data.raw import RawDataError

# (dataset, fixture format, damaged file)
FILES = [
    ("movielens", "100k", "u.data.gz"),
    ("movielens", "100k", "u.item.gz"),
    ("movielens", "csv", "ratings.csv.gz"),
    ("movielens", "csv", "movies.csv.gz"),
    ("movielens", "csv", "genome-scores.csv.gz"),
    ("movielens", "csv", "genome-tags.csv.gz"),
    ("movielens", "dat", "ratings.dat.gz"),
    ("amazon", None, "reviews_Electronics_5.json.gz"),
    ("amazon", None, "meta_Electronics.json.gz"),
]


def _write(folder: Path, dataset: str, fmt: str | None) -> None:
    if dataset == "movielens":
        write_movielens(folder, fmt, num_users=60, num_movies=80, per_user=40)  # big enough for several gzip blocks
    else:
        write_amazon(folder)
    gzip_files(folder)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def _truncate_to_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:12])  # the gzip header and nothing else


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)  # zeros in the deflate stream
    path.write_bytes(bytes(data))


def _bad_crc(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:-8] + bytes(4) + data[-4:])


def _not_gzip_garbage(path: Path) -> None:
    path.write_bytes(b"\x00\xff this is not gzip \x01\x02\n" * 20)


def _not_gzip_plain_text(path: Path) -> None:
    path.write_bytes(gzip.decompress(path.read_bytes()))  # uncompressed, still named .gz


def _bad_gzip_header(path: Path) -> None:
    path.write_bytes(b"\x1f\x8b" + b"junk junk junk " * 10)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


DAMAGE = {
    "truncated": (_truncate, r"ends early|truncated"),
    "truncated_to_header": (_truncate_to_header, r"ends early|truncated"),
    "corrupt_deflate": (_corrupt, r"corrupt|truncated|ends early"),
    "bad_crc": (_bad_crc, r"corrupt"),
    "not_gzip_garbage": (_not_gzip_garbage, r"not gzip"),
    "not_gzip_plain_text": (_not_gzip_plain_text, r"not gzip.*rename"),
    "bad_gzip_header": (_bad_gzip_header, r"corrupt|not gzip"),
    "empty": (_empty, r"not gzip"),
}


def _only_line(err: BaseException) -> str:
    message = str(err)
    assert message and "\n" not in message, message
    return message


def _assert_nothing_cached(cache: Path) -> None:
    left = list(cache.rglob("*")) if cache.exists() else []
    assert not [p for p in left if p.is_file()], f"cache holds files after a failed build: {left}"


@pytest.mark.parametrize("skip_bad_rows", [False, True], ids=["strict", "skip_bad_rows"])
@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("dataset,fmt,name", FILES, ids=[f[2] for f in FILES])
def test_damaged_raw_file_is_one_line_error_naming_it(tmp_path, dataset, fmt, name, damage, skip_bad_rows):
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    _write(raw, dataset, fmt)
    path = raw / name
    edit, reason = DAMAGE[damage]
    edit(path)
    with pytest.raises(RawDataError) as info:
        load_real_dataset(dataset, str(raw), str(cache), skip_bad_rows=skip_bad_rows)
    message = _only_line(info.value)
    assert re.match(rf"{re.escape(str(path))}(:\d+)?: ", message), message  # the file first, its line if any
    assert re.search(reason, message), message
    assert "--skip_bad_rows" in message and "not a bad row" in message  # says skipping cannot help
    _assert_nothing_cached(cache)


@pytest.mark.parametrize("dataset,fmt,name", [FILES[0], FILES[2], FILES[7], FILES[8]], ids=lambda v: str(v))
def test_truncated_gz_names_the_line_being_read(tmp_path, dataset, fmt, name):
    raw = tmp_path / "raw"
    _write(raw, dataset, fmt)
    path = raw / name
    _truncate(path)
    build = build_movielens if dataset == "movielens" else build_amazon
    with pytest.raises(RawDataError) as info:
        build(raw)
    match = re.match(rf"{re.escape(str(path))}:(\d+): ", _only_line(info.value))
    assert match, str(info.value)
    readable = 0
    try:
        with gzip.open(path, "rb") as f:
            for _ in f:
                readable += 1
    except EOFError:
        pass
    assert int(match.group(1)) == readable + 1  # the first line that could not be read


def test_gzip_magic_without_gz_name_is_still_checked(tmp_path):
    raw = tmp_path / "raw"
    write_movielens(raw, "100k")
    data = gzip.compress((raw / "u.data").read_bytes(), mtime=0)
    (raw / "u.data").write_bytes(data[: len(data) // 2])  # gzip bytes under the plain name
    with pytest.raises(RawDataError, match=r"u\.data:\d+: .*truncated"):
        build_movielens(raw)


def test_io_error_while_reading_is_named(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    write_movielens(raw, "100k")
    gzip_files(raw)

    def failing_readline(self, size=-1):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(gzip.GzipFile, "readline", failing_readline)
    with pytest.raises(RawDataError, match=r"u\.data\.gz:1: cannot read: Input/output error") as info:
        load_real_dataset("movielens", str(raw), str(tmp_path / "cache"), skip_bad_rows=True)
    _only_line(info.value)
    _assert_nothing_cached(tmp_path / "cache")


def test_invalid_utf8_in_a_gz_stays_a_counted_bad_row(tmp_path):
    raw = tmp_path / "raw"
    write_movielens(raw, "csv", genome=False)
    insert_line(raw / "ratings.csv", 4, b"1,3,4.0,12000\xff00")
    gzip_files(raw)
    with pytest.raises(RawDataError, match=r"ratings\.csv\.gz:4: invalid utf-8 byte"):
        build_movielens(raw)
    assert build_movielens(raw, MovieLensOptions(skip_bad_rows=True)).info["skipped_rows"] == {"ratings.csv.gz": 1}


@pytest.mark.parametrize("dataset", ["movielens", "amazon"])
def test_tfds_builders_name_the_damaged_file(tmp_path, dataset):
    tfds = pytest.importorskip("tensorflow_datasets")
    from lcft_tf.data import tfds_builders

    raw = tmp_path / "raw"
    if dataset == "movielens":
        _write(raw, "movielens", "100k")
        path, builder = raw / "u.data.gz", tfds_builders.LcftMovielens(config="plain", data_dir=str(tmp_path / "t"))
    else:
        _write(raw, "amazon", None)
        path, builder = raw / "reviews_Electronics_5.json.gz", tfds_builders.LcftAmazon(
            config="default", data_dir=str(tmp_path / "t"))
    _truncate(path)
    with pytest.raises(RawDataError) as info:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(raw)))
    assert re.match(rf"{re.escape(str(path))}:\d+: .*truncated", str(info.value).splitlines()[0]), str(info.value)
