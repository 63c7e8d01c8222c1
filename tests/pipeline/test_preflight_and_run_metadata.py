"""Before a run writes anything it has checked its name, its inputs and its
executor; damaged run metadata is refused in one line naming the file."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lcft_tf.cloud.export import ExportConfig
from lcft_tf.data.synthetic import SyntheticConfig
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.pipeline.config import ExperimentConfig
from lcft_tf.pipeline.experiment import RunExistsError, run_experiment
from cloud_settings import fixed_epochs_cloud

TINY = ExperimentConfig(
    synthetic=SyntheticConfig(num_users=12, num_items=20, mean_samples_per_user=20, history_length=3, dense_dim=2),
    models=("lr",), methods=("cloud", "local"), seeds=(0,),
    cloud=fixed_epochs_cloud(optimizer="sgd", epochs=1, learning_rate=0.5),
    fleet=FleetConfig(learning_rate=0.1, users_per_chunk=6, workers=1), export=ExportConfig(batch_size=8),
    name="run",
)


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("name", [".", "..", "../x", "a/b", "/tmp/abs", "", "x/..", "a\\b"])
def test_a_run_name_is_one_plain_folder_name(tmp_path, name):
    outside = tmp_path / "sibling"
    outside.mkdir()
    (outside / "keep.txt").write_text("a user's file")
    before = _tree(tmp_path)
    with pytest.raises(ValueError, match="plain folder name"):
        run_experiment(dataclasses.replace(TINY, output_dir=str(tmp_path / "runs"), name=name, overwrite=True))
    assert _tree(tmp_path) == before


def test_real_data_inputs_are_checked_before_anything_is_written(tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(ValueError, match="give data_dir"):
        dataclasses.replace(TINY, dataset="movielens", output_dir=str(out))
    empty = tmp_path / "ml"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="ml"):
        run_experiment(dataclasses.replace(TINY, dataset="movielens", data_dir=str(empty), output_dir=str(out)))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        run_experiment(dataclasses.replace(TINY, dataset="amazon", data_dir=str(tmp_path / "nope"), output_dir=str(out)))
    assert not out.exists()


def test_an_unreachable_ray_address_fails_before_anything_is_written(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "runs"
    config = dataclasses.replace(TINY, output_dir=str(out),
                                 fleet=dataclasses.replace(TINY.fleet, executor="ray", ray_address="127.0.0.1:1"))
    with pytest.raises(ValueError, match="cannot reach Ray at 127.0.0.1:1"):
        run_experiment(config)
    assert not out.exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    config = dataclasses.replace(TINY, output_dir=str(root))
    run_experiment(config)
    return config


@pytest.mark.parametrize("content", ["[]", "{not json", '{"format": "lcft-run-v2", "stages": []}',
                                     '{"format": "lcft-run-v2", "stages": {"dataset": {"hash": 1}}}'])
def test_a_damaged_run_json_is_refused_in_one_line_naming_it(finished, tmp_path, content):
    import shutil

    shutil.copytree(Path(finished.output_dir) / "run", tmp_path / "run")
    (tmp_path / "run" / "run.json").write_text(content)
    with pytest.raises(RunExistsError, match="run.json") as err:
        run_experiment(dataclasses.replace(finished, output_dir=str(tmp_path), resume=True))
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.slow
def test_a_stage_record_of_the_wrong_shape_is_rebuilt(finished, tmp_path, caplog):
    import shutil

    shutil.copytree(Path(finished.output_dir) / "run", tmp_path / "run")
    record = tmp_path / "run" / "lr_seed0" / "cloud" / "stage.json"
    record.write_text("[]")
    results = run_experiment(dataclasses.replace(finished, output_dir=str(tmp_path), resume=True))
    assert "unreadable stage record" in caplog.text
    assert json.loads(record.read_text())["stage"] == "lr_seed0/cloud"
    assert results["summary"] == json.loads((Path(finished.output_dir) / "run" / "results.json").read_text())["summary"]


@pytest.mark.slow
def test_a_saved_cloud_model_loads_as_documented_in_a_fresh_process(finished):
    keras_file = Path(finished.output_dir) / "run" / "lr_seed0" / "cloud" / "lr.keras"
    code = textwrap.dedent(f"""
        import keras, lcft_tf.models
        model = keras.models.load_model({str(keras_file)!r})
        print(type(model).__name__, type(model.loss).__name__)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["LR", "CorrectedLogLoss"]


def test_a_method_whose_steps_were_mostly_rolled_back_is_named():
    from lcft_tf.pipeline.experiment import ROLLED_BACK_LIMIT, rolled_back_warnings

    def run(steps, rolled):
        return {"fleet": {"device_train_steps_by_method": steps, "device_steps_rolled_back_by_method": rolled}}

    limit = int(100 * ROLLED_BACK_LIMIT)
    runs = {"din": {0: run({"cloud": 0, "local": 100, "soft2": 100}, {"cloud": 0, "local": limit, "soft2": limit + 1}),
                    1: run({"local": 100}, {"local": 100})},
            "lr": {0: run({"local": 10}, {"local": 0})}}
    warnings = rolled_back_warnings(runs)
    assert len(warnings) == 2
    assert "din seed 0" in warnings[0] and "'soft2'" in warnings[0] and f"{limit + 1} of 100" in warnings[0]
    assert "din seed 1" in warnings[1] and "'local'" in warnings[1]
