"""Datasets: synthetic drift, MovieLens / Amazon rules, histories without
leakage, splits, caching and the errors for bad raw files."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import numpy as np
import pytest
from raw_fixtures import CUT, gzip_files, insert_line, write_amazon, write_movielens

from lcft_tf.data import load_real_dataset
from lcft_tf.data.amazon import AmazonOptions, build_amazon, user_negative_ratios
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


# -- same-second groups and the per-user split -------------------------------------
def reference_per_user_split(offsets, timestamps, fraction):
    """The rule of docs/data.md, one user at a time."""
    out = []
    for a, b in zip(offsets[:-1], offsets[1:]):
        n = b - a
        s = b - (min(max(round(n * fraction), 1), n - 1) if n >= 2 else 0)
        if a < s < b and timestamps[s - 1] == timestamps[s]:
            g = s
            while g > a and timestamps[g - 1] == timestamps[s]:
                g -= 1
            if g > a:
                s = g
            else:
                while s < b and timestamps[s] == timestamps[g]:
                    s += 1
        out.append(s)
    return np.array(out)


def test_per_user_split_keeps_same_second_ratings_together():
    offsets = np.array([0, 5, 10, 13, 15])
    timestamps = np.array([1, 2, 3, 3, 3, 1, 1, 1, 1, 2, 5, 5, 5, 7, 8])
    # plain cuts: 4, 9, 12, 14 -> the tie 3,3|3 goes to test; 1,1,1|1 would leave no train: goes to train;
    # a user with one timestamp is all train (dropped later by min_test); no tie: unchanged.
    np.testing.assert_array_equal(per_user_split(offsets, 0.2), [4, 9, 12, 14])
    np.testing.assert_array_equal(per_user_split(offsets, 0.2, timestamps), [2, 9, 13, 14])
    np.testing.assert_array_equal(per_user_split(offsets, 0.5, timestamps), [2, 9, 13, 14])
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 30, 300)
    offsets = np.r_[0, np.cumsum(sizes)]
    timestamps = np.concatenate([np.sort(rng.integers(0, max(2, n // 2), n)) for n in sizes])
    for fraction in (0.1, 0.2, 0.5, 0.8):
        split = per_user_split(offsets, fraction, timestamps)
        np.testing.assert_array_equal(split, reference_per_user_split(offsets, timestamps, fraction))
        inside = (split > offsets[:-1]) & (split < offsets[1:])
        assert np.all(timestamps[split[inside] - 1] < timestamps[split[inside]])  # no group is cut


# -- option validation -------------------------------------------------------------
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MovieLensOptions(split="random"), "split"),
        (lambda: MovieLensOptions(test_fraction=1.0), "test_fraction"),
        (lambda: MovieLensOptions(cut_timestamp=1.5e9), "cut_timestamp"),
        (lambda: MovieLensOptions(min_train=0), "min_train"),
        (lambda: AmazonOptions(category="../Books"), "category"),
        (lambda: AmazonOptions(negatives="two"), "negatives"),
        (lambda: AmazonOptions(negative_ratios=()), "negative_ratios"),
        (lambda: AmazonOptions(negative_ratios=(1, 0)), "negative_ratios"),
        (lambda: AmazonOptions(negative_ratios=(1.5,)), "negative_ratios"),
        (lambda: AmazonOptions(split="auto"), "split"),
        (lambda: AmazonOptions(history_length=0), "history_length"),
    ],
)
def test_options_refuse_bad_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# -- Amazon as the paper built it --------------------------------------------------
def test_amazon_per_user_negative_ratios(tmp_path):
    reviews = write_amazon(tmp_path, num_users=60)
    reviewed = {}
    for r in reviews:
        reviewed.setdefault(r["reviewerID"], set()).add(r["asin"])
    for options in (AmazonOptions(min_train=5), AmazonOptions(min_train=2, split="per_user", negative_ratios=(2, 5))):
        data = build_amazon(tmp_path, options)
        assert data.info["local_ctr_groups"] == "negative_ratio"
        assert data.info["negative_ratios"] == sorted(set(options.negative_ratios))
        ratios = np.zeros(data.num_users, np.int64)
        for u in range(data.num_users):
            a, b = data.offsets[u], data.offsets[u + 1]
            labels, times = data.labels[a:b], data.timestamps[a:b]
            starts = np.flatnonzero(labels == 1)
            ratios[u] = starts[1] - starts[0] - 1
            # each review is followed by the same r negatives at its second
            np.testing.assert_array_equal(np.diff(np.r_[starts, b - a]), ratios[u] + 1)
            np.testing.assert_array_equal(times, np.repeat(times[starts], ratios[u] + 1))
        assert set(ratios) <= set(options.negative_ratios) and len(set(ratios)) > 1
        np.testing.assert_array_equal(data.local_ctrs(), 1 / (1 + ratios))  # exact: reviews never split
        np.testing.assert_array_equal(user_negative_ratios(data), ratios)
        subset = [3, 0, 7]
        np.testing.assert_array_equal(user_negative_ratios(data.subset_users(np.array(subset))), ratios[subset])
        if options.split == "global":  # kept: >= min_train train and >= min_test test *reviews*, from the raw file
            counts = {n: (sum(r["unixReviewTime"] <= options.cut_timestamp for r in reviews if r["reviewerID"] == n),
                          sum(r["unixReviewTime"] > options.cut_timestamp for r in reviews if r["reviewerID"] == n))
                      for n in sorted(reviewed)}
            kept = [c for c in counts.values() if c[0] >= 5 and c[1] >= 1]
            assert 0 < len(kept) < len(counts) and data.num_users == len(kept)
            train = data.train_mask
            users = np.repeat(np.arange(data.num_users), np.diff(data.offsets))
            np.testing.assert_array_equal(np.bincount(users[train & (data.labels == 1)]), [c[0] for c in kept])
            np.testing.assert_array_equal(np.bincount(users[~train & (data.labels == 1)]), [c[1] for c in kept])
        if options.split == "per_user":  # keeps every user: dataset user u is the u-th raw name
            # negatives are items their user never reviewed, checked against the raw reviews
            asins, names = sorted({r["asin"] for r in reviews}), sorted(reviewed)
            assert data.num_users == len(names) and data.spec["item_id"].vocab_size == len(asins) + 1
            user_of = np.repeat(np.arange(data.num_users), np.diff(data.offsets))
            for k in range(data.num_samples):
                assert (asins[data.features["item_id"][k] - 1] in reviewed[names[user_of[k]]]) == data.labels[k]
    w_g = build_amazon(tmp_path, AmazonOptions(min_train=2)).global_ctr
    assert 0.1 < w_g < 0.3  # ~1/6 for uniform 1..9 (the paper's 0.17)


def test_amazon_one_per_review_warns_that_there_is_no_drift(tmp_path, caplog):
    write_amazon(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lcft_tf.data.amazon"):
        data = build_amazon(tmp_path, AmazonOptions(negatives="one_per_review", min_train=2))
    assert np.all(data.local_ctrs() == 0.5) and "no drift" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lcft_tf.data.amazon"):
        build_amazon(tmp_path, AmazonOptions(min_train=2))
    assert "no drift" not in caplog.text


def test_amazon_any_category_gzip_and_optional_meta(tmp_path, caplog):
    plain = build_amazon(write_amazon(tmp_path / "a") and tmp_path / "a", AmazonOptions(min_train=2))
    write_amazon(tmp_path / "b", category="Toys_and_Games", meta=False)
    gzip_files(tmp_path / "b")
    with caplog.at_level(logging.WARNING, logger="lcft_tf.data.amazon"):
        toys = build_amazon(tmp_path / "b", AmazonOptions(min_train=2))  # found: the only reviews file
    assert "its own category" in caplog.text and toys.info["reviews_file"] == "reviews_Toys_and_Games_5.json.gz"
    np.testing.assert_array_equal(toys.features["category"], toys.features["item_id"])
    np.testing.assert_array_equal(toys.labels, plain.labels)  # same reviews, same seed: same samples
    np.testing.assert_array_equal(toys.features["item_id"], plain.features["item_id"])
    write_amazon(tmp_path / "b", category="Books")
    with pytest.raises(FileNotFoundError, match="several.*amazon_category"):
        build_amazon(tmp_path / "b")
    assert build_amazon(tmp_path / "b", AmazonOptions(category="Books", min_train=2)).info["meta_file"] == "meta_Books.json"
    with pytest.raises(FileNotFoundError, match="reviews_Music_5.json"):
        build_amazon(tmp_path / "b", AmazonOptions(category="Music"))


# -- MovieLens: gzip, missing files, the cache key ---------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "dat", "100k"])
def test_movielens_reads_gzip(tmp_path, fmt):
    write_movielens(tmp_path / "plain", fmt)
    shutil.copytree(tmp_path / "plain", tmp_path / "gz")
    gzip_files(tmp_path / "gz")
    a, b = build_movielens(tmp_path / "plain"), build_movielens(tmp_path / "gz")
    assert a.summary() == b.summary() and a.spec == b.spec
    for name in a.features:
        np.testing.assert_array_equal(a.features[name], b.features[name])
    for name in a.lookups:
        np.testing.assert_array_equal(a.lookups[name][1], b.lookups[name][1])


def test_missing_files_are_named_together(tmp_path):
    with pytest.raises(FileNotFoundError, match="no raw files.*ratings.csv, movies.csv"):
        build_movielens(tmp_path)
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(FileNotFoundError, match="missing u.item"):
        build_movielens(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no reviews_<Category>_5.json"):
        build_amazon(tmp_path)


def test_real_dataset_takes_option_objects(tmp_path):
    write_amazon(tmp_path / "raw")
    raw, cache = str(tmp_path / "raw"), str(tmp_path / "cache")
    a = load_real_dataset("amazon", raw, cache, AmazonOptions(min_train=2))
    b = load_real_dataset("amazon", raw, cache, AmazonOptions(min_train=2, negative_ratios=(4,)))
    assert set(user_negative_ratios(b)) == {4} and a.num_samples != b.num_samples  # other key, other cache
    again = load_real_dataset("amazon", raw, cache, min_train=2)  # keywords: the same options
    np.testing.assert_array_equal(again.labels, a.labels)
    assert len(list((tmp_path / "cache" / "amazon").iterdir())) == 2
    with pytest.raises(ValueError, match="AmazonOptions"):
        load_real_dataset("amazon", raw, cache, MovieLensOptions())
    with pytest.raises(ValueError, match="AmazonOptions"):
        load_real_dataset("amazon", raw, cache, AmazonOptions(), min_train=2)


# -- bad input at the edges (one case each) ----------------------------------------
def _ratings_line(line):
    return lambda d: insert_line(d / "ratings.csv", 3, line)


def _genome_line(line):
    return lambda d: insert_line(d / "genome-scores.csv", 3, line)


def _review_line(line):
    return lambda d: insert_line(d / "reviews_Electronics_5.json", 2, line)


def _review(**changes):
    return json.dumps({"reviewerID": "U0000", "asin": "B00001", "unixReviewTime": 1385000000, **changes}).encode()


def _one_item(d):
    lines = (d / "reviews_Electronics_5.json").read_text().splitlines()
    (d / "reviews_Electronics_5.json").write_text("".join(
        json.dumps({**json.loads(x), "asin": "B00001"}) + "\n" for x in lines))


def _headerless(name):
    def edit(d):
        (d / name).write_text("\n".join((d / name).read_text().splitlines()[1:]) + "\n")

    return edit


BAD_INPUT = [
    # case, fixture, edit, error (regex), file whose row is skipped under skip_bad_rows (None: never skippable)
    ("genome_nan", "csv", _genome_line(b"3,1,nan"), r"genome-scores.csv:3: relevance", "genome-scores.csv"),
    ("genome_inf", "csv", _genome_line(b"3,1,inf"), r"genome-scores.csv:3: relevance", "genome-scores.csv"),
    ("genome_overflow_float32", "csv", _genome_line(b"3,1,1e39"), r"genome-scores.csv:3: relevance", "genome-scores.csv"),
    ("genome_tag_beyond_tags_file", "csv", _genome_line(b"3,1000000,0.5"), r"genome-scores.csv:3: tag id 1000000 outside \[1, 4\]", "genome-scores.csv"),
    ("genome_tag_without_tags_file", "csv", lambda d: (_genome_line(b"3,1000000,0.5")(d), (d / "genome-tags.csv").unlink()),
     r"genome-scores.csv:3: tag id 1000000 outside \[1, 10000\]", "genome-scores.csv"),
    ("invalid_utf8_csv", "csv", _ratings_line(b"1,3,4.0,12\xff00000000"), r"ratings.csv:3: invalid utf-8 byte", "ratings.csv"),
    ("invalid_utf8_json", "amazon", _review_line(_review()[:-1] + b', "reviewText": "\xfe"}'), r"_5.json:2: invalid utf-8", "reviews_Electronics_5.json"),
    ("nested_json", "amazon", _review_line(b'{"a":' * 100_000 + b"1" + b"}" * 100_000), r"_5.json:2: nested too deeply", "reviews_Electronics_5.json"),
    ("time_2_pow_70", "amazon", _review_line(_review(unixReviewTime=2**70)), r"_5.json:2: unixReviewTime \d+ outside", "reviews_Electronics_5.json"),
    ("time_float", "amazon", _review_line(_review(unixReviewTime=1.385e9)), r"_5.json:2: unixReviewTime must be an integer", "reviews_Electronics_5.json"),
    ("id_3.0_csv", "csv", _ratings_line(b"1,3.0,4.0,1200000000"), r"ratings.csv:3: movie id is not an integer literal", "ratings.csv"),
    ("id_1e20_csv", "csv", _ratings_line(b"1e20,3,4.0,1200000000"), r"ratings.csv:3: user id is not an integer literal", "ratings.csv"),
    ("id_huge_csv", "csv", _ratings_line(b"1,100000000000000000000,4.0,1200000000"), r"ratings.csv:3: movie id \d+ outside", "ratings.csv"),
    ("id_3.0_dat", "dat", lambda d: insert_line(d / "ratings.dat", 3, b"1::3.0::4::1200000000"), r"ratings.dat:3: movie id is not an integer literal", "ratings.dat"),
    ("id_1e20_100k", "100k", lambda d: insert_line(d / "u.data", 3, b"1\t1e20\t4\t1200000000"), r"u.data:3: movie id is not an integer literal", "u.data"),
    ("id_3.0_movies_csv", "csv", lambda d: insert_line(d / "movies.csv", 3, b"3.0,x,Drama"), r"movies.csv:3: movie id is not an integer literal", "movies.csv"),
    ("headerless_ratings_csv", "csv", _headerless("ratings.csv"), r"ratings.csv:1: expected the header 'userId,movieId,rating,timestamp'", None),
    ("headerless_genome_csv", "csv", _headerless("genome-scores.csv"), r"genome-scores.csv:1: expected the header", None),
    ("one_item_amazon", "amazon", _one_item, r"_5.json: 1 item reviewed; negatives need at least 2 items", None),
]


@pytest.mark.parametrize("case, fixture, edit, error, skipped_in", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_a_file_line_error_or_a_counted_skip(tmp_path, case, fixture, edit, error, skipped_in):
    if fixture == "amazon":
        write_amazon(tmp_path)
        build = lambda skip: build_amazon(tmp_path, AmazonOptions(min_train=2, skip_bad_rows=skip))  # noqa: E731
    else:
        write_movielens(tmp_path, fixture)
        build = lambda skip: build_movielens(tmp_path, MovieLensOptions(skip_bad_rows=skip))  # noqa: E731
    clean = build(False)
    edit(tmp_path)
    with pytest.raises(RawDataError, match=error):
        build(False)
    if skipped_in is None:
        with pytest.raises(RawDataError, match=error):
            build(True)  # not a row: skipping cannot help
        return
    skipped = build(True)
    assert skipped.info["skipped_rows"] == {skipped_in: 1}
    assert skipped.summary() == clean.summary()  # the bad row, and only it, is gone
    for name in clean.features:
        np.testing.assert_array_equal(skipped.features[name], clean.features[name])
    for name in clean.lookups:
        np.testing.assert_array_equal(skipped.lookups[name][1], clean.lookups[name][1])


def test_draw_negatives_avoids_forbidden_items():
    from lcft_tf.data.amazon import draw_negatives

    # owner 0 may only get item 10 of 10; owner 1 anything but item 1
    forbidden = np.sort(np.r_[np.arange(1, 10), 11 + 1])
    out = draw_negatives(np.random.default_rng(0), np.array([0, 1]), forbidden, 10, np.array([50, 400]))
    assert set(out[:50].tolist()) == {10}
    assert set(out[50:].tolist()) == set(range(2, 11))  # 400 uniform draws cover the 9 allowed items


def test_tfds_amazon_builder_gives_the_loader_samples(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    from lcft_tf.data import tfds_builders

    write_amazon(tmp_path / "raw", num_users=8)
    builder = tfds_builders.LcftAmazon(config="default", data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "raw")))
    reference = build_amazon(tmp_path / "raw", tfds_builders.LcftAmazon.BUILDER_CONFIGS[0].options)
    for split, mask in (("train", reference.train_mask), ("test", ~reference.train_mask)):
        examples = list(tfds.as_numpy(builder.as_dataset(split=split)))
        assert len(examples) == mask.sum()
        assert sum(int(e["label"]) for e in examples) == reference.labels[mask].sum()
        assert sorted(int(e["item_id"]) for e in examples) == sorted(reference.features["item_id"][mask].tolist())
