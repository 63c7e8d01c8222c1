"""``bundle --out`` treats its folder as ``run`` treats its run folder: a
new or empty one is written; a non-empty one is refused (before anything is
trained) unless ``--overwrite``, which empties it first, so the index lists
every model in the folder and no file of the user's is replaced silently; an
empty ``--out`` is refused. Each refusal is one ``error: ...`` line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--models=lr", "--num_users=30", "--hard_users_per_group=2"]  # as test_bundle_rebuild_is_deterministic


def _bundle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "lcft_tf", "bundle", *TINY, *args], capture_output=True, text=True,
                          timeout=600, cwd=str(cwd), stdin=subprocess.DEVNULL, env=env)


def _one_error_line(done: subprocess.CompletedProcess, message: str) -> None:
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr[-3000:]


def _users_folder(folder: Path) -> dict[str, bytes]:
    """A folder holding files named as the bundle's and an older model."""
    folder.mkdir(parents=True)
    files = {"lr.json": b'{"mine": 1}', "index.json": b'{"my": "index"}', "old_model.tflite": b"older model"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_non_empty_out_is_refused_before_training_and_left_as_it_was(tmp_path):
    out = tmp_path / "models"
    files = _users_folder(out)
    done = _bundle(f"--out={out}", cwd=tmp_path)
    _one_error_line(done, f"--out {out} is not empty")
    assert "--overwrite" in done.stderr
    assert _contents(out) == files  # nothing replaced, nothing added
    assert "cloud lr" not in done.stderr and done.stdout == ""  # refused before training


def test_overwrite_empties_out_first_so_the_index_lists_every_model_there(tmp_path):
    out = tmp_path / "models"
    _users_folder(out)
    done = _bundle(f"--out={out}", "--overwrite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "lr.json", "lr.tflite"]
    index = json.loads((out / "index.json").read_text())
    assert [e["model"] for e in index["models"]] == ["lr"]
    assert f"wrote {out}/ (+ index.json)" in done.stdout


@pytest.mark.parametrize("flags", [["--out="], ["--out=", "--overwrite"], ["--out=  "]], ids=" ".join)
def test_an_empty_out_is_refused_and_nothing_is_written(tmp_path, flags):
    done = _bundle(*flags, cwd=tmp_path)
    _one_error_line(done, "--out is empty")
    assert list(tmp_path.iterdir()) == []  # not into the current folder


def test_out_naming_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("mine")
    _one_error_line(_bundle(f"--out={tmp_path / 'f'}", "--overwrite", cwd=tmp_path), "is not a folder")
    assert (tmp_path / "f").read_text() == "mine"


def test_overwrite_never_empties_the_current_folder_or_one_holding_it(tmp_path):
    here = tmp_path / "work"
    files = _users_folder(here)
    for out in (".", str(tmp_path)):
        _one_error_line(_bundle(f"--out={out}", "--overwrite", cwd=here), "holds the current folder")
    assert _contents(here) == files


def test_prepare_out_creates_a_new_folder_and_accepts_an_empty_one(tmp_path):
    from lcft_tf.bundle import prepare_out

    assert prepare_out(tmp_path / "a" / "b").is_dir()  # parents too
    assert prepare_out(tmp_path / "a" / "b") == tmp_path / "a" / "b"  # empty: fine without overwrite
    with pytest.raises(ValueError, match="is not empty"):
        prepare_out(tmp_path / "a")


def test_overwrite_keeps_the_bundles_hand_written_guide(tmp_path):
    from lcft_tf.bundle import prepare_out

    out = tmp_path / "bundle"
    out.mkdir()
    for name, text in (("README.md", "the Android guide"), ("old.tflite", "x"), ("index.json", "{}")):
        (out / name).write_text(text)
    prepare_out(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md"]
    assert (out / "README.md").read_text() == "the Android guide"
