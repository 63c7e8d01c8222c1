"""The fleet and the hard search on a local Ray (docs/scaling.md): the same
numbers as the serial executor, bit for bit, also when a worker is killed
mid-run. One Ray for the module (starting one costs seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY_DATA

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'lcft-tf[ray]')")
pytestmark = pytest.mark.ray

from lcft_tf.cloud.export import ExportConfig  # noqa: E402
from lcft_tf.pipeline.hard_search import HardSearchConfig, search_hard_table  # noqa: E402
from lcft_tf.data.synthetic import SyntheticConfig  # noqa: E402
from lcft_tf.fleet.config import FleetConfig  # noqa: E402
from lcft_tf.fleet.executors import SerialExecutor  # noqa: E402
from lcft_tf.fleet.simulate import simulate  # noqa: E402
from lcft_tf.fleet.ray_executor import RayExecutor  # noqa: E402
from cloud_settings import fixed_epochs_cloud

FLEET = FleetConfig(methods=("cloud", "local", "soft2"), learning_rate=0.1, users_per_chunk=2, workers=2)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def setup(tiny_export, tmp_path_factory):
    """The tiny recipe's export and dataset, and the serial fleet to compare with."""
    data, folder, _, path = tiny_export("wide_deep")
    serial = simulate(path, folder, tmp_path_factory.mktemp("ray") / "serial", FLEET, executor=SerialExecutor())
    return data, path, folder, serial


def _assert_same(a, b):
    np.testing.assert_array_equal(a.users, b.users)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.predictions.keys() == b.predictions.keys()
    for m in a.predictions:
        np.testing.assert_array_equal(a.predictions[m], b.predictions[m])
    # and fine-tuning did something (else equality would be cheap)
    assert np.abs(a.predictions["local"] - a.predictions["cloud"]).max() > 1e-4


class _KillsOneWorker(RayExecutor):
    """Kills one actor (as a node failure would) right after the first chunk
    comes back, while it holds another; records its pids before and after."""

    def map_unordered(self, initializer, initargs, fn, tasks):
        for i, result in enumerate(super().map_unordered(initializer, initargs, fn, tasks)):
            if i == 0:
                victim = self.actors[0]
                self.pid_before = ray.get(victim.pid.remote())
                ray.kill(victim, no_restart=False)
            if i == len(tasks) - 1:
                self.pid_after = ray.get(victim.pid.remote())
            yield result


def test_ray_fleet_equals_serial_and_survives_a_killed_worker(local_ray, setup, tmp_path):
    _, path, dataset, serial = setup
    on_ray = simulate(path, dataset, tmp_path / "ray", FLEET, executor=RayExecutor(2))
    _assert_same(on_ray, serial)

    killer = _KillsOneWorker(2)
    survived = simulate(path, dataset, tmp_path / "killed", FLEET, executor=killer)
    assert killer.pid_after != killer.pid_before  # Ray restarted it: the kill hit a live worker
    _assert_same(survived, serial)
    manifest = json.loads((tmp_path / "killed" / "fleet.json").read_text())
    assert len(manifest["chunks"]) == TINY_DATA.num_users // FLEET.users_per_chunk  # each chunk listed once


def test_ray_resume_reuses_listed_chunks(local_ray, setup, tmp_path):
    _, path, dataset, serial = setup

    class StopsAfter(RayExecutor):
        def map_unordered(self, *args):
            for i, result in enumerate(super().map_unordered(*args)):
                if i == 3:
                    raise KeyboardInterrupt
                yield result

    with pytest.raises(KeyboardInterrupt):
        simulate(path, dataset, tmp_path, FLEET, executor=StopsAfter(2))
    listed = len(json.loads((tmp_path / "fleet.json").read_text())["chunks"])
    assert listed == 3
    resumed = simulate(path, dataset, tmp_path, FLEET, resume=True, executor=RayExecutor(2))
    assert resumed.stats["resumed_chunks"] == 3
    assert resumed.stats["users_simulated_now"] == TINY_DATA.num_users - 3 * FLEET.users_per_chunk
    _assert_same(resumed, serial)


def test_ray_hard_search_equals_serial(local_ray, setup):
    data, path, dataset, _ = setup
    config = HardSearchConfig(users_per_group=3, alphas=(0.5, 2.0), betas=(0.0, 0.2))
    serial_table, serial_report = search_hard_table(path, dataset, config, learning_rate=0.1,
                                                    executor=SerialExecutor())
    ray_table, ray_report = search_hard_table(path, dataset, config, learning_rate=0.1,
                                              executor=RayExecutor(2))
    assert ray_table == serial_table
    strip = lambda r: [{k: v for k, v in g.items()} for g in r["groups"]]
    assert strip(ray_report) == strip(serial_report)
    assert any(g["validation_auc"] is not None for g in ray_report["groups"])


def test_cli_run_on_ray_equals_the_serial_run(tmp_path):
    """``--executor ray`` end to end (its own local Ray, shut down at the
    end): fleet and hard search give the serial run's numbers and stage
    hashes, and the log holds the fleet's one-line summary."""
    import subprocess
    import sys

    from lcft_tf.pipeline.config import ExperimentConfig
    from lcft_tf.pipeline.experiment import run_experiment

    config = ExperimentConfig(
        synthetic=SyntheticConfig(num_users=12, num_items=30, mean_samples_per_user=30.0, history_length=3, dense_dim=2),
        models=("lr",), methods=("cloud", "local", "hard"), cloud=fixed_epochs_cloud(epochs=1, learning_rate=0.5),
        fleet=FleetConfig(learning_rate=0.1, users_per_chunk=3, workers=1),
        hard=HardSearchConfig(users_per_group=2, alphas=(0.5, 2.0), betas=(0.0,)),
        export=ExportConfig(batch_size=8), output_dir=str(tmp_path), name="serial",
    )
    serial = run_experiment(config)
    proc = subprocess.run(
        [sys.executable, "-m", "lcft_tf", "run", "--executor=ray", "--workers=2", "--name=ray", f"--output_dir={tmp_path}",
         "--num_users=12", "--num_items=30", "--samples_per_user=30", "--synthetic_history_length=3",
         "--synthetic_dense_dim=2", "--models=lr", "--methods=cloud,local,hard", "--cloud_epochs=1", "--cloud_lr=0.5",
         "--cloud_batch_size=32", "--cloud_decay_per_epoch=0.1", "--cloud_validation_fraction=0",
         "--device_lr=0.1", "--device_users_per_chunk=3", "--hard_users_per_group=2", "--hard_alphas=0.5,2.0",
         "--hard_betas=0.0", "--device_batch_size=8"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fleet lr_seed0: 12 users in" in proc.stderr
    on_ray = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert on_ray["stages"] == serial["stages"]  # where it ran is not part of any stage's key
    assert on_ray["summary"] == serial["summary"]
    hard = lambda r: r["runs"]["lr"]["0"]["cloud"]["hard_search"]["groups"]
    assert hard(on_ray) == hard(serial)


def test_executor_settings_are_checked():
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        FleetConfig(executor="dask")
    with pytest.raises(ValueError, match="needs executor 'ray'"):
        FleetConfig(executor="process", ray_address="auto")
    # where the fleet runs is not part of its key (a resume may switch executors)
    assert FleetConfig(executor="ray", ray_address="auto", workers=8).key() == FleetConfig().key()


def test_a_task_error_reaches_the_caller_as_its_own_one_line_reason(local_ray, setup, tmp_path):
    _, path, dataset, _ = setup
    bad = tmp_path / path.name
    bad.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)  # no longer the file its metadata describes
    bad.with_suffix(".json").write_bytes(path.with_suffix(".json").read_bytes())
    executor = RayExecutor(2)
    with pytest.raises(ValueError) as err:
        simulate(bad, dataset, tmp_path / "fleet", FLEET, executor=executor)
    message = str(err.value)
    assert "does not match the sha256" in message
    assert "ray::" not in message and "\x1b[" not in message and len(message.splitlines()) == 1
