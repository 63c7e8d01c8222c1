"""Datasets: synthetic drift, MovieLens / Amazon rules, histories without
leakage, splits, caching and the errors for bad raw files."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from raw_fixtures import CUT, write_amazon, write_movielens

from lcft_tf.data import load_real_dataset
from lcft_tf.data.amazon import AmazonOptions, build_amazon
from lcft_tf.data.dataset import CTRDataset, per_user_split, previous_items
from lcft_tf.data.movielens import MovieLensOptions, build_movielens
from lcft_tf.data.raw import RawDataError
from lcft_tf.data.synthetic import SyntheticConfig, generate


def brute_force_history(users, timestamps, items, selected, length):
    out = np.zeros((len(items), length), np.int32)
    for k in range(len(items)):
        earlier = [j for j in range(len(items)) if users[j] == users[k] and timestamps[j] < timestamps[k] and selected[j]]
        earlier.sort(key=lambda j: (timestamps[j], j), reverse=True)
        picked = [items[j] for j in earlier[:length]]
        out[k, : len(picked)] = picked
    return out


def check_histories(dataset: CTRDataset, name: str, selected: np.ndarray, values: np.ndarray | None = None):
    users = np.repeat(np.arange(dataset.num_users), np.diff(dataset.offsets))
    values = dataset.features["item_id"] if values is None else values
    expected = brute_force_history(users, dataset.timestamps, values, selected, dataset.spec[name].length)
    np.testing.assert_array_equal(dataset.features[name], expected)


# -- synthetic -------------------------------------------------------------------
@pytest.mark.parametrize("global_ctr, spread", [(0.5, 1.0), (0.2, 0.5), (0.7, 1.5)])
def test_synthetic_matches_its_parameters(global_ctr, spread):
    data = generate(SyntheticConfig(num_users=800, mean_samples_per_user=80, global_ctr=global_ctr, ctr_spread=spread))
    assert data.global_ctr == pytest.approx(global_ctr, abs=0.02)
    w = data.local_ctrs()
    binomial_only = np.sqrt(global_ctr * (1 - global_ctr) / 64)  # train samples ~ 0.8 * 80
    assert np.std(w) > 1.5 * binomial_only  # real drift, not just sampling noise
    narrow = generate(SyntheticConfig(num_users=800, mean_samples_per_user=80, global_ctr=global_ctr, ctr_spread=0.1))
    assert np.std(narrow.local_ctrs()) < np.std(w)  # the spread parameter widens Fig. 1


def test_synthetic_is_deterministic_and_consistent():
    a, b = generate(SyntheticConfig(num_users=50, seed=3)), generate(SyntheticConfig(num_users=50, seed=3))
    for k in a.features:
        np.testing.assert_array_equal(a.features[k], b.features[k])
    np.testing.assert_array_equal(a.labels, b.labels)
    c = generate(SyntheticConfig(num_users=50, seed=4))
    assert not np.array_equal(a.labels[:100], c.labels[:100])
    small = generate(SyntheticConfig(num_users=12, mean_samples_per_user=20, history_length=5))
    check_histories(small, "pos_hist", small.labels == 1)
    check_histories(small, "neg_hist", small.labels == 0)
    assert a.spec.validate(a.take(slice(0, 10)))  # every column matches the spec


def test_per_user_view_and_local_ctr():
    data = generate(SyntheticConfig(num_users=30, mean_samples_per_user=30))
    w = data.local_ctrs()
    for u in (0, 7, 29):
        view = data.user(u)
        assert len(view.train_labels) + len(view.test_labels) == data.offsets[u + 1] - data.offsets[u]
        assert view.local_ctr == pytest.approx(w[u])
        assert np.all(view.train_features["user_id"] == u + 1)
        assert np.all(np.diff(data.timestamps[data.offsets[u] : data.offsets[u + 1]]) >= 0)  # time order
    with pytest.raises(IndexError):
        data.user(30)


def test_save_load_round_trip(tmp_path):
    data = generate(SyntheticConfig(num_users=20))
    again = CTRDataset.load(data.save(tmp_path / "d"))
    assert again.summary() == data.summary() and again.spec == data.spec
    np.testing.assert_array_equal(again.take(slice(0, 50))["genome"], data.take(slice(0, 50))["genome"])


def test_split_helpers():
    offsets = np.array([0, 1, 2, 12, 17])
    np.testing.assert_array_equal(per_user_split(offsets, 0.2), [1, 2, 10, 16])  # 1-sample users: all train
    with pytest.raises(ValueError):
        per_user_split(offsets, 1.5)
    hist = previous_items(np.array([0, 4]), np.array([1, 1, 2, 3]), np.array([5, 6, 7, 8]), np.array([1, 1, 1, 0], bool), 3)
    np.testing.assert_array_equal(hist, [[0, 0, 0], [0, 0, 0], [6, 5, 0], [7, 6, 5]])  # ties never see each other


# -- MovieLens ---------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "dat", "100k"])
def test_movielens_formats_follow_the_rules(tmp_path, fmt):
    rows = write_movielens(tmp_path, fmt)
    data = build_movielens(tmp_path, MovieLensOptions(split="per_user", history_length=6))
    assert data.info["format"] == fmt
    assert ("genome" in data.spec.names) == (fmt == "csv")
    assert data.num_samples == len(rows)  # every user has >= 5 train and >= 1 test samples
    assert data.global_ctr == pytest.approx(np.mean([r[2] >= 4 for r in rows]), abs=0.05)
    assert data.labels.sum() == sum(r[2] >= 4 for r in rows)
    check_histories(data, "pos_hist", data.labels == 1)
    check_histories(data, "neg_hist", data.labels == 0)
    np.testing.assert_array_equal(data.split, per_user_split(data.offsets, 0.2))


def test_movielens_global_split_and_genome(tmp_path):
    rows = write_movielens(tmp_path, "csv")
    data = build_movielens(tmp_path)  # auto: global cut with a genome
    assert data.info["split"] == "global"
    train = data.train_mask
    assert data.timestamps[train].max() <= CUT < data.timestamps[~train].min()
    for u in range(data.num_users):
        view = data.user(u)
        assert len(view.train_labels) >= 5 and len(view.test_labels) >= 1
    genome = data.lookups["genome"][1]
    assert genome.shape[1] == 4 and np.all(genome[0] == 0)
    assert data.info["genome"]["movies_with_genome"] == len({r[1] for r in rows}) - 2
    assert (np.abs(genome).sum(axis=1) == 0).sum() == 3  # padding row + the two movies without a genome


def test_movielens_errors_name_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="ratings.csv"):
        build_movielens(tmp_path)
    write_movielens(tmp_path, "csv")
    ratings = tmp_path / "ratings.csv"
    good = ratings.read_text().splitlines()
    for bad_line, message in [("1,abc,4.0,1200000000", "movie id"), ("1,3,7.0,1200000000", "rating"),
                              ("1,3,4.0", "columns")]:
        ratings.write_text("\n".join(good[:5] + [bad_line] + good[5:]) + "\n")
        with pytest.raises(RawDataError, match=rf"ratings.csv:6: .*{message}"):
            build_movielens(tmp_path)
    skipped = build_movielens(tmp_path, MovieLensOptions(skip_bad_rows=True))
    assert skipped.info["skipped_rows"] == {"ratings.csv": 1}
    assert skipped.info["raw_ratings"] == len(good) - 1


def test_real_dataset_cache_is_reused_only_when_valid(tmp_path, monkeypatch):
    from lcft_tf.data import movielens

    write_movielens(tmp_path / "raw", "dat")
    calls = []
    original = movielens.build_movielens
    monkeypatch.setattr(movielens, "build_movielens", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = load_real_dataset("movielens", str(tmp_path / "raw"), str(tmp_path / "cache"))
    again = load_real_dataset("movielens", str(tmp_path / "raw"), str(tmp_path / "cache"))
    assert len(calls) == 1 and again.summary() == first.summary()
    load_real_dataset("movielens", str(tmp_path / "raw"), str(tmp_path / "cache"), history_length=3)
    assert len(calls) == 2  # other options: not reused
    ratings = tmp_path / "raw" / "ratings.dat"
    os.utime(ratings, ns=(time.time_ns(), time.time_ns() + 10**9))
    load_real_dataset("movielens", str(tmp_path / "raw"), str(tmp_path / "cache"))
    assert len(calls) == 3  # changed file: not reused
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_real_dataset("movielens", None)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_real_dataset("netflix", str(tmp_path))


# -- Amazon ------------------------------------------------------------------------
def test_amazon_rules(tmp_path):
    reviews = write_amazon(tmp_path)
    data = build_amazon(tmp_path, AmazonOptions(negatives="one_per_review", min_train=2, history_length=5))
    assert data.global_ctr == pytest.approx(0.5)
    assert data.labels.sum() * 2 == data.num_samples  # one negative per review
    positives = data.labels == 1
    check_histories(data, "pos_hist", positives)
    check_histories(data, "pos_hist_cat", positives, values=data.features["category"])
    # each negative shares user and time with a positive, and is another item
    neg = np.flatnonzero(~positives)
    assert np.all(data.features["item_id"][neg] != data.features["item_id"][neg - 1])
    assert np.all(data.timestamps[neg] == data.timestamps[neg - 1])
    train = data.train_mask
    assert data.timestamps[train].max() <= 1_385_078_400 < data.timestamps[~train].min()
    assert data.info["raw_reviews"] == len(reviews)
    lines = (tmp_path / "reviews_Electronics_5.json").read_text().splitlines()
    (tmp_path / "reviews_Electronics_5.json").write_text("\n".join(lines[:3] + ["{not json"] + lines[3:]) + "\n")
    with pytest.raises(RawDataError, match="reviews_Electronics_5.json:4"):
        build_amazon(tmp_path)
    assert build_amazon(tmp_path, AmazonOptions(min_train=2, skip_bad_rows=True)).info["skipped_rows"] == {
        "reviews_Electronics_5.json": 1
    }


def test_tfds_builder_gives_the_loader_samples(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from lcft_tf.data import tfds_builders

    write_movielens(tmp_path / "raw", "100k")
    builder = tfds_builders.LcftMovielens(config="plain", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "raw")))
    reference = build_movielens(tmp_path / "raw")
    for split, mask in (("train", reference.train_mask), ("test", ~reference.train_mask)):
        examples = sorted(tfds.as_numpy(builder.as_dataset(split=split)), key=lambda e: (e["user"], e["timestamp"], e["item_id"]))
        assert len(examples) == mask.sum()
        assert sum(int(e["label"]) for e in examples) == reference.labels[mask].sum()
        index = np.flatnonzero(mask)
        order = np.lexsort((reference.features["item_id"][index], reference.timestamps[index],
                            np.repeat(np.arange(reference.num_users), np.diff(reference.offsets))[index]))
        np.testing.assert_array_equal(np.stack([e["pos_hist"] for e in examples]), reference.features["pos_hist"][index][order])
