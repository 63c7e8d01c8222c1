"""A flag absl cannot parse (a bad or empty value, a missing value, an
unknown flag, a flag of another command) ends every command in one
``error: ...`` line and exit status 2, as other bad input does, not in
absl's ``FATAL Flags parsing error`` and exit status 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each case starts the CLI (and TensorFlow) in a new process

ROOT = Path(__file__).resolve().parents[1]
# command -> (an int flag of it, a flag only another command has)
COMMANDS = {"run": ("num_users", "suite"), "benchmark": ("repeats", "seeds"), "bundle": ("num_users", "device_lr")}


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "lcft_tf", *args], capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env=env)


def _cases():
    for command, (number, foreign) in COMMANDS.items():
        yield command, [f"--{number}", "abc"], f"--{number}=abc"  # a value of the wrong type, as its own argument
        yield command, [f"--{number}=abc"], f"--{number}=abc"
        yield command, [f"--{number}="], f"--{number}="  # an empty value
        yield command, [f"--{number}"], f"--{number}"  # no value at all
        yield command, ["--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"
        yield command, [f"--{foreign}=1"], f"Unknown command line flag '{foreign}'"


@pytest.mark.parametrize("command, args, message", [*_cases(), (None, ["--num_users", "abc"], "--num_users=abc")],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_a_flag_that_does_not_parse_gives_one_error_line_and_exit_2(command, args, message):
    done = _cli(*([command] if command else []), *args)  # no command: run
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]
    assert message in lines[0], lines[0]
    assert f"python -m lcft_tf {command or 'run'} --help" in lines[0]  # where the command's flags are listed
    assert "FATAL" not in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
