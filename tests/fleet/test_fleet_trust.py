"""The fleet trusts nothing it is handed: resumed statistics add up, damaged
manifests are recomputed, retrievals that leak are refused, and a worker's
failure reaches the caller as its own one-line reason whatever the executor."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from lcft_tf.artifacts.coda_files import RETRIEVAL, Retrieval
from lcft_tf.cloud.export import ExportConfig
from lcft_tf.cloud.retrieval import RetrievalConfig
from lcft_tf.data.synthetic import SyntheticConfig
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.fleet.executors import ProcessExecutor, SerialExecutor
from lcft_tf.fleet.simulate import simulate
from lcft_tf.pipeline.config import ExperimentConfig
from lcft_tf.pipeline.experiment import run_experiment
from cloud_settings import fixed_epochs_cloud

pytestmark = pytest.mark.slow  # a tiny run or two exports per module (~10-20 s on 2 cores)

CONFIG = ExperimentConfig(
    synthetic=SyntheticConfig(num_users=24, num_items=40, mean_samples_per_user=30, history_length=3, dense_dim=2,
                              seed=5),
    models=("wide_deep",),
    seeds=(0,),
    methods=("cloud", "local", "soft2", "coda"),
    cloud=fixed_epochs_cloud(optimizer="sgd", epochs=1, learning_rate=0.5, model_kwargs={"embedding_dim": 4, "hidden_units": (8,)}),
    fleet=FleetConfig(learning_rate=0.1, users_per_chunk=4, workers=1),
    export=ExportConfig(batch_size=8, submodel_capacity=34),  # the item table (40) is packed
    retrieval=RetrievalConfig(k=6),
    name="trust",
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    config = dataclasses.replace(CONFIG, output_dir=str(root))
    results = run_experiment(config)
    folder = root / "trust"
    return {"export": folder / "wide_deep_seed0" / "export" / "wide_deep.tflite", "dataset": folder / "dataset",
            "coda": folder / "wide_deep_seed0" / "coda", "fleet": config.fleet, "results": results}


class _StopsAfter(SerialExecutor):
    """Runs ``n`` chunks, then fails like a killed run."""

    def __init__(self, n):
        self.n = n

    def map_unordered(self, initializer, initargs, fn, tasks):
        for i, result in enumerate(super().map_unordered(initializer, initargs, fn, tasks)):
            if i == self.n:
                raise KeyboardInterrupt
            yield result


def test_resumed_statistics_count_every_chunk(run, tmp_path):
    whole = simulate(run["export"], run["dataset"], tmp_path / "whole", run["fleet"], coda_dir=run["coda"])
    with pytest.raises(KeyboardInterrupt):
        simulate(run["export"], run["dataset"], tmp_path / "cut", run["fleet"], executor=_StopsAfter(3),
                 coda_dir=run["coda"])
    resumed = simulate(run["export"], run["dataset"], tmp_path / "cut", run["fleet"], resume=True, coda_dir=run["coda"])
    assert resumed.stats["resumed_chunks"] == 3 and resumed.stats["users_simulated_now"] < 24
    for key in ("device_train_steps", "device_steps_rolled_back", "device_train_steps_by_method",
                "device_steps_rolled_back_by_method"):
        assert resumed.stats[key] == whole.stats[key], key
    assert resumed.stats["submodel"] == whole.stats["submodel"]
    assert whole.stats["submodel"]["users_on_submodel"] > 0
    assert whole.stats["device_train_steps_by_method"]["cloud"] == 0
    assert whole.stats["device_train_steps"] == sum(whole.stats["device_train_steps_by_method"].values()) > 0


@pytest.mark.parametrize("damage", ["[]", "{not json", '{"format": "lcft-fleet-v3"}', "entry without sha256"])
def test_a_damaged_manifest_is_recomputed_with_a_warning(run, tmp_path, caplog, damage):
    out = tmp_path / "fleet"
    first = simulate(run["export"], run["dataset"], out, run["fleet"], coda_dir=run["coda"])
    path = out / "fleet.json"
    if damage == "entry without sha256":
        manifest = json.loads(path.read_text())
        del next(iter(manifest["chunks"].values()))["sha256"]
        path.write_text(json.dumps(manifest))
    else:
        path.write_text(damage)
    again = simulate(run["export"], run["dataset"], out, run["fleet"], resume=True, coda_dir=run["coda"])
    assert "fleet.json" in caplog.text and "recomputing" in caplog.text
    assert again.stats["resumed_chunks"] == 0
    for m in first.predictions:
        np.testing.assert_array_equal(again.predictions[m], first.predictions[m])


@pytest.mark.parametrize("leak", ["own test samples", "own train samples", "other users' test samples",
                                  "ids past the dataset", "another dataset's users"])
def test_a_retrieval_that_leaks_or_does_not_fit_is_refused(run, tmp_path, leak):
    from lcft_tf.data.dataset import CTRDataset

    data = CTRDataset.load(run["dataset"])
    coda = tmp_path / "coda"
    shutil.copytree(run["coda"], coda)
    good = Retrieval.load(coda / RETRIEVAL)
    ids = good.ids.copy()
    u = 3
    if leak == "own test samples":
        ids[u, 0] = data.split[u]
    elif leak == "own train samples":
        ids[u, 0] = data.offsets[u]
    elif leak == "other users' test samples":
        ids[u, 0] = data.split[u + 1]
    elif leak == "ids past the dataset":
        ids[u, 0] = data.offsets[-1] + 10
    else:
        ids = ids[:-1]
    Retrieval(ids, np.zeros(ids.shape, np.float32)).save(coda / RETRIEVAL)
    with pytest.raises(ValueError, match="leak|another dataset"):
        simulate(run["export"], run["dataset"], tmp_path / "fleet", run["fleet"], coda_dir=coda)
    assert not (tmp_path / "fleet" / "chunks").exists()


def test_a_worker_that_cannot_start_reports_its_reason_under_the_process_pool(run, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(run["export"].parent, export)
    model = export / "wide_deep.tflite"
    simulate(model, run["dataset"], tmp_path / "warm", dataclasses.replace(run["fleet"], methods=("cloud",)))
    model.write_bytes(model.read_bytes()[:-8] + b"\0" * 8)  # the file no longer matches its metadata
    with pytest.raises(ValueError, match="does not match the sha256"):
        simulate(model, run["dataset"], tmp_path / "fleet", dataclasses.replace(run["fleet"], methods=("cloud",)),
                 executor=ProcessExecutor(2))


def _dies(users):
    import os

    os._exit(3)  # as an out-of-memory kill would


def test_a_worker_process_that_dies_is_a_worker_lost_error(run, tmp_path):
    from lcft_tf.fleet.lifecycle import WorkerLostError

    with pytest.raises(WorkerLostError, match="a worker process died"):
        simulate(run["export"], run["dataset"], tmp_path / "fleet", dataclasses.replace(run["fleet"], methods=("cloud",)),
                 executor=ProcessExecutor(2), chunk_task=_dies)


def test_a_worker_started_after_its_parent_died_exits_at_once():
    """The parent's pid comes from the parent: a worker still importing when
    the run is killed is already reparented, and must not adopt its new parent."""
    import subprocess
    import sys

    code = ("import os, time; from lcft_tf.fleet.lifecycle import exit_with_parent; "
            "exit_with_parent(os.getppid() + 1_000_000); time.sleep(600)")
    done = subprocess.run([sys.executable, "-c", code], timeout=300)
    assert done.returncode == 1
