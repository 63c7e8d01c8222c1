"""The pipeline end to end on tiny synthetic data: fleet vs Keras, lr 0,
resume after an interruption, the hard table in the file, the CLI."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_CLOUD, TINY_DATA

from lcft_tf.cloud.export import ExportConfig, export_tflite
from lcft_tf.pipeline.hard_search import HardSearchConfig, search_hard_table
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.fleet.executors import SerialExecutor
from lcft_tf.fleet.simulate import simulate
from lcft_tf.device.model import OnDeviceModel
from lcft_tf.pipeline.config import ExperimentConfig
from lcft_tf.pipeline.experiment import run_experiment

TINY_HARD = HardSearchConfig(users_per_group=3, alphas=(0.5, 1.0, 2.0), betas=(0.0, 0.2), soft_candidates=False)  # the plain grid: a fixed size


@pytest.fixture(scope="module")
def cloud_setup(tiny_export):
    """The tiny recipe's cloud model, its export and the saved dataset."""
    data, folder, model, path = tiny_export("wide_deep")
    return data, model, path, folder


def _numbers(results: dict) -> dict:
    """results.json without wall-clock timings."""
    strip = lambda d: {k: strip(v) if isinstance(v, dict) else v for k, v in d.items()
                       if k not in ("fleet", "seconds", "train_seconds", "cost")}
    return strip(results)


def test_fleet_cloud_predictions_equal_the_keras_model(cloud_setup, tmp_path):
    data, model, path, dataset = cloud_setup
    results = simulate(path, dataset, tmp_path, FleetConfig(methods=("cloud",), workers=1))
    features, labels = data.test_rows()
    np.testing.assert_allclose(results.predictions["cloud"], model.predict_proba(features), atol=1e-5, rtol=0)
    np.testing.assert_array_equal(results.labels, labels)


def test_local_with_zero_lr_equals_cloud_and_nonzero_lr_differs(cloud_setup, tmp_path):
    _, _, path, dataset = cloud_setup
    zero = simulate(path, dataset, tmp_path / "a", FleetConfig(methods=("cloud", "local"), learning_rate=0.0, workers=1))
    np.testing.assert_array_equal(zero.predictions["local"], zero.predictions["cloud"])
    moved = simulate(path, dataset, tmp_path / "b", FleetConfig(methods=("cloud", "local"), learning_rate=0.1, workers=1))
    assert np.abs(moved.predictions["local"] - moved.predictions["cloud"]).max() > 1e-4


def test_process_pool_gives_the_serial_numbers(cloud_setup, tmp_path):
    _, _, path, dataset = cloud_setup
    config = FleetConfig(methods=("cloud", "soft1"), learning_rate=0.1, users_per_chunk=5, workers=2)
    pool = simulate(path, dataset, tmp_path / "pool", config)
    serial = simulate(path, dataset, tmp_path / "serial", dataclasses.replace(config, workers=1))
    np.testing.assert_array_equal(pool.users, serial.users)
    for m in config.methods:
        np.testing.assert_array_equal(pool.predictions[m], serial.predictions[m])


def test_hard_table_is_searched_on_validation_and_shipped_in_the_file(cloud_setup, tmp_path):
    data, model, path, _ = cloud_setup
    table, report = search_hard_table(path, data, TINY_HARD, learning_rate=0.1)
    assert len(report["groups"]) == len(TINY_HARD.edges) + 1
    assert report["cost"]["grid_size"] == 6
    searched = sum(g["users_searched"] for g in report["groups"])
    assert searched > 0 and report["cost"]["fine_tunes"] == searched * 6  # every pair on every searched user
    for group, alpha, beta in zip(report["groups"], table.alphas, table.betas):
        assert (group["alpha"], group["beta"]) == (alpha, beta)
    shipped = tmp_path / "with_table.tflite"
    export_tflite(model, shipped, ExportConfig(batch_size=16, global_ctr=data.global_ctr, hard_table=table))
    device = OnDeviceModel(shipped)
    assert device.hard_table == table
    assert json.loads(shipped.with_suffix(".json").read_text())["correction"]["hard_table"] == table.to_json()
    for positives in (0, 1, 3, 5, 8, 10):
        labels = np.array([1] * positives + [0] * (10 - positives))
        alpha, beta = table.lookup(positives / 10)
        np.testing.assert_allclose(device.correct(labels, "hard"), np.where(labels == 1, alpha, beta), atol=1e-6)


def test_hard_search_keeps_raw_labels_when_no_pair_can_differ(cloud_setup):
    # lr 0: every (alpha, beta) gives the cloud's predictions, all scores tie,
    # and the rule "raw labels win ties" must return the identity table.
    data, _, path, _ = cloud_setup
    table, report = search_hard_table(path, data, TINY_HARD, learning_rate=0.0)
    assert table.alphas == (1.0,) * len(table.alphas) and table.betas == (0.0,) * len(table.betas)
    for group in report["groups"]:
        if group["users_searched"]:
            assert group["validation_auc"] == group["validation_auc_raw_labels"]


class _DiesAfter(SerialExecutor):
    """Simulates a killed run: finishes ``n`` chunks, then raises."""

    def __init__(self, n: int):
        self.n = n

    def map_unordered(self, initializer, initargs, fn, tasks):
        for i, result in enumerate(super().map_unordered(initializer, initargs, fn, tasks)):
            if i == self.n:
                raise KeyboardInterrupt("killed")
            yield result


@pytest.mark.slow
def test_resume_after_interruption_gives_identical_results(tmp_path):
    config = ExperimentConfig(
        synthetic=TINY_DATA,
        models=("lr",),
        seeds=(0,),
        cloud=TINY_CLOUD,
        fleet=FleetConfig(learning_rate=0.1, users_per_chunk=4, workers=1),
        hard=TINY_HARD,
        export=ExportConfig(batch_size=16),
        output_dir=str(tmp_path),
        name="run",
    )
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, executor=_DiesAfter(2))
    chunks = tmp_path / "run" / "lr_seed0" / "fleet" / "chunks"
    recorded = len(json.loads((chunks.parent / "fleet.json").read_text())["chunks"])
    assert 0 < recorded < TINY_DATA.num_users // 4  # killed mid-way
    resumed = run_experiment(dataclasses.replace(config, resume=True))
    # A chunk counts once the manifest lists it (one written after the last
    # manifest update is recomputed).
    assert resumed["runs"]["lr"]["0"]["fleet"]["resumed_chunks"] == recorded

    shutil.rmtree(chunks.parent)  # same cloud model, fleet from scratch
    fresh = run_experiment(dataclasses.replace(config, resume=True))
    assert fresh["runs"]["lr"]["0"]["fleet"]["resumed_chunks"] == 0
    assert _numbers(json.loads((tmp_path / "run" / "results.json").read_text())) == _numbers(
        {k: v for k, v in resumed.items() if k != "table"}
    )
    assert _numbers(resumed) == _numbers(fresh)


def test_resume_refuses_a_different_config(cloud_setup, tmp_path):
    _, _, path, dataset = cloud_setup
    simulate(path, dataset, tmp_path, FleetConfig(methods=("cloud",), workers=1))
    with pytest.raises(ValueError, match="cannot resume"):
        simulate(path, dataset, tmp_path, FleetConfig(methods=("cloud", "local"), workers=1), resume=True)


@pytest.mark.slow
def test_main_job_cli_writes_all_outputs(tmp_path):
    cmd = [
        sys.executable, "-m", "lcft_tf", "run", "--num_users=16", "--samples_per_user=30", "--models=lr",
        "--seeds=0,1", "--cloud_epochs=1", "--hard_users_per_group=2", "--workers=1", "--device_batch_size=16",
        f"--output_dir={tmp_path}", "--name=cli",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| synthetic | lr |" in done.stdout
    out = tmp_path / "cli"
    for name in ("results.json", "report.md", "fig1_local_ctr.png", "fig2_auc_by_drift.png", "fig3_user_changes.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    lr = results["summary"]["models"]["lr"]
    assert set(lr["methods"]) == {"cloud", "local", "soft1", "soft2", "hard", "popularity", "item_count"}  # + baselines
    assert len(lr["methods"]["cloud"]["per_seed"]) == 2
    assert lr["methods"]["cloud"]["mean"] == pytest.approx(np.mean(lr["methods"]["cloud"]["per_seed"]))
    assert results["config"]["seeds"] == [0, 1]
    assert "| synthetic | lr |" in (out / "report.md").read_text()

    bad = subprocess.run([sys.executable, "-m", "lcft_tf", "run", "--models=nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "unknown models" in bad.stderr


@pytest.mark.slow
def test_experiment_on_movielens_raw_files(tmp_path):
    from raw_fixtures import write_movielens

    write_movielens(tmp_path / "raw", "100k", num_users=20, per_user=20)
    config = ExperimentConfig(
        dataset="movielens",
        data_dir=str(tmp_path / "raw"),
        cache_dir=str(tmp_path / "cache"),
        data_options={"history_length": 5},
        models=("lr",),
        seeds=(0,),
        methods=("cloud", "local", "soft1"),
        cloud=TINY_CLOUD,
        fleet=FleetConfig(learning_rate=0.1, workers=1),
        export=ExportConfig(batch_size=16),
        output_dir=str(tmp_path),
        name="ml",
    )
    results = run_experiment(config)
    assert results["dataset"]["users"] == 20
    run = results["summary"]["models"]["lr"]
    assert run["users"] == 20
    assert run["users_used"] + run["users_left_out"] == 20
    assert set(run["methods"]) == {"cloud", "local", "soft1", "popularity", "item_count"}  # + the baselines
