"""CoDA as fleet methods: in the pipeline, resumable, deterministic, process
pool = serial, K = 0 = Local, and fleet workers that never import TensorFlow."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lcft_tf.cloud.export import ExportConfig
from lcft_tf.cloud.retrieval import RetrievalConfig
from lcft_tf.data.synthetic import SyntheticConfig
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.fleet.executors import SerialExecutor
from lcft_tf.fleet.simulate import simulate
from lcft_tf.methods import BASELINES, METHODS, of_kind

CODA_METHODS = of_kind(METHODS, "coda")
from lcft_tf.pipeline.config import ExperimentConfig
from lcft_tf.pipeline.experiment import run_experiment
from cloud_settings import fixed_epochs_cloud

CODA = ExperimentConfig(
    synthetic=SyntheticConfig(num_users=24, num_items=40, mean_samples_per_user=30, history_length=3, dense_dim=2,
                              seed=2),
    models=("wide_deep",),
    seeds=(0,),
    methods=("cloud", "local", "soft2", *CODA_METHODS),
    cloud=fixed_epochs_cloud(optimizer="sgd", epochs=1, learning_rate=0.5, model_kwargs={"embedding_dim": 4, "hidden_units": (8,)}),
    fleet=FleetConfig(learning_rate=0.1, users_per_chunk=6, workers=1),
    export=ExportConfig(batch_size=8),
    retrieval=RetrievalConfig(k=12),
    name="coda",
)


def _numbers(results: dict) -> dict:
    return {"summary": results["summary"], "stages": results["stages"]}


@pytest.fixture(scope="module")
def coda_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("coda")
    config = dataclasses.replace(CODA, output_dir=str(root))
    return config, run_experiment(config)


def test_coda_methods_run_in_the_pipeline(coda_run):
    config, results = coda_run
    methods = results["summary"]["models"]["wide_deep"]["methods"]
    assert set(methods) == set(config.methods) | set(BASELINES)  # the baselines are scored in every run
    kept = results["runs"]["wide_deep"]["0"]["fleet"]["coda_mean_kept"]
    assert kept["retrieval_only"] == pytest.approx(12.0)  # no classifier: all K kept (every pool is large enough)
    assert 0 < kept["coda"] < 12 and kept["coda_lcft"] == kept["coda"]  # the same classifier keeps the same samples
    assert "wide_deep_seed0/coda" in results["stages"]
    stage = json.loads((Path(config.output_dir) / "coda" / "wide_deep_seed0" / "coda" / "stage.json").read_text())
    assert stage["info"]["retrieval"]["seconds"] >= 0 and stage["key"]["retrieval"]["k"] == 12
    precision = stage["info"]["retrieval"]["precision"]  # recorded per run (docs/coda.md "Precision")
    assert 0 <= precision["history_overlap"] <= 1 and 0 <= precision["history_overlap_chance"] <= 1


@pytest.mark.slow
def test_same_seed_same_numbers_and_resume_covers_coda(coda_run, tmp_path):
    config, results = coda_run
    again = run_experiment(dataclasses.replace(config, output_dir=str(tmp_path)))
    assert _numbers(again) == _numbers(results)

    class DiesAfterOneChunk(SerialExecutor):
        def map_unordered(self, *args):
            for i, out in enumerate(super().map_unordered(*args)):
                if i == 1:
                    raise KeyboardInterrupt
                yield out

    interrupted = dataclasses.replace(config, output_dir=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(interrupted, executor=DiesAfterOneChunk())
    resumed = run_experiment(dataclasses.replace(interrupted, resume=True))
    assert resumed["runs"]["wide_deep"]["0"]["fleet"]["resumed_chunks"] == 1
    assert _numbers(resumed) == _numbers(results)


def test_process_pool_equals_serial_and_k0_equals_local(coda_run, tmp_path):
    config, _ = coda_run
    run = Path(config.output_dir) / "coda"
    model, data, coda_dir = run / "wide_deep_seed0" / "export" / "wide_deep.tflite", run / "dataset", run / "wide_deep_seed0" / "coda"
    fleet = dataclasses.replace(config.fleet, methods=("local", *CODA_METHODS), users_per_chunk=6)
    pool = simulate(model, data, tmp_path / "pool", dataclasses.replace(fleet, workers=2), coda_dir=coda_dir)
    serial = simulate(model, data, tmp_path / "serial", fleet, coda_dir=coda_dir)
    for m in fleet.methods:
        np.testing.assert_array_equal(pool.predictions[m], serial.predictions[m])
    assert not np.array_equal(serial.predictions["coda"], serial.predictions["local"])
    # coda_lcft alone matches its value beside coda, whose fine matching it shares in one run.
    alone = simulate(model, data, tmp_path / "alone", dataclasses.replace(fleet, methods=("coda_lcft",)), coda_dir=coda_dir)
    np.testing.assert_array_equal(alone.predictions["coda_lcft"], serial.predictions["coda_lcft"])

    # K = 0: every CoDA method fine-tunes on the local samples alone, i.e. is Local (coda_lcft: Soft2).
    from lcft_tf.artifacts.coda_files import RETRIEVAL, Retrieval

    empty = tmp_path / "k0"
    empty.mkdir()
    for f in coda_dir.iterdir():
        (empty / f.name).write_bytes(f.read_bytes())
    full = Retrieval.load(coda_dir / RETRIEVAL)
    Retrieval(np.full((full.ids.shape[0], 0), -1, np.int64), np.zeros((full.ids.shape[0], 0), np.float32)).save(
        empty / RETRIEVAL)
    k0 = simulate(model, data, tmp_path / "k0fleet",
                  dataclasses.replace(fleet, methods=("local", "soft2", *CODA_METHODS)), coda_dir=empty)
    for m in ("coda", "retrieval_only"):
        np.testing.assert_array_equal(k0.predictions[m], k0.predictions["local"])
    np.testing.assert_array_equal(k0.predictions["coda_lcft"], k0.predictions["soft2"])


def test_coda_needs_a_model_with_embeddings():
    with pytest.raises(ValueError, match="lr has none"):
        dataclasses.replace(CODA, models=("lr",))


def test_coda_without_its_files_is_refused(coda_run, tmp_path):
    config, _ = coda_run
    run = Path(config.output_dir) / "coda"
    with pytest.raises(ValueError, match="need the cloud's CoDA files"):
        simulate(run / "wide_deep_seed0" / "export" / "wide_deep.tflite", run / "dataset", tmp_path,
                 dataclasses.replace(config.fleet, methods=("cloud", "coda")))


def test_fleet_workers_do_not_import_tensorflow():
    code = ("import sys, lcft_tf.fleet.simulate, lcft_tf.fleet.worker, lcft_tf.pipeline.hard_search; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'faiss') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_coda_on_per_device_submodels_equals_the_full_model(coda_run, tmp_path):
    import keras

    from lcft_tf.cloud.export import export_tflite

    config, _ = coda_run
    run = Path(config.output_dir) / "coda"
    model = keras.models.load_model(run / "wide_deep_seed0" / "cloud" / "wide_deep.keras")
    path = tmp_path / "wide_deep.tflite"
    # A capacity below the item table (41 rows) makes the export write a submodel.
    export_tflite(model, path, dataclasses.replace(config.export, learning_rate=0.1, submodel_capacity=36))
    fleet = dataclasses.replace(config.fleet, methods=("local", *CODA_METHODS))
    args = (path, run / "dataset")
    sub = simulate(*args, tmp_path / "sub", dataclasses.replace(fleet, submodel="auto"),
                   coda_dir=run / "wide_deep_seed0" / "coda")
    full = simulate(*args, tmp_path / "full", dataclasses.replace(fleet, submodel="off"),
                    coda_dir=run / "wide_deep_seed0" / "coda")
    assert sub.stats["submodel"]["users_on_submodel"] > 0
    for m in fleet.methods:
        np.testing.assert_allclose(sub.predictions[m], full.predictions[m], atol=1e-6, rtol=0)
    for m in CODA_METHODS:
        np.testing.assert_array_equal(sub.kept[m], full.kept[m])


def test_capped_devices_see_their_last_samples_only(coda_run, tmp_path):
    """``max_local_samples``: the fleet's devices train on their last N train
    samples (num_train = min(train, N)); the test samples are the same."""
    from lcft_tf.data.dataset import CTRDataset

    config, _ = coda_run
    run = Path(config.output_dir) / "coda"
    model, coda_dir = run / "wide_deep_seed0" / "export" / "wide_deep.tflite", run / "wide_deep_seed0" / "coda"
    full = CTRDataset.load(run / "dataset")
    capped = dataclasses.replace(full, max_local_samples=4).save(tmp_path / "capped")
    fleet = dataclasses.replace(config.fleet, methods=("local", "coda"))
    whole = simulate(model, run / "dataset", tmp_path / "whole", fleet, coda_dir=coda_dir)
    cut = simulate(model, capped, tmp_path / "cut", fleet, coda_dir=coda_dir)
    np.testing.assert_array_equal(cut.users, whole.users)
    np.testing.assert_array_equal(cut.num_train, np.minimum(whole.num_train, 4))
    assert whole.num_train.max() > 4
    np.testing.assert_array_equal(cut.labels, whole.labels)
    assert not np.array_equal(cut.predictions["local"], whole.predictions["local"])
