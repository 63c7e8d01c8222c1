"""The layer contracts of docs/architecture.md hold (import-linter, `.importlinter`),
and the checker is live: a contract that the code breaks is reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint(config: Path) -> subprocess.CompletedProcess:
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))"
    return subprocess.run([sys.executable, "-c", code, str(config)], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_the_package_keeps_its_layer_contracts():
    done = _lint(ROOT / ".importlinter")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in done.stdout


def test_a_broken_contract_fails(tmp_path):
    # The fleet drives devices, so a contract that puts device above fleet must break.
    config = tmp_path / "reversed.ini"
    config.write_text(
        "[importlinter]\nroot_package = lcft_tf\n\n"
        "[importlinter:contract:reversed]\nname = reversed\ntype = layers\n"
        "layers =\n    lcft_tf.device\n    lcft_tf.fleet\n"
    )
    done = _lint(config)
    assert done.returncode == 1
    assert "lcft_tf.fleet is not allowed to import lcft_tf.device" in done.stdout


@pytest.mark.parametrize("module", ["lcft_tf.fleet.simulate", "lcft_tf.fleet.worker", "lcft_tf.artifacts.pack",
                                    "lcft_tf.device.model", "lcft_tf.evaluation.report", "lcft_tf.pipeline.hard_search"])
def test_device_side_modules_import_without_tensorflow(module):
    code = f"import sys, {module}; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
