"""The fleet cuts a chunk's packs at once (PackCutter) and checks each pack
state once per user. Its chunks hold what the per-user path (make_pack +
remap per user, kept here as the reference) writes: the same arrays and
statistics, so predictions are bit-identical, and a run resumed across the
change reuses every chunk (the key did not change, rightly). The worker
profile travels beside the chunks and counts what they did."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lcft_tf import models
from lcft_tf.artifacts.fleet_chunks import CHUNKS, read_chunk, read_manifest
from lcft_tf.cloud.export import ExportConfig, export_tflite
from lcft_tf.data.synthetic import SyntheticConfig, generate
from lcft_tf.fleet import worker
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.fleet.executors import SerialExecutor
from lcft_tf.fleet.profile import PHASES
from lcft_tf.fleet.simulate import simulate

pytestmark = pytest.mark.slow  # one export and four tiny fleets (~15 s on 2 cores)

# Users need 20-71 item rows (+ the padding row): capacity 32 fits six of the
# ten, so "auto" mixes users on the submodel and on the full model.
CAPACITY = 32


def per_user_chunk(users):
    """Chunk task of the reference: every user's pack cut alone, as before chunk packs."""
    w = worker.current_worker()
    w.cut_packs = lambda users, retrieved=None: None
    return w.run_chunk(users)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("chunk_packs")
    data = generate(SyntheticConfig(num_users=10, num_items=400, num_categories=6, mean_samples_per_user=30,
                                    history_length=4, dense_dim=3, seed=2))
    data.save(root / "dataset")
    dataclasses.replace(data, max_local_samples=8).save(root / "capped")
    model = models.build("din", data.spec, embedding_dim=4, hidden_units=(8,), attention_units=(4,), seed=1)
    export_tflite(model, root / "din.tflite", ExportConfig(batch_size=8, global_ctr=data.global_ctr,
                                                          submodel_capacity=CAPACITY))
    return root


def test_chunk_packs_give_the_per_user_path_bytes_and_resume_reuses_them(setup, tmp_path):
    config = FleetConfig(methods=("cloud", "local", "soft2"), learning_rate=0.3, epochs=2, users_per_chunk=4, workers=1)
    run = lambda out, **kw: simulate(setup / "din.tflite", setup / "dataset", tmp_path / out, config,
                                     executor=SerialExecutor(), **kw)
    reference = run("reference", chunk_task=per_user_chunk)
    new = run("new")
    assert new.stats["submodel"]["users_on_submodel"] == 6 and new.stats["submodel"]["users_on_full_model"] == 4
    assert np.abs(new.predictions["local"] - new.predictions["cloud"]).max() > 1e-3  # fine-tuning moved them
    for method in config.methods:
        np.testing.assert_array_equal(new.predictions[method], reference.predictions[method], err_msg=method)
    # every chunk holds the same arrays and statistics (the bytes differ run to run: safetensors writes its
    # metadata in hash-map order)
    entries = {out: read_manifest(tmp_path / out)["chunks"] for out in ("new", "reference")}
    assert entries["new"].keys() == entries["reference"].keys() and len(entries["new"]) == 3
    for name in entries["new"]:
        (a, a_stats), (b, b_stats) = (read_chunk(tmp_path / out / CHUNKS / name, entries[out][name]["sha256"],
                                                 tuple(entries[out][name]["users"])) for out in ("new", "reference"))
        assert a_stats == b_stats and a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key], equal_nan=True), (name, key)
    # chunks written by the per-user path are reused by the chunk path: same key, same bytes
    resumed = run("reference", resume=True)
    assert resumed.stats["resumed_chunks"] == 3 and resumed.stats["users_simulated_now"] == 0
    assert resumed.stats["profile"] == {}  # nothing ran now
    for method in config.methods:
        np.testing.assert_array_equal(resumed.predictions[method], new.predictions[method])


def test_profile_counts_what_the_workers_did_and_stays_out_of_the_manifest(setup, tmp_path):
    config = FleetConfig(methods=("cloud", "local", "soft1"), epochs=2, users_per_chunk=4, workers=1)
    fleet = simulate(setup / "din.tflite", setup / "dataset", tmp_path / "out", config, executor=SerialExecutor())
    profile = fleet.stats["profile"]
    users = len(fleet.users)
    # one train call per device step, one restore per method and user (known answers, counted elsewhere)
    assert profile["signature_calls"]["train"] == fleet.stats["device_train_steps"]
    assert profile["signature_calls"]["restore"] == 3 * users
    assert set(profile["phases"]) == set(PHASES)
    assert abs(sum(profile["phases"].values()) - profile["worker_seconds"]) < 1e-6
    assert 0 < profile["signature_share"] <= 1
    assert profile["signature_seconds"] == pytest.approx(sum(profile["signatures"].values()))
    assert all("profile" not in e for e in read_manifest(tmp_path / "out")["chunks"].values())


def test_capped_devices_see_only_their_last_samples_on_the_chunk_path(setup, tmp_path):
    """With --max_local_samples the chunk path packs and trains on each
    device's capped rows only: its predictions equal the per-user path's
    (which cuts from UserView, the capped view) and differ from uncapped."""
    config = FleetConfig(methods=("cloud", "local"), learning_rate=0.3, epochs=2, users_per_chunk=4, workers=1)
    run = lambda data, out, **kw: simulate(setup / "din.tflite", setup / data, tmp_path / out, config,
                                           executor=SerialExecutor(), **kw)
    reference = run("capped", "reference", chunk_task=per_user_chunk)
    capped = run("capped", "capped")
    whole = run("dataset", "whole")
    assert capped.stats["submodel"]["users_on_submodel"] > 0
    np.testing.assert_array_equal(capped.predictions["local"], reference.predictions["local"])
    assert np.abs(capped.predictions["local"] - whole.predictions["local"]).max() > 1e-4
