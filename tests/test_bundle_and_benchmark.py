"""tflite_models/ bundle (committed files and a deterministic rebuild) and
the interpreter benchmark's outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lcft_tf.bundle import BundleConfig, build_bundle, verify_bundle
from lcft_tf.models import REGISTRY

BUNDLE = Path(__file__).resolve().parents[1] / "tflite_models"


def test_committed_bundle_loads_trains_and_restores():
    index = json.loads((BUNDLE / "index.json").read_text())
    assert sorted(e["model"] for e in index["models"]) == sorted(REGISTRY)
    for entry in index["models"]:
        meta = json.loads((BUNDLE / entry["metadata"]).read_text())
        assert meta["tflite_sha256"] == entry["sha256"] and meta["tflite_bytes"] == entry["bytes"]
        assert set(meta["signatures"]) == {"train", "infer", "infer_one", "save", "restore", "correct"}
        assert meta["correction"]["hard_table"] is not None
        assert meta["checkpoint"]["tensors"] == [t["name"] for t in meta["signatures"]["save"]["outputs"]]
    assert sorted(verify_bundle(BUNDLE)) == sorted(REGISTRY)  # sha256, signatures, one step, restore


def test_bundle_rebuild_is_deterministic(tmp_path):
    config = BundleConfig(models=("lr",), num_users=30, hard_users_per_group=2)
    build_bundle(tmp_path / "a", config)
    build_bundle(tmp_path / "b", config)
    for name in ("lr.tflite", "lr.json", "index.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert verify_bundle(tmp_path / "a") == ["lr"]


def test_benchmark_cli_writes_table_json_and_chart(tmp_path):
    cmd = [sys.executable, "-m", "lcft_tf", "benchmark", "--models=lr", "--batch_sizes=4,8", "--threads=1",
           "--repeats=3", "--warmup=1", f"--json={tmp_path / 'b.json'}", f"--plot={tmp_path / 'b.png'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table_rows = [line for line in done.stdout.splitlines() if line.startswith("| lr |")]
    assert len(table_rows) == 2
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert [(r["model"], r["batch_size"], r["threads"]) for r in rows] == [("lr", 4, 1), ("lr", 8, 1)]
    for r in rows:
        assert set(r) >= {"train", "tf_train", "infer", "tf_infer", "save", "restore"}
        assert r["train_ratio_litert_over_tf"] == pytest.approx(r["train"]["mean_ms"] / r["tf_train"]["mean_ms"])
        assert r["tflite_kib"] > 0 and r["interpreter_rss_mb"] >= 0
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"


def test_latency_stats_known_answer():
    from lcft_tf.benchmarks.timing import latency_stats

    stats = latency_stats([0.004, 0.001, 0.002, 0.003, 0.010])
    assert stats["mean_ms"] == pytest.approx(4.0)
    assert stats["p50_ms"] == pytest.approx(3.0)
    assert stats["p99_ms"] == pytest.approx(4.0 + 0.96 * 6.0)  # linear interpolation between 4 and 10 ms


def test_coda_benchmark_cli(tmp_path):
    cmd = [sys.executable, "-m", "lcft_tf", "benchmark", "--suite=coda", "--coda_num_users=40", "--coda_samples_per_user=30",
           "--coda_num_items=100", "--coda_fleet_users=20", "--coda_k=15", "--coda_repeats=5", "--coda_workers=1",
           f"--json={tmp_path / 'c.json'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["dataset"]["users"] == 40 and result["fleet"]["users"] == 20
    assert result["cloud_side"]["retrieval"]["users"] == 40
    kept = result["fleet"]["mean_kept"]
    assert 0 < kept["coda"] <= 15 and kept["coda_lcft"] == kept["coda"]
    dim = result["cloud_side"]["embedding_dim"]
    assert result["classifier"]["batch_size"] == 32 and dim > 0
