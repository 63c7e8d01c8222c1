"""Packs and merge-back updates carry and check their origin and integrity:
what the full model refuses, the submodel path refuses (docs/submodels.md)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import BATCH, build_tiny

from lcft_tf.artifacts.pack import Pack, apply_update, sparse_update
from lcft_tf.cloud.export import ExportConfig, export_tflite
from lcft_tf.device.model import OnDeviceModel
from lcft_tf.device.submodel import SubmodelDevice

pytestmark = pytest.mark.slow  # a tiny run or two exports per module (~10-20 s on 2 cores)

CAPACITY = 12


@pytest.fixture(scope="module")
def two_exports(spec, tmp_path_factory):
    """Two exports of the same model with different weights, each with a submodel."""
    out = tmp_path_factory.mktemp("provenance")
    paths = []
    for seed in (3, 4):
        model = build_tiny("wide_deep", spec) if seed == 3 else \
            type(build_tiny("wide_deep", spec)).from_config({**build_tiny("wide_deep", spec).get_config(), "seed": seed}).build_from_spec()
        path = out / f"wd{seed}.tflite"
        export_tflite(model, path, ExportConfig(batch_size=BATCH, global_ctr=0.4, submodel_capacity=CAPACITY))
        paths.append(path)
    return paths


def _user(spec, n=10, seed=1):
    rng = np.random.default_rng(seed)
    out = {"user_id": np.full(n, 9, np.int32), "item_id": rng.choice([2, 5, 7, 11], n).astype(np.int32),
           "category": rng.integers(0, 5, n).astype(np.int32), "genome": rng.random((n, 3)).astype(np.float32)}
    for f in spec.sequences:
        out[f.name] = rng.choice([0, 2, 5, 7], (n, f.length)).astype(np.int32)
    return out


def _device(path):
    full = OnDeviceModel(path)
    return full, SubmodelDevice(path, full.save())


def test_a_pack_from_another_export_is_refused(two_exports, spec):
    (_, sub_a), (_, sub_b) = _device(two_exports[0]), _device(two_exports[1])
    pack_b = sub_b.pack(_user(spec))
    assert sub_a.layout.full_sha256 != sub_b.layout.full_sha256
    with pytest.raises(ValueError, match="another export"):
        Pack.from_bytes(sub_a.layout, pack_b.to_bytes())
    other_capacity = dataclasses.replace(sub_b.layout, capacity=CAPACITY + 1)
    with pytest.raises(ValueError, match="capacity"):
        Pack.from_bytes(other_capacity, pack_b.to_bytes())
    assert Pack.from_bytes(sub_b.layout, pack_b.to_bytes()).id_maps.keys() == pack_b.id_maps.keys()


@pytest.mark.parametrize("damage", ["reserved id moved", "slot 0 emptied", "whole table permuted"])
def test_an_id_map_that_breaks_the_reserved_slots_is_refused(two_exports, spec, damage):
    _, sub = _device(two_exports[0])
    pack = sub.pack(_user(spec))
    maps = {t: m.copy() for t, m in pack.id_maps.items()}
    item = maps["item_id"]
    if damage == "reserved id moved":
        free = int(np.flatnonzero(item == -1)[0])
        item[0], item[free] = -1, 0
    elif damage == "slot 0 emptied":
        item[0] = -1
    else:
        maps["category"] = maps["category"][::-1].copy()
    with pytest.raises(ValueError, match="reserved id|identity|itself"):
        Pack(sub.layout, pack.state, maps)


@pytest.mark.parametrize("bad", [np.int64(2**32 + 5), 7.9, np.nan])
def test_remap_refuses_ids_the_full_model_refuses(two_exports, spec, bad):
    full, sub = _device(two_exports[0])
    features = _user(spec)
    features["item_id"] = features["item_id"].astype(type(bad) if not isinstance(bad, np.generic) else bad.dtype)
    features["item_id"][0] = bad
    with pytest.raises(ValueError):
        full.infer(features)
    pack = sub.pack(_user(spec))
    with pytest.raises(ValueError, match="item_id"):
        pack.remap(features)


def _trained_update(sub, spec):
    pack = sub.pack(_user(spec))
    sub.device.restore(pack.state)
    features = pack.remap(_user(spec))
    sub.device.train(features, np.ones(len(features["item_id"]), np.float32))
    return pack, sparse_update(pack, sub.device.save())


@pytest.mark.parametrize("damage", ["nan value", "inf dense", "row -1", "row past the OOV row", "wrong width",
                                    "repeated row", "another export", "another capacity", "unknown dense",
                                    "missing table"])
def test_apply_update_refuses_a_bad_update_and_writes_nothing(two_exports, spec, damage):
    full, sub = _device(two_exports[0])
    state = full.save()
    _, update = _trained_update(sub, spec)
    table = "item_id"
    name = sub.layout.tables[table].state[0]
    values, rows, dense = dict(update.values), dict(update.rows), dict(update.dense)
    changes = {}
    if damage == "nan value":
        values[name] = values[name].copy()
        values[name][0] = np.nan
    elif damage == "inf dense":
        key = next(iter(dense))
        dense[key] = np.full_like(dense[key], np.inf)
    elif damage == "row -1":
        rows[table] = rows[table].copy()
        rows[table][0] = -1
    elif damage == "row past the OOV row":
        rows[table] = rows[table].copy()
        rows[table][0] = sub.layout.tables[table].vocab_size + 1
    elif damage == "wrong width":
        values[name] = values[name][:, :1]
    elif damage == "repeated row":
        rows[table] = rows[table].copy()
        rows[table][1] = rows[table][0]
    elif damage == "another export":
        changes["full_sha256"] = "0" * 64
    elif damage == "another capacity":
        changes["capacity"] = CAPACITY + 1
    elif damage == "unknown dense":
        dense["not_a_tensor"] = np.zeros(3, np.float32)
    else:
        rows.pop(table)
    bad = dataclasses.replace(update, rows=rows, values=values, dense=dense, **changes)
    before = {k: v.copy() for k, v in state.items()}
    with pytest.raises(ValueError):
        apply_update(state, sub.layout, bad)
    for k in state:
        np.testing.assert_array_equal(state[k], before[k])


def test_a_good_update_merges(two_exports, spec):
    full, sub = _device(two_exports[0])
    _, update = _trained_update(sub, spec)
    merged = apply_update(full.save(), sub.layout, update)
    assert any(not np.array_equal(merged[k], v) for k, v in full.save().items())
