"""Datasets: the synthetic drift generator (default) and the per-user view."""

from lcft_tf.data.dataset import CTRDataset, UserView
from lcft_tf.data.synthetic import SyntheticConfig, generate

__all__ = ["CTRDataset", "UserView", "SyntheticConfig", "generate"]



def load_real_dataset(
    name: str,
    data_dir: str | None,
    cache_dir: str | None = None,
    **options,
) -> CTRDataset:
    """MovieLens or Amazon prepared from raw files the user already has.

    The prepared dataset is cached under ``cache_dir`` (default
    ``$LCFT_CACHE`` or ``~/.cache/lcft_tf``) in a folder named by a hash of
    the package and loader versions, the options and each raw file's name,
    size and mtime — so a cache from another version, other options or
    changed files is never reused. ``options`` go to
    :class:`~lcft_tf.data.movielens.MovieLensOptions` /
    :class:`~lcft_tf.data.amazon.AmazonOptions`.
    """
    import dataclasses
    import json
    import os
    from pathlib import Path

    from lcft_tf._io import atomic_write
    from lcft_tf.data import amazon, movielens
    from lcft_tf.data.raw import cache_dir_for, fingerprint

    if name not in ("movielens", "amazon"):
        raise ValueError(f"unknown dataset {name!r}; choose from ['synthetic', 'movielens', 'amazon']")
    if not data_dir:
        where = movielens.WHERE if name == "movielens" else ", ".join(amazon.FILES)
        raise FileNotFoundError(f"{name}: pass --data_dir, the folder holding the raw files ({where})")
    directory = Path(data_dir)
    if name == "movielens":
        opts = movielens.MovieLensOptions(**options)
        files = movielens.raw_files(directory, movielens.detect_format(directory), opts.use_genome)
        build, version = (lambda: movielens.build_movielens(directory, opts)), movielens.LOADER_VERSION
    else:
        opts = amazon.AmazonOptions(**options)
        files = [directory / f for f in amazon.FILES]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"amazon: missing {f.name} in {directory} — put the raw files there")
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
