"""tensorflow-datasets builders over the same loaders, for ``tfds.load``.

    import lcft_tf.data.tfds_builders  # registers lcft_movielens, lcft_amazon
    ds = tfds.load("lcft_movielens/plain", split="train", data_dir=...,
                   download_and_prepare_kwargs={"download_config":
                       tfds.download.DownloadConfig(manual_dir="path/to/ml-20m")})

Preparation parses the raw files in ``manual_dir`` once with
:func:`~lcft_tf.data.movielens.build_movielens` /
:func:`~lcft_tf.data.amazon.build_amazon` and writes one example per sample
(train / test splits); later loads read TFDS's cache. TFDS keys its cache by
builder name, config and version: re-prepare (``download_mode=
REUSE_CACHE_IF_EXISTS`` is not enough) after changing the raw files. The
experiment itself reads the memory-mapped cache of
:func:`lcft_tf.data.load_real_dataset`, which is checked against the files.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from lcft_tf.data import amazon, movielens
from lcft_tf.data.dataset import CTRDataset, user_index


def _features_dict(histories: tuple[str, ...], length: int, genome_dim: int = 0) -> tfds.features.FeaturesDict:
    """One example's features: int32 ids, int32 ``[length]`` histories, an
    optional float32 ``[genome_dim]`` genome, and label (int32 0/1),
    timestamp (int64 seconds) and user (int32, 0-based)."""
    scalar = lambda dtype: tfds.features.Tensor(shape=(), dtype=dtype)
    fields = {name: scalar(tf.int32) for name in ("user_id", "item_id", "category")}
    fields.update({name: tfds.features.Tensor(shape=(length,), dtype=tf.int32) for name in histories})
    if genome_dim:
        fields["genome"] = tfds.features.Tensor(shape=(genome_dim,), dtype=tf.float32)
    fields.update(label=scalar(tf.int32), timestamp=scalar(tf.int64), user=scalar(tf.int32))
    return tfds.features.FeaturesDict(fields)


def _examples(dataset: CTRDataset, train: bool):
    """``(sample index, example)`` of the train or test samples, in chunks
    so lookups (the genome) are materialised a few thousand rows at a time."""
    mask = dataset.train_mask if train else ~dataset.train_mask
    index = np.flatnonzero(mask)
    users = user_index(dataset.offsets)
    for start in range(0, len(index), 4096):
        chunk = index[start : start + 4096]
        features = dataset.take(chunk)
        for j, i in enumerate(chunk):
            example = {k: v[j] for k, v in features.items()}
            example.update(label=int(dataset.labels[i]), timestamp=int(dataset.timestamps[i]), user=int(users[i]))
            yield int(i), example


@dataclasses.dataclass
class MovieLensConfig(tfds.core.BuilderConfig):
    """A :class:`LcftMovielens` variant: with or without the genome, and the loader's options."""

    genome_dim: int = 0  # 0: no genome feature; ml-20m / ml-25m have 1,128 tags
    options: movielens.MovieLensOptions = movielens.MovieLensOptions()  # split, cut, history_length, ...


class LcftMovielens(tfds.core.GeneratorBasedBuilder):
    """MovieLens as CTR samples with click histories (rating >= 4 is a click,
    paper §5.1; rules docs/data.md). Preparing raises what
    :func:`~lcft_tf.data.movielens.build_movielens` raises (among them
    :class:`~lcft_tf.data.raw.RawDataError` naming a damaged raw file), and
    ``ValueError`` when the files' genome width differs from the config's
    ``genome_dim``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        MovieLensConfig(name="plain", description="ids and histories, no genome"),
        MovieLensConfig(name="genome", description="with the 1,128-d tag genome", genome_dim=1128),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put the raw MovieLens files in manual_dir: {movielens.WHERE}."

    def _options(self) -> movielens.MovieLensOptions:
        c = self.builder_config
        return dataclasses.replace(c.options, use_genome=c.genome_dim > 0)

    def _info(self) -> tfds.core.DatasetInfo:
        c = self.builder_config
        features = _features_dict(("pos_hist", "neg_hist"), c.options.history_length, c.genome_dim)
        return self.dataset_info_from_configs(features=features, supervised_keys=None)

    def _split_generators(self, dl_manager):
        dataset = movielens.build_movielens(dl_manager.manual_dir, self._options())
        want = self.builder_config.genome_dim
        got = dataset.spec["genome"].dim if "genome" in dataset.spec.names else 0
        if got != want:
            raise ValueError(f"config {self.builder_config.name!r} expects a {want}-d genome, the files give {got}")
        return {"train": self._generate_examples(dataset, True), "test": self._generate_examples(dataset, False)}

    def _generate_examples(self, dataset: CTRDataset, train: bool):
        yield from _examples(dataset, train)


@dataclasses.dataclass
class AmazonConfig(tfds.core.BuilderConfig):
    """A :class:`LcftAmazon` variant: the loader's options."""

    options: amazon.AmazonOptions = amazon.AmazonOptions()  # category, negatives, split, ...


class LcftAmazon(tfds.core.GeneratorBasedBuilder):
    """Amazon reviews as CTR samples: per-user negative ratios (``default``) or
    DIN's 1:1 (``din``); rules docs/data.md "Amazon". Preparing raises what
    :func:`~lcft_tf.data.amazon.build_amazon` raises (among them
    :class:`~lcft_tf.data.raw.RawDataError` naming a damaged raw file)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        AmazonConfig(name="default", description="each user r negatives per review, r uniform in 1..9"),
        AmazonConfig(name="din", description="one negative per review", options=amazon.AmazonOptions(
            negatives="one_per_review")),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put {amazon.WHERE} in manual_dir."

    def _info(self) -> tfds.core.DatasetInfo:
        features = _features_dict(("pos_hist", "pos_hist_cat"), self.builder_config.options.history_length)
        return self.dataset_info_from_configs(features=features, supervised_keys=None)

    def _split_generators(self, dl_manager):
        dataset = amazon.build_amazon(dl_manager.manual_dir, self.builder_config.options)
        return {"train": self._generate_examples(dataset, True), "test": self._generate_examples(dataset, False)}

    def _generate_examples(self, dataset: CTRDataset, train: bool):
        yield from _examples(dataset, train)
