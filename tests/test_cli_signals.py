"""SIGINT (Ctrl-C) and SIGTERM end ``python -m lcft_tf run`` in one
``error: ...`` line with the resume hint and exit status 130 / 143, with no
traceback, no leaked semaphores and no worker left behind, wherever the run
is: cloud training (TensorFlow tracing the training function) or the fleet on
a process pool or on Ray.

Each test waits for a state the run reaches (a folder or file it writes)
before it sends the signal, never for a number of seconds; the deadlines
only bound a stuck machine."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow  # each case starts the CLI (and TensorFlow) in a new process

ROOT = Path(__file__).resolve().parents[1]
STUCK = 600  # seconds: a bound for a stuck machine, not a wait
EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
HINT = "continue with: python -m lcft_tf run --resume --name sig (with the same flags)"
NOISE = re.compile(r"Traceback|Exception ignored|^\s+File \"|leaked semaphore|resource_tracker|Fatal Python|"
                   r"\*\*\* SIG|Aborted|Stack trace|StackTrace", re.MULTILINE)


def _start(tmp_path: Path, *flags: str) -> tuple[subprocess.Popen, Path]:
    """The run in the background, this worktree's code, stderr to a file (no pipe to drain)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lcft_tf", "run", "--models=lr", "--seeds=0", f"--output_dir={tmp_path}",
             "--name=sig", *flags],
            stdout=subprocess.DEVNULL, stderr=stderr, stdin=subprocess.DEVNULL, cwd=str(tmp_path), env=env,
        )
    return proc, err


def _wait_for(proc: subprocess.Popen, ready) -> None:
    """Poll until ``ready()``; fails if the run ends first."""
    deadline = time.time() + STUCK
    while not ready():
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the state the test waits for"
        assert time.time() < deadline, "the run never reached the state the test waits for"
        time.sleep(0.05)


def _interrupt(proc: subprocess.Popen, err: Path, sig: int) -> str:
    """Send ``sig`` to the run; wait for it and every process it started
    (pool workers, the resource tracker, Ray's) to exit; return its stderr."""
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    proc.send_signal(sig)
    try:
        proc.wait(timeout=STUCK)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, alive = psutil.wait_procs(family, timeout=120)  # returns as soon as all have exited
    for p in alive:
        p.kill()
    text = err.read_text()
    assert alive == [], f"left running: {[(p.pid, p.name()) for p in alive]}\n{text[-3000:]}"
    return text


def _check_one_line(text: str, rc: int, sig: int) -> None:
    assert rc == EXIT[sig], (rc, text[-4000:])
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [lines[-1]], text[-4000:]  # one error line, the last
    assert errors[0] == f"error: {'interrupted' if sig == signal.SIGINT else 'terminated'}; {HINT}", errors
    assert not NOISE.search(text), text[-4000:]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_cloud_training_ends_in_one_line(tmp_path, sig):
    proc, err = _start(tmp_path, "--num_users=400", "--cloud_epochs=50", "--workers=1")
    run = tmp_path / "sig" / "lr_seed0"
    _wait_for(proc, (run / "cloud").is_dir)  # the cloud stage has begun: build, trace, fit
    text = _interrupt(proc, err, sig)
    _check_one_line(text, proc.returncode, sig)
    assert not (run / "export").exists()  # the signal landed in cloud training


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_process_pool_fleet_ends_in_one_line_and_closes_the_pool(tmp_path, sig):
    proc, err = _start(tmp_path, "--num_users=600", "--methods=cloud,local", "--device_users_per_chunk=4",
                       "--executor=process", "--workers=2")
    chunks = tmp_path / "sig" / "lr_seed0" / "fleet" / "chunks"
    _wait_for(proc, lambda: any(chunks.glob("*.safetensors")))  # the pool's workers are simulating
    assert len(psutil.Process(proc.pid).children()) >= 2
    text = _interrupt(proc, err, sig)
    _check_one_line(text, proc.returncode, sig)
    assert not (tmp_path / "sig" / "results.json").exists()  # the signal landed in the fleet


@pytest.mark.ray
def test_sigterm_during_the_ray_fleet_ends_in_one_line_and_shuts_ray_down(tmp_path):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'lcft-tf[ray]')")
    proc, err = _start(tmp_path, "--num_users=600", "--methods=cloud,local", "--device_users_per_chunk=4",
                       "--executor=ray", "--workers=2")
    chunks = tmp_path / "sig" / "lr_seed0" / "fleet" / "chunks"
    _wait_for(proc, lambda: any(chunks.glob("*.safetensors")))  # Ray's actors are simulating
    text = _interrupt(proc, err, signal.SIGTERM)  # also waits for Ray's processes: ray.shutdown() ran
    _check_one_line(text, proc.returncode, signal.SIGTERM)
    assert not (tmp_path / "sig" / "results.json").exists()


# Libraries lose a KeyboardInterrupt in two ways; each is staged here at the
# start of cloud training, so the signal lands there every time.
_LOSING_RUN = """
import signal, sys, time
import lcft_tf.cloud.train as train

real_fit_cloud = train.fit_cloud
mode, signum = sys.argv[1], int(sys.argv[2])


def receive_the_signal():
    signal.raise_signal(signum)  # the handler runs here
    time.sleep(STUCK)


def converted(*args, **kwargs):  # as Keras's loss build does while TensorFlow traces the train step
    try:
        receive_the_signal()
    except:  # noqa: E722
        raise RuntimeError("y_true and y_pred have different structures\\n  y_true: *\\n  y_pred: *") from None


class Finalized:
    def __del__(self):  # Python prints an exception raised here ("Exception ignored") and goes on
        receive_the_signal()


def swallowed(*args, **kwargs):
    Finalized()  # finalized at once
    return real_fit_cloud(*args, **kwargs)


train.fit_cloud = {"converted": converted, "swallowed": swallowed}[mode]
from lcft_tf.__main__ import cli_main

cli_main(["lcft_tf", "run", *sys.argv[3:]])
""".replace("STUCK", str(STUCK))


@pytest.mark.parametrize("mode", ["converted", "swallowed"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_a_library_turns_into_another_error_or_drops_still_ends_in_one_line(tmp_path, sig, mode):
    script = tmp_path / "losing_run.py"
    script.write_text(_LOSING_RUN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    done = subprocess.run(
        [sys.executable, str(script), mode, str(int(sig)), "--models=lr", "--seeds=0", "--num_users=30",
         "--methods=cloud,local", "--workers=1", f"--output_dir={tmp_path}", "--name=sig"],
        capture_output=True, text=True, timeout=STUCK, stdin=subprocess.DEVNULL, cwd=str(tmp_path), env=env,
    )
    _check_one_line(done.stderr, done.returncode, sig)
    assert not (tmp_path / "sig" / "lr_seed0" / "export").exists()
