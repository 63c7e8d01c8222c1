"""CoDA (docs/coda.md): retrieval leakage and parity with a brute-force top-K,
sample embeddings against the Keras layers, the sample classifier inside
LiteRT, the per-user procedure's edge cases, the few-sample generator."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lcft_tf import models
from lcft_tf.cloud.export import ExportConfig, export_tflite
from lcft_tf.artifacts.coda_files import Retrieval
from lcft_tf.cloud.retrieval import RetrievalConfig, dataset_embeddings, retrieve, sample_embeddings
from lcft_tf.data.dataset import user_index
from lcft_tf.data.synthetic import SyntheticConfig, generate
from lcft_tf.device.coda_fine_tune import (CodaConfig, FineMatching, coda_fine_tune_and_predict, importance_weights,
                                           method_config, select_retrieved)
from lcft_tf.device.fine_tune import fine_tune_and_predict
from lcft_tf.device.model import OnDeviceModel
from lcft_tf.evaluation.metrics import auc
from lcft_tf.models.sample_classifier import EMBEDDING_FEATURE, build_sample_classifier
from cloud_settings import fixed_epochs_cloud

# The keep rule the measurements of docs/coda.md "Measured (synthetic)" were made with.
THRESHOLD = CodaConfig(keep="threshold", keep_value=0.5, classifier_epochs=10)
SMALL = SyntheticConfig(num_users=30, num_items=40, mean_samples_per_user=25, min_samples_per_user=4,
                        history_length=4, dense_dim=3, seed=5)


@pytest.fixture(scope="module")
def small():
    data = generate(SMALL)
    model = models.build("wide_deep", data.spec, embedding_dim=4, hidden_units=(8,), seed=2)
    return data, model, dataset_embeddings(model, data)


@pytest.fixture(scope="module")
def devices(small, tmp_path_factory):
    """The small CTR model and a logistic-regression sample classifier, exported."""
    data, model, emb = small
    out = tmp_path_factory.mktemp("coda")
    export_tflite(model, out / "ctr.tflite", ExportConfig(batch_size=8, learning_rate=0.1, global_ctr=data.global_ctr))
    export_tflite(build_sample_classifier(emb.shape[1], seed=1), out / "clf.tflite",
                  ExportConfig(batch_size=8, learning_rate=0.5))
    return OnDeviceModel(out / "ctr.tflite"), OnDeviceModel(out / "clf.tflite")


# -- retrieval -------------------------------------------------------------------
def test_sample_embeddings_match_the_keras_tables(small):
    """Independent reference: the model's own lookups / masked mean (TF)."""
    import tensorflow as tf

    from lcft_tf.models.layers import masked_mean

    data, model, emb = small
    feats = {k: v.copy() for k, v in data.take(slice(0, 50)).items()}  # take() of a slice is a view
    feats["item_id"][0] = 10_000  # out of vocabulary: the model's extra row
    parts = [model.embed(n, feats[n]).numpy() for n in ("item_id", "category")]
    parts += [masked_mean(*model.embed_sequence(data.spec[n], tf.constant(feats[n]))).numpy() for n in ("pos_hist", "neg_hist")]
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)
    expected = unit(np.concatenate([unit(p) * (np.linalg.norm(p, axis=1, keepdims=True) > 0) for p in parts], axis=1))
    got = sample_embeddings(model, feats, ("item_id", "category", "pos_hist", "neg_hist"))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(dataset_embeddings(model, data, chunk=7)[:50][1:], got[1:], atol=1e-6)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def brute_force_top_k(emb, offsets, split, k, start=None):
    """Per user: normalised mean of its train rows from ``start`` (default:
    its first) against every other user's train rows, sorted by (score desc,
    index asc) — plain numpy loops."""
    start = offsets[:-1] if start is None else start
    users = user_index(offsets)
    train = np.arange(len(emb)) < split[users]
    ids, scores = np.full((len(split), k), -1), np.zeros((len(split), k), np.float32)
    for u in range(len(split)):
        if split[u] == start[u]:
            continue
        q = emb[start[u] : split[u]].sum(0)
        q = q / np.linalg.norm(q)
        cand = np.flatnonzero(train & (users != u))
        s = emb[cand] @ q
        order = sorted(range(len(cand)), key=lambda i: (-s[i], cand[i]))[:k]
        ids[u, : len(order)] = cand[order]
        scores[u, : len(order)] = s[order]
    return ids, scores


def test_faiss_retrieval_equals_brute_force_top_k(small):
    data, _, emb = small
    got = retrieve(emb, data.offsets, data.split, RetrievalConfig(k=15))
    ids, scores = brute_force_top_k(emb, data.offsets, data.split, 15)
    np.testing.assert_array_equal(got.ids, ids)
    np.testing.assert_allclose(got.scores, scores, atol=1e-5)
    # HNSW is approximate: on this small pool it must still find most of them.
    approx = retrieve(emb, data.offsets, data.split, RetrievalConfig(k=15, index="hnsw"))
    recall = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(approx.ids, ids)])
    assert recall > 0.9


def test_capped_users_query_with_their_local_samples_only(small):
    """Under ``max_local_samples`` the query is the mean of the device's last
    N train samples; the pool (every train sample) and the exclusion of all
    the user's own samples, cut ones included, are unchanged."""
    data, _, emb = small
    capped = dataclasses.replace(data, max_local_samples=3)
    got = retrieve(emb, capped.offsets, capped.split, RetrievalConfig(k=15), capped.local_start)
    ids, scores = brute_force_top_k(emb, data.offsets, data.split, 15, capped.local_start)
    np.testing.assert_array_equal(got.ids, ids)
    np.testing.assert_allclose(got.scores, scores, atol=1e-5)
    assert got.stats["pool_size"] == int(data.train_mask.sum())
    assert not np.array_equal(got.ids, retrieve(emb, data.offsets, data.split, RetrievalConfig(k=15)).ids)
    with pytest.raises(ValueError, match="local_start"):
        retrieve(emb, data.offsets, data.split, RetrievalConfig(k=15), data.split + 1)


@pytest.mark.parametrize("config", [RetrievalConfig(k=40), RetrievalConfig(k=40, pool_size=300, seed=3),
                                    RetrievalConfig(k=40, index="ivf", ivf_lists=4, ivf_probe=4)])
def test_retrieved_samples_are_other_users_train_samples(small, config):
    """Brute force over every result: never the user's own sample, never a
    test-period sample, no duplicates; K results whenever the pool allows."""
    data, _, emb = small
    got = retrieve(emb, data.offsets, data.split, config)
    users = user_index(data.offsets)
    is_train = np.arange(data.num_samples) < data.split[users]
    assert got.ids.shape == (data.num_users, 40) and got.ids.dtype == np.int64
    for u in range(data.num_users):
        row = got.user(u)
        assert len(row) == 40 or config.index == "ivf"
        assert len(set(row.tolist())) == len(row)
        for i in row:
            assert users[i] != u, (u, i)
            assert is_train[i], (u, i)


def test_retrieval_is_deterministic_and_saves_without_pickle(small, tmp_path):
    data, _, emb = small
    config = RetrievalConfig(k=10, pool_size=200, seed=7)
    a, b = (retrieve(emb, data.offsets, data.split, config) for _ in range(2))
    np.testing.assert_array_equal(a.ids, b.ids)
    other = retrieve(emb, data.offsets, data.split, dataclasses.replace(config, seed=8))
    assert not np.array_equal(a.ids, other.ids)  # the seed picks the pool
    a.save(tmp_path / "r.safetensors")
    back = Retrieval.load(tmp_path / "r.safetensors")
    np.testing.assert_array_equal(back.ids, a.ids)
    np.testing.assert_array_equal(back.scores, a.scores)
    assert back.stats["pool_size"] == 200
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable retrieval file"):
        Retrieval.load(tmp_path / "bad.safetensors")


def test_retrieval_rejects_bad_input(small):
    data, model, emb = small
    with pytest.raises(ValueError, match="k must be"):
        RetrievalConfig(k=-1)
    with pytest.raises(ValueError, match="index must be"):
        RetrievalConfig(index="lsh")
    bad = emb.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        retrieve(bad, data.offsets, data.split)
    with pytest.raises(ValueError, match="embeddings must be"):
        retrieve(emb[:-1], data.offsets, data.split)
    with pytest.raises(ValueError, match="embedding fields"):
        sample_embeddings(model, data.take(slice(0, 3)), ("genome",))
    with pytest.raises(ValueError, match="no embedding tables"):
        sample_embeddings(models.build("lr", data.spec), data.take(slice(0, 3)))


# -- the sample classifier and the per-user procedure ----------------------------
def test_classifier_separates_two_distributions_in_litert(tmp_path):
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    centre = np.eye(8, dtype=np.float32)
    local = unit(centre[0] + 0.3 * rng.normal(size=(20, 8))).astype(np.float32)
    near = unit(centre[0] + 0.3 * rng.normal(size=(30, 8))).astype(np.float32)  # local-like
    far = unit(centre[1] + 0.3 * rng.normal(size=(30, 8))).astype(np.float32)
    export_tflite(build_sample_classifier(8, seed=0), tmp_path / "c.tflite", ExportConfig(batch_size=8, learning_rate=0.5))
    clf = OnDeviceModel(tmp_path / "c.tflite")
    state = clf.save()
    keep, p = select_retrieved(clf, state, local, np.concatenate([near, far]), THRESHOLD, seed=0)
    assert auc(np.r_[np.ones(30), np.zeros(30)], p) > 0.9
    print("auc", auc(np.r_[np.ones(30), np.zeros(30)], p), "kept near/far", keep[:30].mean(), keep[30:].mean())
    # Near samples look local but were trained as 0: balanced, their ideal p is 2/3, so about half clear 0.5.
    assert keep[:30].mean() > 0.4 and keep[30:].mean() < 0.1
    fraction = CodaConfig(keep="fraction", keep_value=0.25)
    keep, _ = select_retrieved(clf, state, local, np.concatenate([near, far]), fraction, seed=0)
    assert keep.sum() == 15 and keep[30:].sum() == 0


def _user_inputs(data, emb, retrieval, u):
    view = data.user(u)
    ids = retrieval.user(u)
    a, s = int(data.offsets[u]), int(data.split[u])
    return view, data.take(ids), data.labels[ids], emb[a:s], emb[ids]


def test_k_zero_is_local_and_threshold_zero_is_retrieval_only(small, devices):
    data, _, emb = small
    ctr, clf = devices
    state, clf_state = ctr.save(), clf.save()
    retrieval = retrieve(emb, data.offsets, data.split, RetrievalConfig(k=12))
    u = 2
    view, rf, rl, le, re_ = _user_inputs(data, emb, retrieval, u)
    empty = {k: v[:0] for k, v in rf.items()}
    local = fine_tune_and_predict(ctr, state, view.train_features, view.train_labels.astype(np.float32),
                                  view.test_features, 0.1, 2)
    soft2 = fine_tune_and_predict(ctr, state, view.train_features, ctr.correct(view.train_labels, "soft2"),
                                  view.test_features, 0.1, 2)
    for method, expected in (("coda", local), ("retrieval_only", local), ("coda_lcft", soft2)):
        got = coda_fine_tune_and_predict(ctr, state, view.train_features, view.train_labels, view.test_features,
                                         empty, rl[:0], 0.1, 2, method_config(method), FineMatching(clf, clf_state, le, re_[:0]))
        np.testing.assert_array_equal(got.predictions, expected)
        assert got.kept == 0
    everything = coda_fine_tune_and_predict(ctr, state, view.train_features, view.train_labels, view.test_features,
                                            rf, rl, 0.1, 2, method_config("coda", THRESHOLD, keep_value=0.0), FineMatching(clf, clf_state, le, re_))
    only = coda_fine_tune_and_predict(ctr, state, view.train_features, view.train_labels, view.test_features,
                                      rf, rl, 0.1, 2, method_config("retrieval_only"))
    assert everything.kept == only.kept == 12
    np.testing.assert_array_equal(everything.predictions, only.predictions)
    assert not np.allclose(only.predictions, local)  # the retrieved samples were trained on


def test_importance_weights_match_a_bisection_reference():
    """min(1, c p/(1-p)) with c found by plain bisection on the weight sum."""
    rng = np.random.default_rng(4)
    for _ in range(50):
        k = int(rng.integers(1, 40))
        p = rng.random(k) ** rng.integers(1, 5)
        share = float(rng.uniform(0.02, 1.0))
        ratio = np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6))
        lo, hi = 0.0, 1e12
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if np.minimum(1, mid * ratio).sum() < share * k else (lo, mid)
        np.testing.assert_allclose(importance_weights(p, share), np.minimum(1, hi * ratio), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(importance_weights(np.array([0.9, 0.5, 0.1, 0.01]), 0.5),
                               [1.0, 0.891892, 0.099099, 0.009009], atol=1e-5)  # known answer: sums to 2
    with pytest.raises(ValueError, match="mass_share"):
        importance_weights(np.array([0.5]), 0.0)


def test_weight_rule_steps_by_absolute_weight(small, devices):
    """Weights act absolutely, not as a per-batch mean: mass share 1 (every
    weight 1) trains as retrieval_only; near-zero weights train as Local
    (K = 16, two whole batches of 8, so the local batches line up with Local's)."""
    data, _, emb = small
    ctr, clf = devices
    state, clf_state = ctr.save(), clf.save()
    view, rf, rl, le, re_ = _user_inputs(data, emb, retrieve(emb, data.offsets, data.split, RetrievalConfig(k=16)), 2)
    assert ctr.batch_size == 8
    run = lambda config, match=None: coda_fine_tune_and_predict(
        ctr, state, view.train_features, view.train_labels, view.test_features, rf, rl, 0.1, 2, config,
        FineMatching(clf, clf_state, le, re_, matched=match))
    only = run(method_config("retrieval_only"))
    every = run(method_config("coda", keep="weight", keep_value=1.0))
    assert every.kept == pytest.approx(16.0) and every.trained == 16
    np.testing.assert_allclose(every.predictions, only.predictions, atol=1e-6)
    tiny = np.full(16, 1e-7, np.float32)  # as select_retrieved returns them under the weight rule
    nearly_local = run(method_config("coda", keep="weight", keep_value=0.5), (tiny, np.full(16, 0.5, np.float32)))
    local = fine_tune_and_predict(ctr, state, view.train_features, view.train_labels.astype(np.float32),
                                  view.test_features, 0.1, 2)
    np.testing.assert_allclose(nearly_local.predictions, local, atol=1e-5)
    assert np.abs(only.predictions - local).max() > 1e-3  # the retrieved samples matter at weight 1
    assert nearly_local.trained == 16 and nearly_local.kept == pytest.approx(16e-7)


def test_coda_rejects_bad_input(small, devices):
    data, _, emb = small
    ctr, clf = devices
    view, rf, rl, le, re_ = _user_inputs(data, emb, retrieve(emb, data.offsets, data.split, RetrievalConfig(k=5)), 1)
    with pytest.raises(ValueError, match="keep must be"):
        CodaConfig(keep="best")
    with pytest.raises(ValueError, match="unknown CoDA method"):
        method_config("coda2")
    with pytest.raises(ValueError, match="classifier, its state"):
        coda_fine_tune_and_predict(ctr, ctr.save(), view.train_features, view.train_labels, view.test_features,
                                   rf, rl, 0.1, 1, method_config("coda"))
    with pytest.raises(ValueError, match="16-d"):
        select_retrieved(clf, clf.save(), le[:, :8], re_[:, :8], CodaConfig())
    assert clf.spec[EMBEDDING_FEATURE].dim == 16


# -- the few-sample generator -------------------------------------------------------
def test_few_sample_share_changes_only_the_chosen_users_sizes():
    base = SyntheticConfig(num_users=200, mean_samples_per_user=50, seed=4)
    plain = generate(base)
    few = generate(dataclasses.replace(base, few_sample_share=0.5, few_sample_range=(5, 9)))
    a, b = np.diff(plain.offsets), np.diff(few.offsets)
    changed = a != b
    assert 0.35 < changed.mean() < 0.65
    assert np.all((b[changed] >= 5) & (b[changed] <= 9))
    assert {5, 9} <= set(b[changed].tolist())  # both ends of the range are drawn
    with pytest.raises(ValueError, match="few_sample_share"):
        SyntheticConfig(few_sample_share=1.5)
    with pytest.raises(ValueError, match="few_sample_range"):
        SyntheticConfig(few_sample_range=(1, 3))


def _agreement(data, member):
    """Mean correlation of user-centred per-item click rates over the items
    both users saw: (pairs in one group, pairs in different groups)."""
    users = user_index(data.offsets)
    rates = np.full((data.num_users, int(data.features["item_id"].max()) + 1), np.nan)
    for u in range(data.num_users):
        items, labels = data.features["item_id"][users == u], data.labels[users == u]
        seen = np.unique(items)
        rates[u, seen] = [labels[items == j].mean() for j in seen]
        rates[u] -= np.nanmean(rates[u])
    same, other = [], []
    for a in range(data.num_users):
        for b in range(a + 1, data.num_users):
            both = ~np.isnan(rates[a]) & ~np.isnan(rates[b])
            (same if member[a] == member[b] else other).append(np.corrcoef(rates[a, both], rates[b, both])[0, 1])
    return float(np.mean(same)), float(np.mean(other))


def test_taste_clusters_make_same_cluster_users_agree_and_leave_the_rest_unchanged():
    """Independent check from the labels: on items both saw, two users of one
    cluster click alike (user-centred click rates correlate), two of different
    clusters do not; clusters change only the clicks (and the histories they
    feed), and 0 clusters is the data of before (hash taken before the change)."""
    import hashlib

    pinned = generate(SyntheticConfig(num_users=50, mean_samples_per_user=30, seed=3, few_sample_share=0.3))
    digest = hashlib.sha256(pinned.labels.tobytes() + pinned.features["item_id"].tobytes()
                            + pinned.features["pos_hist"].tobytes() + pinned.offsets.tobytes()).hexdigest()[:16]
    assert digest == "215d07e0f5ecb032" and "taste_cluster" not in pinned.info
    base = SyntheticConfig(num_users=120, num_items=20, num_categories=4, mean_samples_per_user=300, seed=1)
    plain, data = generate(base), generate(dataclasses.replace(base, taste_clusters=3, taste_noise=0.3))
    for name in ("item_id", "category"):
        np.testing.assert_array_equal(plain.features[name], data.features[name])
    np.testing.assert_array_equal(plain.offsets, data.offsets)
    assert not np.array_equal(plain.labels, data.labels)
    member = data.info["taste_cluster"]
    assert set(member.tolist()) == {1, 2, 3}
    same_c, other_c = _agreement(data, member)
    same_p, other_p = _agreement(plain, member)  # control: the same grouping without clusters
    print("clusters", same_c, other_c, "plain", same_p, other_p)
    assert same_c - other_c > 0.3 and abs(same_p - other_p) < 0.1
    with pytest.raises(ValueError, match="taste_noise"):
        SyntheticConfig(taste_noise=1.5)
    with pytest.raises(ValueError, match="taste_clusters"):
        SyntheticConfig(taste_clusters=-1)


def test_exposure_taste_makes_same_cluster_users_see_alike():
    """Users of one cluster see similar items (per-user item shares correlate)
    only with exposure_taste > 0; sizes and the cluster draw are unchanged."""
    base = SyntheticConfig(num_users=120, num_items=20, num_categories=4, mean_samples_per_user=300,
                           taste_clusters=3, seed=1)
    plain, data = generate(base), generate(dataclasses.replace(base, exposure_taste=1.0))
    np.testing.assert_array_equal(plain.offsets, data.offsets)
    np.testing.assert_array_equal(plain.info["taste_cluster"], data.info["taste_cluster"])
    member = data.info["taste_cluster"]

    def seen_alike(d):
        users = user_index(d.offsets)
        counts = np.zeros((d.num_users, base.num_items + 1))
        np.add.at(counts, (users, d.features["item_id"]), 1)
        share = counts / counts.sum(1, keepdims=True)
        r = np.corrcoef(share[:, 1:])
        pair = np.triu(np.ones_like(r, bool), 1)
        same = member[:, None] == member[None, :]
        return r[pair & same].mean() - r[pair & ~same].mean()

    gap, control = seen_alike(data), seen_alike(plain)
    print("exposure gap", gap, "control", control)
    assert gap > 0.2 and abs(control) < 0.05
    with pytest.raises(ValueError, match="exposure_taste"):
        SyntheticConfig(exposure_taste=-1.0)


# -- the effect of fine matching -------------------------------------------------------
FEW = SyntheticConfig(num_users=300, num_items=100, mean_samples_per_user=60, few_sample_share=0.5,
                      few_sample_range=(10, 40), history_length=5, dense_dim=4, test_fraction=0.5, seed=0)


@pytest.mark.slow
def test_fine_matching_beats_keeping_every_retrieved_sample(tmp_path):
    """Few-sample users (<= 20 local samples), device lr 0.5 x 5 epochs, K=50.
    Measured user-weighted AUC, seeds 0/1/2 of this setting (docs/coda.md):
    coda - retrieval_only = +0.021 / +0.008 / +0.018 (coda - local =
    -0.016 / -0.009 / -0.009: on this generator augmentation does not beat
    Local). Seed 0 is run; the threshold sits well inside its margin."""
    from lcft_tf.cloud.train import train_cloud
    from lcft_tf.evaluation.metrics import user_weighted_auc

    data = generate(FEW)
    model = train_cloud("wide_deep", data, fixed_epochs_cloud(optimizer="sgd", epochs=2, seed=0))  # the setting the margin was measured in
    export_tflite(model, tmp_path / "m.tflite", ExportConfig(global_ctr=data.global_ctr, learning_rate=0.5))
    emb = dataset_embeddings(model, data)
    retrieval = retrieve(emb, data.offsets, data.split, RetrievalConfig(k=50))
    export_tflite(build_sample_classifier(emb.shape[1], seed=0), tmp_path / "c.tflite", ExportConfig(learning_rate=0.5))
    ctr, clf = OnDeviceModel(tmp_path / "m.tflite"), OnDeviceModel(tmp_path / "c.tflite")
    state, clf_state = ctr.save(), clf.save()
    users, labels, preds = [], [], {"coda": [], "retrieval_only": []}
    for u in np.flatnonzero(data.split - data.offsets[:-1] <= 20):
        view, rf, rl, le, re_ = _user_inputs(data, emb, retrieval, u)
        users.append(np.full(len(view.test_labels), u))
        labels.append(view.test_labels)
        for method in preds:
            preds[method].append(coda_fine_tune_and_predict(
                ctr, state, view.train_features, view.train_labels, view.test_features, rf, rl, 0.5, 5,
                method_config(method, THRESHOLD), FineMatching(clf, clf_state, le, re_, seed=int(u))).predictions)
    users, labels = np.concatenate(users), np.concatenate(labels)
    value = {m: user_weighted_auc(users, labels, np.concatenate(p)).value for m, p in preds.items()}
    assert value["coda"] - value["retrieval_only"] > 0.005, value


# -- the effect of augmentation itself (oracle retrieval) -------------------------------
CLUSTERED = dataclasses.replace(FEW, taste_clusters=10)


def _other_users_train_samples(data, u):
    """The retrieval pool's rule (docs/coda.md, Pool): train samples of users other than ``u``."""
    users = user_index(data.offsets)
    return (np.arange(data.num_samples) < data.split[users]) & (users != u)


def augmentation_aucs(seed, tmp_path, k=200, faiss_methods=()):
    """User-weighted AUC of few-sample users (<= 20 local samples) on
    ``CLUSTERED`` at ``seed``: Local, and ``retrieval_only`` fed K random
    train samples of other users of the user's taste cluster (``similar``,
    an oracle for coarse matching) or of other clusters (``dissimilar``, the
    control). ``faiss_methods`` adds CoDA methods over the real retrieval
    (measurement only, docs/coda.md)."""
    from lcft_tf.cloud.train import train_cloud
    from lcft_tf.evaluation.metrics import user_weighted_auc

    data = generate(dataclasses.replace(CLUSTERED, seed=seed))
    model = train_cloud("wide_deep", data, fixed_epochs_cloud(optimizer="sgd", epochs=2, seed=seed))
    export_tflite(model, tmp_path / "m.tflite", ExportConfig(global_ctr=data.global_ctr, learning_rate=0.5))
    ctr = OnDeviceModel(tmp_path / "m.tflite")
    state = ctr.save()
    if faiss_methods:
        emb = dataset_embeddings(model, data)
        retrieval = retrieve(emb, data.offsets, data.split, RetrievalConfig(k=k))
        export_tflite(build_sample_classifier(emb.shape[1], seed=0), tmp_path / "c.tflite", ExportConfig(learning_rate=0.5))
        clf = OnDeviceModel(tmp_path / "c.tflite")
        clf_state = clf.save()
    cluster = data.info["taste_cluster"][user_index(data.offsets)]  # of each sample's user
    rng = np.random.default_rng(seed)
    users, labels = [], []
    preds = {m: [] for m in ("local", "similar", "dissimilar", *faiss_methods)}
    for u in np.flatnonzero(data.split - data.offsets[:-1] <= 20):
        view = data.user(u)
        users.append(np.full(len(view.test_labels), u))
        labels.append(view.test_labels)
        preds["local"].append(fine_tune_and_predict(ctr, state, view.train_features, view.train_labels.astype(np.float32),
                                                    view.test_features, 0.5, 5))
        pool = _other_users_train_samples(data, u)
        mine = cluster == data.info["taste_cluster"][u]
        for name, where in (("similar", pool & mine), ("dissimilar", pool & ~mine)):
            ids = np.sort(rng.choice(np.flatnonzero(where), k, replace=False))
            assert pool[ids].all()  # never the user's own, never a test-period sample
            preds[name].append(coda_fine_tune_and_predict(
                ctr, state, view.train_features, view.train_labels, view.test_features, data.take(ids),
                data.labels[ids], 0.5, 5, method_config("retrieval_only")).predictions)
        for method in faiss_methods:
            _, rf, rl, le, re_ = _user_inputs(data, emb, retrieval, u)
            preds[method].append(coda_fine_tune_and_predict(
                ctr, state, view.train_features, view.train_labels, view.test_features, rf, rl, 0.5, 5,
                method_config(method, THRESHOLD), FineMatching(clf, clf_state, le, re_, seed=int(u))).predictions)
    users, labels = np.concatenate(users), np.concatenate(labels)
    return {m: user_weighted_auc(users, labels, np.concatenate(p)).value for m, p in preds.items()}


@pytest.mark.slow
def test_augmentation_helps_when_retrieval_finds_similar_users(tmp_path):
    """Oracle coarse matching: K=200 train samples of same-cluster other users
    make retrieval_only beat Local; as many samples of other clusters do not
    (the gain is from similarity, not from more samples). Measured (seeds
    0/1/2, docs/coda.md): similar - local = +0.067 / +0.071 / +0.050,
    dissimilar - local = -0.056 / -0.041 / -0.022. Seed 0 is run; the
    thresholds sit well inside those margins."""
    value = augmentation_aucs(0, tmp_path)
    assert value["similar"] - value["local"] > 0.02, value
    assert value["dissimilar"] - value["local"] < 0.02, value
