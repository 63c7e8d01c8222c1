"""Per-device submodels (docs/submodels.md): for every registry model and both
optimizers, a submodel restored from a device's pack predicts what the full
model predicts, before and after fine-tuning on the same batches, and its
sparse update merged into the global state equals fine-tuning the full
model directly."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest import BATCH, build_tiny, slow_cases

from lcft_tf import models
from lcft_tf.cloud.export import ExportConfig, export_tflite
from lcft_tf.artifacts.pack import Pack, PackCapacityError, apply_update, sparse_update
from lcft_tf.artifacts.tflite import submodel_path
from lcft_tf.device.submodel import SubmodelDevice
from lcft_tf.device.model import OnDeviceModel

CAPACITY = 12  # the spec's user (20) and item (30) tables are packed; category (5) ships whole
TOL = 1e-6


@pytest.fixture(scope="module")
def pairs(spec, tmp_path_factory):
    """(model, optimizer) -> path of a full export with a submodel beside it,
    exported on first use (conversions dominate this file's run time)."""
    out = tmp_path_factory.mktemp("submodels")

    class Exports(dict):
        def __missing__(self, key):
            name, optimizer = key
            path = out / f"{name}_{optimizer}.tflite"
            config = ExportConfig(batch_size=BATCH, learning_rate=0.05, global_ctr=0.4, optimizer=optimizer,
                                  submodel_capacity=CAPACITY)
            export_tflite(build_tiny(name, spec), path, config)
            self[key] = path
            return path

    return Exports()


def user_features(spec, n: int, seed: int, items=(2, 5, 7, 11, 13, 17, 23, 29)) -> dict[str, np.ndarray]:
    """One user's samples: a few items, one user id, some global-OOV ids."""
    rng = np.random.default_rng(seed)
    out = {"user_id": np.full(n, 9, np.int32), "item_id": rng.choice(items, n).astype(np.int32),
           "category": rng.integers(0, 5, n).astype(np.int32), "genome": rng.random((n, 3)).astype(np.float32)}
    for f in spec.sequences:
        ids = rng.choice(items, (n, f.length)).astype(np.int32)
        ids[rng.random((n, f.length)) < 0.3] = 0  # padding
        ids[rng.random((n, f.length)) < 0.1] = rng.choice([-4, 31, 1000])  # outside the global vocabulary
        out[f.name] = ids
    return out


def devices(path):
    full = OnDeviceModel(path)
    sub = SubmodelDevice(path, full.save())
    return full, sub


@pytest.mark.parametrize("optimizer", slow_cases(["sgd", "adam"], keep=(0,)))
@pytest.mark.parametrize("name", [n if n in ("lr", "din") else pytest.param(n, marks=pytest.mark.slow) for n in sorted(models.REGISTRY)])
def test_submodel_matches_full_model_and_merges_back(pairs, spec, name, optimizer):
    full, sub = devices(pairs[name, optimizer])
    cloud = full.save()
    train, test = user_features(spec, 3 * BATCH - 3, seed=1), user_features(spec, 11, seed=2)
    labels = (np.random.default_rng(3).random(len(train["item_id"])) < 0.4).astype(np.float32)
    pack = sub.pack(train, test)
    sub.device.restore(pack.state)
    before = full.infer(test)
    np.testing.assert_allclose(sub.device.infer(pack.remap(test)), before, atol=TOL, rtol=0)
    for _ in range(2):  # two epochs of 3 steps each, the last one padded
        full.train(train, labels, learning_rate=0.5)
        sub.device.train(pack.remap(train), labels, learning_rate=0.5)
    after = full.infer(test)
    assert np.max(np.abs(after - before)) > 1e-3  # the steps changed the predictions
    np.testing.assert_allclose(sub.device.infer(pack.remap(test)), after, atol=TOL, rtol=0)
    # The merge-back: the global state plus the device's sparse update is the
    # full model fine-tuned directly (every tensor, Adam slots included).
    update = sparse_update(pack, sub.device.save())
    merged = apply_update(cloud, sub.layout, update)
    tuned = full.save()
    for key, value in tuned.items():
        np.testing.assert_allclose(merged[key], value, atol=TOL, rtol=0, err_msg=key)
    for table, rows in update.rows.items():
        touched = {int(r) for r in rows}
        for key in sub.layout.tables[table].state:  # rows outside the update are bit-equal to the cloud's
            untouched = np.setdiff1d(np.arange(len(cloud[key])), sorted(touched))
            np.testing.assert_array_equal(tuned[key][untouched], cloud[key][untouched], err_msg=key)
    assert set(update.rows["item_id"]) <= {0, 2, 5, 7, 11, 13, 17, 23, 29, 30}  # 30 = the OOV row
    assert 30 in set(update.rows["item_id"])  # the OOV ids trained the OOV row in both


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_exact_while_the_global_norm_clip_is_active(spec, tmp_path, optimizer):
    """The clip rescales by clip / norm; the norms agree (rows outside the
    pack have zero gradient), so the clipped steps agree too."""
    path = tmp_path / "din.tflite"
    export_tflite(build_tiny("din", spec), path, ExportConfig(batch_size=BATCH, optimizer=optimizer, clip_norm=1e-3,
                                                              submodel_capacity=CAPACITY))
    full, sub = devices(path)
    train, test = user_features(spec, 3 * BATCH, seed=8), user_features(spec, 9, seed=9)
    labels = (np.random.default_rng(4).random(3 * BATCH) < 0.5).astype(np.float32)
    lr = {"sgd": 50.0, "adam": 0.05}[optimizer]  # clipped SGD steps are short: a large rate moves the weights
    pack = sub.pack(train, test)
    sub.device.restore(pack.state)
    before = full.infer(test)
    first = {k: v[:BATCH] for k, v in train.items()}
    extra = {"label": labels[:BATCH], "sample_weight": np.ones(BATCH, np.float32), "learning_rate": np.float32(lr)}
    norm_full = full.run_signature("train", {**first, **extra})["grad_norm"]
    norm_sub = sub.device.run_signature("train", {**pack.remap(first), **extra})["grad_norm"]
    assert norm_full > 100 * 1e-3  # the clip is active
    np.testing.assert_allclose(norm_sub, norm_full, rtol=1e-6)
    full.train(train, labels, learning_rate=lr)
    sub.device.train(pack.remap(train), labels, learning_rate=lr)
    after = full.infer(test)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(sub.device.infer(pack.remap(test)), after, atol=TOL, rtol=0)
    merged = apply_update(sub.global_state, sub.layout, sparse_update(pack, sub.device.save()))
    for key, value in full.save().items():
        np.testing.assert_allclose(merged[key], value, atol=TOL, rtol=0, err_msg=key)


def test_ids_outside_the_pack_read_the_oov_row(pairs, spec):
    full, sub = devices(pairs["din", "sgd"])
    train = user_features(spec, 8, seed=4)
    pack = sub.pack(train)
    sub.device.restore(pack.state)
    probe = user_features(spec, 8, seed=5, items=(3, 4, 6))  # in the vocabulary, not in the pack
    expected = dict(probe)
    for key in ("item_id", "pos_hist", "neg_hist"):  # what the full model sees: its OOV row (id 30)
        ids = probe[key].copy()
        ids[(ids > 0) & (ids < 30)] = 30
        expected[key] = ids
    np.testing.assert_allclose(sub.device.infer(pack.remap(probe)), full.infer(expected), atol=TOL, rtol=0)
    slots = pack.slots("item_id", np.array([0, 3, 2, -4, 31, 29]))
    assert slots[0] == 0 and slots[1] == CAPACITY and slots[3] == -4 and slots[4] == 31
    assert pack.id_maps["item_id"][slots[2]] == 2 and pack.id_maps["item_id"][slots[5]] == 29


def test_a_pack_that_does_not_fit_fails_naming_the_table(pairs, spec):
    _, sub = devices(pairs["wide_deep", "sgd"])
    many = user_features(spec, 20, seed=6, items=tuple(range(1, 20)))
    with pytest.raises(PackCapacityError, match=r"table 'item_id': the device uses \d+ rows, the submodel holds 12"):
        sub.pack(many)


def test_pack_file_round_trip(pairs, spec):
    _, sub = devices(pairs["deepfm", "adam"])
    pack = sub.pack(user_features(spec, 10, seed=7))
    again = Pack.from_bytes(sub.layout, pack.to_bytes())
    assert set(again.state) == set(pack.state)
    for key in pack.state:
        np.testing.assert_array_equal(again.state[key], pack.state[key])
    for table in pack.id_maps:
        np.testing.assert_array_equal(again.id_maps[table], pack.id_maps[table])
    with pytest.raises(ValueError, match="not a readable pack"):
        Pack.from_bytes(sub.layout, pack.to_bytes()[:-10])


@pytest.mark.slow
def test_metadata_links_the_pair_and_a_stale_submodel_is_refused(pairs, spec, tmp_path):
    path = pairs["lr", "sgd"]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["submodel"] == {"file": "lr_sgd.sub.tflite", "capacity": CAPACITY}
    sub_meta = json.loads(submodel_path(path).with_suffix(".json").read_text())
    assert {t: d["rows"] for t, d in sub_meta["submodel"]["tables"].items()} == {
        "user_id": 12, "item_id": 12, "category": 5}
    # a re-export of another model into the same place leaves no submodel of the old one
    other = tmp_path / "m.tflite"
    export_tflite(build_tiny("lr", spec), other, ExportConfig(batch_size=BATCH, submodel_capacity=CAPACITY))
    export_tflite(build_tiny("pnn", spec), other, ExportConfig(batch_size=BATCH, submodel_capacity=0))
    assert not submodel_path(other).exists()
    # a submodel cut from another export is refused
    export_tflite(build_tiny("lr", spec), other, ExportConfig(batch_size=BATCH, submodel_capacity=CAPACITY))
    sub_bytes = submodel_path(other).read_bytes(), submodel_path(other).with_suffix(".json").read_bytes()
    reseeded = models.build("lr", spec, embedding_dim=4, seed=99)  # other weights, another file
    export_tflite(reseeded, other, ExportConfig(batch_size=BATCH, submodel_capacity=CAPACITY))
    submodel_path(other).write_bytes(sub_bytes[0])
    submodel_path(other).with_suffix(".json").write_bytes(sub_bytes[1])
    with pytest.raises(ValueError, match="cut from another export"):
        SubmodelDevice(other, {})


# -- the fleet -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def fleet_setup(tmp_path_factory):
    """Tiny synthetic data and an untrained DIN exported twice: with a
    submodel that fits every user (capacity 200) and one that fits none (8)."""
    from lcft_tf.data.synthetic import SyntheticConfig, generate

    root = tmp_path_factory.mktemp("fleet")
    data = generate(SyntheticConfig(num_users=10, num_items=400, num_categories=6, mean_samples_per_user=30,
                                    history_length=4, dense_dim=3, seed=2))
    data.save(root / "dataset")
    model = models.build("din", data.spec, embedding_dim=4, hidden_units=(8,), attention_units=(4,), seed=1)
    paths = {}
    for capacity in (200, 8):
        paths[capacity] = root / f"din{capacity}.tflite"
        export_tflite(model, paths[capacity], ExportConfig(batch_size=8, global_ctr=data.global_ctr,
                                                           submodel_capacity=capacity))
    return root, paths


@pytest.mark.slow
def test_fleet_on_submodels_predicts_what_the_full_model_fleet_predicts(fleet_setup, tmp_path):
    from lcft_tf.fleet.config import FleetConfig

    from lcft_tf.fleet.executors import SerialExecutor

    from lcft_tf.fleet.simulate import simulate

    root, paths = fleet_setup
    base = FleetConfig(methods=("cloud", "local", "soft2"), learning_rate=0.3, epochs=2, users_per_chunk=4, workers=1)
    run = lambda path, mode, out: simulate(path, root / "dataset", tmp_path / out,
                                           dataclasses.replace(base, submodel=mode), executor=SerialExecutor())
    full = run(paths[200], "off", "full")
    sub = run(paths[200], "auto", "sub")
    assert full.stats["submodel"]["mode"] == "off" and full.stats["submodel"]["users_on_submodel"] == 0
    assert sub.stats["submodel"] == {"mode": "on", "requested": "auto", "capacity": 200,
                                     "users_on_submodel": len(sub.users), "users_on_full_model": 0}
    assert np.abs(full.predictions["local"] - full.predictions["cloud"]).max() > 1e-3
    for method in base.methods:
        np.testing.assert_allclose(sub.predictions[method], full.predictions[method], atol=TOL, rtol=0,
                                   err_msg=method)
    # capacity 8 fits nobody: "auto" runs every user on the full model and says so, "on" fails in one line
    fallback = run(paths[8], "auto", "fallback")
    assert fallback.stats["submodel"]["users_on_full_model"] == len(fallback.users)
    for method in base.methods:
        np.testing.assert_array_equal(fallback.predictions[method], full.predictions[method])
    with pytest.raises(ValueError, match=r"^user \d+: table 'item_id': the device uses \d+ rows, the submodel holds 8;"):
        run(paths[8], "on", "strict")


@pytest.mark.slow
def test_fleet_submodel_on_without_a_submodel_file_is_refused(fleet_setup, spec, tmp_path):
    from lcft_tf.fleet.config import FleetConfig

    from lcft_tf.fleet.simulate import simulate

    root, _ = fleet_setup
    from lcft_tf.data.dataset import CTRDataset

    data = CTRDataset.load(root / "dataset")
    path = tmp_path / "whole.tflite"
    export_tflite(models.build("lr", data.spec, seed=1), path, ExportConfig(batch_size=8, submodel_capacity=0))
    with pytest.raises(ValueError, match="--device_submodel=on but .* has no submodel"):
        simulate(path, root / "dataset", tmp_path / "out", FleetConfig(methods=("cloud",), submodel="on", workers=1))
    with pytest.raises(ValueError, match="submodel must be one of"):
        FleetConfig(submodel="yes")


@pytest.mark.slow
def test_vocab_benchmark_submodel_size_does_not_grow_with_the_catalogue(tmp_path):
    """The suite's own numbers (no timings asserted): the full file grows with
    the item vocabulary, the submodel file and the pack do not."""
    from lcft_tf.benchmarks.vocab import VocabBenchmarkConfig, run_vocab_benchmark

    config = VocabBenchmarkConfig(models=("lr",), vocab_sizes=(600, 3000), capacity=512, user_items=50, warmup=0,
                                  repeats=1, fleet_users=0, measure_memory=False, runtimes=("interpreter",))
    result = run_vocab_benchmark(config, tmp_path)
    rows = {(r["vocab"], r["variant"]): r for r in result["rows"]}
    assert set(rows) == {(600, "full"), (600, "submodel"), (3000, "full"), (3000, "submodel")}
    grown = (rows[3000, "full"]["file_mib"] - rows[600, "full"]["file_mib"]) * 2**20
    assert grown >= 2400 * 4  # LR's item table: one float32 per id
    assert rows[3000, "submodel"]["file_mib"] == rows[600, "submodel"]["file_mib"]
    assert rows[3000, "submodel"]["pack_kib"] == rows[600, "submodel"]["pack_kib"]
    assert "submodel_step_at_3000_over_full_step_at_600" in result["goals"]["lr/interpreter"]


@pytest.mark.slow
def test_vocab_fleets_take_ratios_round_by_round(tmp_path):
    """The fleet comparison's bookkeeping (no timings asserted): the full
    model at the first vocabulary, a submodel at the next, every user of
    every timed round on its model, and the goal ratio the median of the
    per-round ratios."""
    from lcft_tf.benchmarks.vocab import VocabBenchmarkConfig, vocab_fleets, vocab_goals

    config = VocabBenchmarkConfig(models=("lr",), capacity=512, user_items=50, fleet_users=6,
                                  fleet_vocab_sizes=(300, 3000), fleet_repeats=3, fleet_samples_per_user=20)
    full, sub = vocab_fleets("lr", config, tmp_path)
    assert (full["variant"], full["vocab"], sub["variant"], sub["vocab"]) == ("full", 300, "submodel", 3000)
    assert full["users_on_full_model"] == sub["users_on_submodel"] == 3 * 6  # users with test samples, 3 rounds
    assert full["users_on_submodel"] == sub["users_on_full_model"] == 0
    ratios = [s / f for s, f in zip(sub["users_per_s"], full["users_per_s"])]
    goal = vocab_goals([], [full, sub])["lr/fleet"]
    assert len(ratios) == 3 and goal["submodel_at_3000_over_full_at_300"]["median"] == sorted(ratios)[1]
    assert goal["interpreter_share_at_3000"] == sub["profile"]["signature_share"]
    assert sub["profile"]["signature_calls"]["restore"] == 2 * 3 * 6  # cloud and local, per user and round
