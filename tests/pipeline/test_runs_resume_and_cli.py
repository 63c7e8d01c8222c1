"""Runs you can trust: stale stages are never reused, two runs never share a
folder, fleet chunks are checked, workers die with their parent, and the
command line answers bad input with one line."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import slow_cases

from lcft_tf.cloud.export import ExportConfig
from cloud_settings import fixed_epochs_cloud
from lcft_tf.data.synthetic import SyntheticConfig
from lcft_tf.fleet.config import FleetConfig
from lcft_tf.pipeline.config import ExperimentConfig
from lcft_tf.pipeline.experiment import RunExistsError, run_experiment
from lcft_tf.keys import ConfigChangedError
from lcft_tf.pipeline.stages import RunInUseError, RunLock

TINY = ExperimentConfig(
    synthetic=SyntheticConfig(num_users=20, num_items=30, mean_samples_per_user=30, history_length=3, dense_dim=2),
    models=("lr",),
    methods=("cloud", "local", "soft2"),
    seeds=(0,),
    cloud=fixed_epochs_cloud(optimizer="sgd", epochs=1, learning_rate=0.5),
    fleet=FleetConfig(learning_rate=0.1, users_per_chunk=5, workers=1),
    export=ExportConfig(batch_size=8),
    name="run",
)


def _files(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (copied by each test that changes it)."""
    root = tmp_path_factory.mktemp("finished")
    config = dataclasses.replace(TINY, output_dir=str(root))
    return config, run_experiment(config)


def _copy(finished, tmp_path) -> ExperimentConfig:
    config, _ = finished
    shutil.copytree(Path(config.output_dir) / "run", tmp_path / "run")
    return dataclasses.replace(config, output_dir=str(tmp_path))


@pytest.mark.parametrize(
    "change, field",
    [
        ({"cloud": fixed_epochs_cloud(optimizer="sgd", epochs=2, learning_rate=0.5)}, "cloud.epochs: 1 -> 2"),
        ({"cloud": fixed_epochs_cloud(optimizer="sgd", epochs=1, learning_rate=0.25)}, "cloud.learning_rate: 0.5 -> 0.25"),
        ({"export": ExportConfig(batch_size=16)}, "export.batch_size: 8 -> 16"),
        ({"fleet": dataclasses.replace(TINY.fleet, learning_rate=0.2)}, "export.learning_rate: 0.1 -> 0.2"),
        ({"fleet": dataclasses.replace(TINY.fleet, epochs=2)}, "fleet.epochs: 1 -> 2"),
        ({"synthetic": dataclasses.replace(TINY.synthetic, num_users=21)}, "synthetic.num_users: 20 -> 21"),
    ],
)
def test_resume_with_a_changed_config_is_refused_before_anything_is_written(finished, tmp_path, change, field):
    config = _copy(finished, tmp_path)
    before = _files(tmp_path / "run")
    with pytest.raises(ConfigChangedError, match=field.replace(".", r"\.")):
        run_experiment(dataclasses.replace(config, resume=True, **change))
    after = _files(tmp_path / "run")
    assert after == before  # nothing rewritten: not the dataset, not results.json


@pytest.mark.slow
def test_hard_edges_change_is_refused(tmp_path):
    from lcft_tf.pipeline.hard_search import HardSearchConfig

    config = dataclasses.replace(TINY, output_dir=str(tmp_path), methods=("cloud", "hard"),
                                 hard=HardSearchConfig(users_per_group=2, alphas=(1.0, 2.0), betas=(0.0,)))
    run_experiment(config)
    changed = dataclasses.replace(config, resume=True, hard=dataclasses.replace(config.hard, edges=(0.3, 0.6)))
    with pytest.raises(ConfigChangedError, match=r"hard\.edges"):
        run_experiment(changed)


def test_resume_with_the_same_config_reuses_every_stage_and_records_the_hashes(finished, tmp_path):
    config = _copy(finished, tmp_path)
    _, first = finished
    again = run_experiment(dataclasses.replace(config, resume=True))
    assert again["summary"] == first["summary"]
    assert again["runs"]["lr"]["0"]["fleet"]["users_simulated_now"] == 0
    plan = json.loads((tmp_path / "run" / "run.json").read_text())["stages"]
    assert again["stages"] == {name: stage["hash"] for name, stage in plan.items()}
    assert set(again["stages"]) == {"dataset", "lr_seed0/cloud", "lr_seed0/export", "lr_seed0/fleet"}
    assert len(set(again["stages"].values())) == 4


@pytest.mark.slow
def test_a_damaged_cloud_model_is_rebuilt_and_everything_after_it_too(finished, tmp_path, caplog):
    config = _copy(finished, tmp_path)
    keras_file = tmp_path / "run" / "lr_seed0" / "cloud" / "lr.keras"
    keras_file.write_bytes(keras_file.read_bytes()[:100])
    again = run_experiment(dataclasses.replace(config, resume=True))
    assert "lr.keras: missing or damaged" in caplog.text
    assert again["runs"]["lr"]["0"]["fleet"]["users_simulated_now"] == TINY.synthetic.num_users


@pytest.mark.slow
def test_a_folder_holding_a_run_needs_resume_or_overwrite(finished, tmp_path):
    config = _copy(finished, tmp_path)
    with pytest.raises(RunExistsError, match="--resume"):
        run_experiment(config)
    again = run_experiment(dataclasses.replace(config, overwrite=True))
    cloud = lambda results: results["summary"]["models"]["lr"]["methods"]["cloud"]["mean"]
    assert cloud(again) == pytest.approx(cloud(finished[1]))


def test_a_second_run_on_the_same_folder_is_refused_naming_the_holder(tmp_path):
    config = dataclasses.replace(TINY, output_dir=str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from lcft_tf.pipeline.stages import RunLock
            with RunLock({str(tmp_path / 'run')!r}):
                print("locked", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=f"pid {holder.pid}"):
            run_experiment(config)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path / "run"):  # the kernel dropped the dead holder's lock
        pass


def _fleet_dir(config: ExperimentConfig) -> Path:
    return Path(config.output_dir) / "run" / "lr_seed0" / "fleet"


def test_stray_and_truncated_chunks_are_recomputed_with_a_warning(finished, tmp_path, caplog):
    config = _copy(finished, tmp_path)
    chunks = _fleet_dir(config) / "chunks"
    (_fleet_dir(config) / "stage.json").unlink()  # an unfinished fleet: its chunks get resumed
    names = sorted(p.name for p in chunks.iterdir())
    # A valid chunk file under a name the manifest does not list (the issue's
    # 00000065 repro: it would add users), and a truncated listed one.
    shutil.copy(chunks / names[0], chunks / "00000065.safetensors")
    damaged = chunks / names[1]
    damaged.write_bytes(damaged.read_bytes()[:50])
    again = run_experiment(dataclasses.replace(config, resume=True))
    assert "00000065.safetensors is not a verified chunk" in caplog.text
    assert f"{names[1]}: checksum differs" in caplog.text
    assert again["runs"]["lr"]["0"]["fleet"]["users_simulated_now"] == 5  # only the damaged chunk
    assert again["summary"] == finished[1]["summary"]


def test_chunk_files_are_safetensors_not_pickles(finished):
    config, _ = finished
    chunk = min((_fleet_dir(config) / "chunks").iterdir())
    from safetensors.numpy import load_file

    arrays = load_file(str(chunk))
    assert arrays["user"].tolist() == list(range(5))
    assert set(arrays) >= {"labels", "pred.cloud", "pred.local", "pred.soft2"}


def test_methods_without_cloud_are_refused_up_front():
    with pytest.raises(ValueError, match="must include 'cloud'"):
        dataclasses.replace(TINY, methods=("local", "soft1"))


_ORPHAN_PARENT = """
import os, sys, time
from pathlib import Path
from lcft_tf.fleet import worker

def slow_chunk(users):
    (Path(sys.argv[3]).parent / f"busy-{os.getpid()}").touch()  # this worker is inside its task
    time.sleep(300)
    return worker.run_chunk(users)

from lcft_tf.fleet.config import FleetConfig
from lcft_tf.fleet.executors import ProcessExecutor
from lcft_tf.fleet.simulate import simulate
if __name__ == "__main__":
    print("start", flush=True)
    simulate(sys.argv[1], sys.argv[2], sys.argv[3], FleetConfig(methods=("cloud",), users_per_chunk=2),
             executor=ProcessExecutor(2), chunk_task=slow_chunk)
"""


@pytest.mark.slow
def test_fleet_workers_exit_when_the_parent_is_killed(finished, tmp_path):
    config, _ = finished
    run = Path(config.output_dir) / "run"
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(run / "lr_seed0" / "export" / "lr.tflite"), str(run / "dataset"),
         str(tmp_path / "fleet")],
        stdout=subprocess.PIPE, text=True, cwd=str(tmp_path),
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert parent.stdout.readline().strip() == "start"
        deadline = time.time() + 600  # a bound for a stuck machine; the wait is for a state, not a time
        busy: list[Path] = []
        while time.time() < deadline and len(busy) < 2:  # both workers are inside a task
            busy = list(tmp_path.glob("busy-*"))
            time.sleep(0.2)
        assert len(busy) >= 2
        workers = [psutil.Process(int(p.name.split("-")[1])) for p in busy]
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        _, alive = psutil.wait_procs(workers, timeout=60)  # returns as soon as both have exited
        assert alive == [], f"orphaned workers still running: {[p.pid for p in alive]}"
    finally:
        if parent.poll() is None:
            parent.kill()
    assert not list((tmp_path / "fleet" / "chunks").glob("*.safetensors"))  # none written after the kill


# -- the command line --------------------------------------------------------------
def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lcft_tf", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(
    "args, message",
    slow_cases([
        (["run", "--dataset=foo"], "unknown dataset 'foo'"),
        (["run", "--num_users=0"], "num_users must be >= 1"),
        (["run", "--num_users=-3"], "num_users must be >= 1"),
        (["run", "--seeds=0,-1"], "seeds must be distinct integers >= 0"),
        (["run", "--seeds="], "seeds must be distinct integers >= 0"),
        (["run", "--seeds=a"], "--seeds takes int values"),
        (["run", "--models="], "unknown models (none given)"),
        (["run", "--device_batch_size=0"], "batch_size must be >= 1"),
        (["run", "--max_users=0"], "max_users must be >= 1"),
        (["run", "--methods=local,soft1"], "must include 'cloud'"),
        (["run", "--device_lr=nan"], "learning_rate"),
        (["run", "--amazon_category=Books"], "applies to --dataset amazon"),
        (["run", "--output_dir=/proc/forbidden"], "/proc/forbidden"),
        (["bundle", "--num_users=0"], "num_users must be >= 1"),
        (["benchmark", "--repeats=0"], "repeats must be >= 1"),
        (["fly"], "unknown command 'fly'"),
    ], keep=(0, 15)),
)
def test_cli_bad_input_gives_one_error_line(args, message):
    done = _cli(*args)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: "), done.stderr[-2000:]
    assert message in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("args", [["bundle", "--device_lr=0.1"], ["benchmark", "--seeds=1"], ["run", "--suite=fleet"]])
def test_a_flag_of_another_command_is_an_error(args):
    done = _cli(*args)
    assert done.returncode != 0
    assert "Unknown command line flag" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_resume_with_a_changed_flag_fails_in_one_line(finished, tmp_path):
    config = _copy(finished, tmp_path)
    done = _cli("run", "--resume", "--name=run", f"--output_dir={config.output_dir}", "--num_users=21",
                "--models=lr", "--methods=cloud,local,soft2", "--num_items=30", "--samples_per_user=30")
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot resume") and "num_users: 20 -> 21" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_ctrl_c_exits_130_with_a_resume_hint(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "lcft_tf", "run", "--num_users=400", "--models=lr", "--seeds=0",
         f"--output_dir={tmp_path}", "--name=big", "--workers=1"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    deadline = time.time() + 600  # a bound for a stuck machine; the wait is for a state, not a time
    cloud = tmp_path / "big" / "lr_seed0" / "cloud"
    while time.time() < deadline and proc.poll() is None and not cloud.is_dir():
        time.sleep(0.05)
    assert proc.poll() is None and cloud.is_dir(), "the run never reached cloud training"
    proc.send_signal(signal.SIGINT)  # while TensorFlow builds and traces the training function
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: interrupted; continue with: python -m lcft_tf run --resume")
    assert "Traceback" not in err


@pytest.mark.slow
def test_tensorflow_start_up_lines_are_quiet_by_default():
    quiet = _cli("run", "--num_users=0")
    assert "oneDNN" not in quiet.stderr and "cuInit" not in quiet.stderr and "absl::InitializeLog" not in quiet.stderr
    loud = _cli("run", "--num_users=0", "--tf_logs")
    assert loud.returncode == 2
    assert "InitializeLog" in loud.stderr or "oneDNN" in loud.stderr  # the same lines, shown on request


def test_default_run_names_differ_across_raw_folders():
    a = ExperimentConfig(dataset="movielens", data_dir="/data/ml-100k")
    b = ExperimentConfig(dataset="movielens", data_dir="/data/ml-1m")
    assert a.run_name == "movielens-ml-100k" and b.run_name == "movielens-ml-1m"
    assert ExperimentConfig().run_name == "synthetic"
