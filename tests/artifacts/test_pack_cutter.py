"""PackCutter (the fleet's packs, a chunk of devices at once) gives, for every
device, the arrays make_pack + Pack.remap give for that device alone: the
same state, id maps and remapped ids, bit for bit, and the same capacity
error for a device whose ids do not fit. Numpy only (a hand-made layout)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lcft_tf.artifacts.pack import PackCapacityError, PackCutter, SubmodelLayout, TableLayout, make_pack
from lcft_tf.features import DenseFeature, FeatureSpec, SequenceFeature, SparseFeature

CAPACITY = 40

SPEC = FeatureSpec((
    SparseFeature("user_id", 50),
    SparseFeature("item_id", 1000),
    SparseFeature("category", 5),
    SequenceFeature("pos_hist", 1000, 3, embedding="item_id"),
    SequenceFeature("neg_hist", 1000, 3, embedding="item_id", padding_id=7),  # a second reserved id
    DenseFeature("genome", 2),
))


def layout() -> SubmodelLayout:
    tables = {
        "user_id": TableLayout(50, CAPACITY, ("emb_user",), (0,)),
        "item_id": TableLayout(1000, CAPACITY, ("emb_item", "slot_item"), (0, 7)),  # weights + an optimizer slot
        "category": TableLayout(5, 5, ("emb_category",), (0,)),  # fits: shipped whole
    }
    cut = {"user_id": CAPACITY, "item_id": CAPACITY, "category": 5}
    sub = FeatureSpec(tuple(dataclasses.replace(f, vocab_size=cut[f.table]) if hasattr(f, "vocab_size") else f
                            for f in SPEC.features))
    return SubmodelLayout(CAPACITY, tables, {f.name: f.table for f in SPEC.sparse + SPEC.sequences}, "sha", sub)


def global_state(rng) -> dict[str, np.ndarray]:
    return {"emb_user": rng.standard_normal((51, 4)).astype(np.float32),
            "emb_item": rng.standard_normal((1001, 4)).astype(np.float32),
            "slot_item": rng.standard_normal((1001, 4)).astype(np.float32),
            "emb_category": rng.standard_normal((6, 4)).astype(np.float32),
            "dense_w": rng.standard_normal((4, 3)).astype(np.float32)}


def device_rows(rng, n: int, items: int) -> dict[str, np.ndarray]:
    """``n`` samples drawing from ``items`` distinct item ids, with padding,
    reserved ids and ids outside the global vocabulary in the histories."""
    pool = rng.choice(np.arange(1, 1000), items, replace=False)
    out = {"user_id": np.full(n, rng.integers(1, 50)), "item_id": rng.choice(pool, n),
           "category": rng.integers(0, 5, n), "genome": rng.random((n, 2)).astype(np.float32)}
    for name in ("pos_hist", "neg_hist"):
        ids = rng.choice(pool, (n, 3))
        ids[rng.random((n, 3)) < 0.2] = 0
        ids[rng.random((n, 3)) < 0.1] = 7
        ids[rng.random((n, 3)) < 0.1] = rng.choice([-3, 1000, 5000])
        out[name] = ids
    return {k: v.astype(np.int64) if v.dtype.kind == "i" else v for k, v in out.items()}  # int64: remap casts


def test_chunk_packs_equal_each_device_packed_alone():
    rng = np.random.default_rng(0)
    lay, state = layout(), global_state(rng)
    # device 2 uses more items than fit; device 4 has no samples at all
    devices = [device_rows(rng, n, items) for n, items in ((9, 5), (14, 12), (30, 60), (1, 1), (0, 1), (20, 30))]
    owner = np.concatenate([np.full(len(d["user_id"]), i) for i, d in enumerate(devices)])
    features = {k: np.concatenate([d[k] for d in devices]) for k in devices[0]}
    order = rng.permutation(len(owner))  # rows of the devices interleaved
    cut = PackCutter(lay, state).cut({k: v[order] for k, v in features.items()}, owner[order], len(devices))
    back = np.argsort(order)
    remapped = {k: v[back] for k, v in cut.features.items()}
    checked = 0
    for i, rows in enumerate(devices):
        try:
            ref = make_pack(lay, state, rows)
        except PackCapacityError as err:
            with pytest.raises(PackCapacityError) as got:
                cut.state(i)
            assert str(got.value) == str(err)
            continue
        mine = cut.state(i)
        assert set(mine) == set(ref.state)
        for name, value in ref.state.items():
            assert mine[name].dtype == value.dtype and np.array_equal(mine[name], value), name
        for table, ids in ref.id_maps.items():
            assert np.array_equal(cut.id_maps[table][i], ids), table
        mask = owner == i
        for name, value in ref.remap(rows).items():
            assert remapped[name][mask].dtype == value.dtype and np.array_equal(remapped[name][mask], value), name
        assert np.array_equal(cut.pack(i).remap(rows)["pos_hist"], remapped["pos_hist"][mask])
        checked += 1
    assert checked == 5  # devices 0, 1, 3, 4 (no samples), 5 fit; device 2 raised the same error


def test_bad_owner_and_features_are_refused_in_one_line():
    rng = np.random.default_rng(1)
    cutter, rows = PackCutter(layout(), global_state(rng)), device_rows(rng, 4, 3)
    with pytest.raises(ValueError, match=r"owner must give each of the 4 rows a device in \[0, 2\)"):
        cutter.cut(rows, np.array([0, 1, 2, 0]), 2)
    with pytest.raises(ValueError, match="item_id"):
        cutter.cut({**rows, "item_id": rows["item_id"] + 0.5}, np.zeros(4, int), 1)  # an id the full model refuses
    with pytest.raises(ValueError, match="has 1000 rows, the table has 1000 \\+ 1"):
        PackCutter(layout(), {**global_state(rng), "emb_item": np.zeros((1000, 4), np.float32)})
