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
from lcft_tf.data.dataset import CTRDataset


def _examples(dataset: CTRDataset, train: bool):
    mask = dataset.train_mask if train else ~dataset.train_mask
    index = np.flatnonzero(mask)
    users = np.repeat(np.arange(dataset.num_users), np.diff(dataset.offsets))
    for start in range(0, len(index), 4096):
        chunk = index[start : start + 4096]
        features = dataset.take(chunk)
        for j, i in enumerate(chunk):
            example = {k: v[j] for k, v in features.items()}
            example.update(label=int(dataset.labels[i]), timestamp=int(dataset.timestamps[i]), user=int(users[i]))
            yield int(i), example


@dataclasses.dataclass
class MovieLensConfig(tfds.core.BuilderConfig):
    genome_dim: int = 0  # 0: no genome feature; ml-20m / ml-25m have 1,128 tags
    options: movielens.MovieLensOptions = movielens.MovieLensOptions()  # split, cut, history_length, ...


class LcftMovielens(tfds.core.GeneratorBasedBuilder):
    """MovieLens as CTR samples with click histories (rating >= 4 is a click)."""

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
        spec_fields = {
            "user_id": tfds.features.Tensor(shape=(), dtype=tf.int32),
            "item_id": tfds.features.Tensor(shape=(), dtype=tf.int32),
            "category": tfds.features.Tensor(shape=(), dtype=tf.int32),
            "pos_hist": tfds.features.Tensor(shape=(c.options.history_length,), dtype=tf.int32),
            "neg_hist": tfds.features.Tensor(shape=(c.options.history_length,), dtype=tf.int32),
        }
        if c.genome_dim:
            spec_fields["genome"] = tfds.features.Tensor(shape=(c.genome_dim,), dtype=tf.float32)
        spec_fields.update(label=tfds.features.Tensor(shape=(), dtype=tf.int32),
                           timestamp=tfds.features.Tensor(shape=(), dtype=tf.int64),
                           user=tfds.features.Tensor(shape=(), dtype=tf.int32))
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(spec_fields), supervised_keys=None)

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
    options: amazon.AmazonOptions = amazon.AmazonOptions()  # category, negatives, split, ...


class LcftAmazon(tfds.core.GeneratorBasedBuilder):
    """Amazon reviews as CTR samples: per-user negative ratios (``default``) or DIN's 1:1 (``din``)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        AmazonConfig(name="default", description="each user r negatives per review, r uniform in 1..9"),
        AmazonConfig(name="din", description="one negative per review", options=amazon.AmazonOptions(
            negatives="one_per_review")),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put {amazon.WHERE} in manual_dir."

    def _info(self) -> tfds.core.DatasetInfo:
        L = self.builder_config.options.history_length
        fields = {n: tfds.features.Tensor(shape=(), dtype=tf.int32) for n in ("user_id", "item_id", "category")}
        fields.update(
            pos_hist=tfds.features.Tensor(shape=(L,), dtype=tf.int32),
            pos_hist_cat=tfds.features.Tensor(shape=(L,), dtype=tf.int32),
            label=tfds.features.Tensor(shape=(), dtype=tf.int32),
            timestamp=tfds.features.Tensor(shape=(), dtype=tf.int64),
            user=tfds.features.Tensor(shape=(), dtype=tf.int32),
        )
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(fields), supervised_keys=None)

    def _split_generators(self, dl_manager):
        dataset = amazon.build_amazon(dl_manager.manual_dir, self.builder_config.options)
        return {"train": self._generate_examples(dataset, True), "test": self._generate_examples(dataset, False)}

    def _generate_examples(self, dataset: CTRDataset, train: bool):
        yield from _examples(dataset, train)
