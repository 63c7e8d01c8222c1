"""Datasets: the synthetic drift generator (default), real-data loaders and the per-user view."""

import os
from typing import TYPE_CHECKING

from lcft_tf.data.dataset import CTRDataset, UserView
from lcft_tf.data.synthetic import SyntheticConfig, generate

__all__ = ["CTRDataset", "UserView", "SyntheticConfig", "generate", "load_real_dataset"]

if TYPE_CHECKING:
    from lcft_tf.data.amazon import AmazonOptions
    from lcft_tf.data.movielens import MovieLensOptions


def load_real_dataset(
    name: str,
    data_dir: str | None,
    cache_dir: str | None = None,
    options: "MovieLensOptions | AmazonOptions | None" = None,
    **fields,
) -> CTRDataset:
    """MovieLens or Amazon prepared from raw files the user already has.

    ``options`` is a :class:`~lcft_tf.data.movielens.MovieLensOptions` /
    :class:`~lcft_tf.data.amazon.AmazonOptions` (default: its defaults); or
    pass its fields as keywords instead. The prepared dataset is cached under
    ``cache_dir`` (default ``$LCFT_CACHE`` or ``~/.cache/lcft_tf``) in a folder
    named by a hash of the package and loader versions, every option and each
    raw file's name, size and mtime — so a cache from another version, other
    options or changed files is never reused (docs/data.md). The dataset is
    built completely before anything is written, and the fingerprint is
    written last, so a failed build leaves no cache and a cache without its
    fingerprint is never read.

    Raises ``ValueError`` for an unknown ``name`` or options of the wrong
    kind (and bad option values), ``FileNotFoundError`` without
    ``data_dir`` or its raw files, :class:`~lcft_tf.data.raw.RawDataError`
    for bad rows (unless ``skip_bad_rows``), no data left, or a raw file that
    cannot be read (a truncated or corrupt ``.gz``, a ``.gz`` that is not
    gzip, an I/O error: one line naming the file, also under
    ``skip_bad_rows``), and ``OSError`` when the cache cannot be written.
    """
    import dataclasses
    import json
    import os
    from pathlib import Path

    from lcft_tf._io import atomic_write
    from lcft_tf.data import amazon, movielens
    from lcft_tf.data.raw import cache_dir_for, fingerprint

    opts = _options(name, options, fields)
    files = raw_files(name, data_dir, **dataclasses.asdict(opts))
    directory = Path(data_dir)
    if name == "movielens":
        build, version = (lambda: movielens.build_movielens(directory, opts)), movielens.LOADER_VERSION
    else:
        build, version = (lambda: amazon.build_amazon(directory, opts)), amazon.LOADER_VERSION
    print_ = fingerprint(files, dataclasses.asdict(opts), version)
    root = cache_dir or os.environ.get("LCFT_CACHE") or Path.home() / ".cache" / "lcft_tf"
    cache = cache_dir_for(root, name, print_)
    marker = cache / "fingerprint.json"
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(print_)):
        return CTRDataset.load(cache)
    dataset = build()
    dataset.save(cache)
    atomic_write(marker, json.dumps(print_, indent=2).encode())  # last: marks the cache complete
    return dataset


def _options(name: str, options, fields: dict):
    """The loader options of dataset ``name``: ``options``, or its fields."""
    from lcft_tf.data import amazon, movielens

    kinds = {"movielens": movielens.MovieLensOptions, "amazon": amazon.AmazonOptions}
    if name not in kinds:
        raise ValueError(f"unknown dataset {name!r}; choose from ['synthetic', 'movielens', 'amazon']")
    if options is None:
        return kinds[name](**fields)
    if fields or not isinstance(options, kinds[name]):
        raise ValueError(f"{name}: pass one {kinds[name].__name__} (or its fields as keywords), got {options!r:.80}")
    return options


def raw_files(name: str, data_dir: str | os.PathLike | None, **options) -> list:
    """The raw files dataset ``name`` (movielens / amazon) reads from
    ``data_dir`` with these loader options, checked to exist without reading
    them (a run checks its inputs before it writes anything). Raises
    ``ValueError`` for an unknown dataset or options, ``FileNotFoundError``
    naming every missing file."""
    from pathlib import Path

    from lcft_tf.data import amazon, movielens

    opts = _options(name, None, options)
    if not data_dir:
        where = movielens.WHERE if name == "movielens" else amazon.WHERE
        raise FileNotFoundError(f"{name}: pass --data_dir, the folder holding the raw files ({where})")
    directory = Path(data_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"{name}: --data_dir {directory} is not a folder")
    if name == "movielens":
        return movielens.raw_files(directory, movielens.detect_format(directory), opts.use_genome)
    return [f for f in amazon.raw_files(directory, opts.category) if f is not None]
