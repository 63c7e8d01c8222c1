"""Command line: ``python -m lcft_tf [command] [--flags]``.

Commands:
  run        (default) the experiment: cloud training, device fleet, report
  benchmark  LiteRT vs TF latency, size, memory (--suite fleet: fleet scale)
  bundle     rebuild tflite_models/ (ready .tflite + .json for mobile apps)
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

FLAGS = flags.FLAGS

flags.DEFINE_list("models", None, "Registry models, or 'all'. Default: din,wide_deep for run, all for benchmark.")

# run
flags.DEFINE_string("dataset", "synthetic", "run: synthetic, movielens or amazon.")
flags.DEFINE_string("data_dir", None, "run: folder with the raw files of a real dataset.")
flags.DEFINE_bool("skip_bad_rows", False, "run: skip (and count) malformed raw rows instead of failing.")
flags.DEFINE_string("cache_dir", None, "run: where prepared real datasets are cached (default ~/.cache/lcft_tf).")
flags.DEFINE_enum("split", "auto", ["auto", "global", "per_user"], "run: MovieLens time split (see lcft_tf.data.movielens).")
flags.DEFINE_list("methods", list(("cloud", "local", "soft1", "soft2", "hard")), "run: methods to compare.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "run: cloud-training seeds; the table reports mean ± std over them.")
flags.DEFINE_integer("num_users", None, "run: synthetic users to generate (default 500).")
flags.DEFINE_integer("samples_per_user", None, "run: mean synthetic samples per user (default 200).")
flags.DEFINE_integer("num_items", None, "run: synthetic items (default 300).")
flags.DEFINE_integer("max_users", None, "run: use a seeded random sample of this many users.")
flags.DEFINE_string("output_dir", "runs", "run: where runs/<name>/ goes.")
flags.DEFINE_string("name", None, "run: run name (default: the dataset name).")
flags.DEFINE_bool("resume", False, "run: reuse finished cloud models and fleet chunks of an interrupted run.")
flags.DEFINE_integer("workers", 0, "run: fleet worker processes (0: one per core).")
flags.DEFINE_float("device_lr", 0.01, "run: on-device fine-tuning learning rate (paper 0.01; 0.1 shows more).")
flags.DEFINE_integer("device_epochs", 1, "run: on-device fine-tuning epochs.")
flags.DEFINE_integer("device_batch_size", 32, "run: static batch of the exported train signature.")
flags.DEFINE_float("cloud_lr", 1.0, "run: cloud SGD learning rate (decayed x0.1 per epoch).")
flags.DEFINE_integer("cloud_epochs", 2, "run: cloud training epochs.")
flags.DEFINE_integer("cloud_batch_size", 32, "run: cloud training batch size.")
flags.DEFINE_integer("hard_users_per_group", 20, "run: users sampled per CTR interval for the hard grid search.")
flags.DEFINE_list("hard_edges", ["0.2", "0.4", "0.6", "0.8"], "run: local-CTR interval edges of the hard table.")

# benchmark
flags.DEFINE_list("batch_sizes", ["32"], "benchmark: static batch sizes to export and time.")
flags.DEFINE_list("threads", ["1"], "benchmark: interpreter thread counts.")
flags.DEFINE_integer("warmup", 10, "benchmark: untimed calls before timing.")
flags.DEFINE_integer("repeats", 100, "benchmark: timed calls per measurement.")
flags.DEFINE_string("json", None, "benchmark: also write the results as JSON here.")
flags.DEFINE_string("plot", None, "benchmark: also draw latency vs batch size to this PNG.")
flags.DEFINE_bool("memory", True, "benchmark: measure interpreter memory in a fresh process.")
flags.DEFINE_enum("suite", "interpreter", ["interpreter", "fleet"],
                  "benchmark: 'interpreter' (per-signature latency) or 'fleet' (ML-20M-scale fleet + naive baseline; "
                  "--num_users, --samples_per_user, --workers apply).")

# bundle
flags.DEFINE_string("out", "tflite_models", "bundle: folder to (re)write the ready models into.")

COMMANDS = ("run", "benchmark", "bundle")


def _models(default: list[str]) -> list[str]:
    from lcft_tf.models import REGISTRY

    names = FLAGS.models or default
    if names == ["all"]:
        return list(REGISTRY)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise app.UsageError(f"unknown models {unknown}; choose from {sorted(REGISTRY)} or 'all'")
    return names


def _ints(values: list[str], flag: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except ValueError:
        raise app.UsageError(f"--{flag} takes integers, got {values}") from None
    if any(v < 1 for v in out):
        raise app.UsageError(f"--{flag} values must be >= 1, got {values}")
    return out


def fleet_benchmark_command() -> None:
    import json
    import tempfile
    from pathlib import Path

    from lcft_tf._io import atomic_write, to_json
    from lcft_tf.benchmark import FleetBenchmarkConfig, run_fleet_benchmark

    config = FleetBenchmarkConfig(
        model=_models(["din"])[0],
        num_users=FLAGS.num_users or 5700,
        samples_per_user=FLAGS.samples_per_user or 570,
        workers=FLAGS.workers,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = run_fleet_benchmark(config, Path(tmp))
    print(json.dumps(json.loads(to_json(result)), indent=2))
    if FLAGS.json:
        atomic_write(FLAGS.json, to_json(result))


def benchmark_command() -> None:
    from lcft_tf.benchmark import BenchmarkConfig, format_table, plot_latency, run_benchmark, save_json
    from lcft_tf.models import REGISTRY

    if FLAGS.suite == "fleet":
        return fleet_benchmark_command()
    config = BenchmarkConfig(
        models=tuple(_models(list(REGISTRY))),
        batch_sizes=_ints(FLAGS.batch_sizes, "batch_sizes"),
        threads=_ints(FLAGS.threads, "threads"),
        warmup=FLAGS.warmup,
        repeats=_ints([str(FLAGS.repeats)], "repeats")[0],
        measure_memory=FLAGS.memory,
    )
    rows = run_benchmark(config)
    print(format_table(rows))
    if FLAGS.json:
        save_json(rows, config, FLAGS.json)
    if FLAGS.plot:
        plot_latency(rows, FLAGS.plot)


def _data_options() -> dict:
    options: dict = {}
    if FLAGS.skip_bad_rows:
        options["skip_bad_rows"] = True
    if FLAGS.dataset == "movielens" and FLAGS.split != "auto":
        options["split"] = FLAGS.split
    return options


def run_command() -> None:
    import dataclasses

    from lcft_tf.cloud.hard import HardSearchConfig
    from lcft_tf.cloud.train import CloudConfig
    from lcft_tf.data.synthetic import SyntheticConfig
    from lcft_tf.device.fleet import FleetConfig
    from lcft_tf.experiment import ExperimentConfig, run_experiment

    synthetic = SyntheticConfig()
    if FLAGS.num_users:
        synthetic = dataclasses.replace(synthetic, num_users=FLAGS.num_users)
    if FLAGS.samples_per_user:
        synthetic = dataclasses.replace(synthetic, mean_samples_per_user=FLAGS.samples_per_user)
    if FLAGS.num_items:
        synthetic = dataclasses.replace(synthetic, num_items=FLAGS.num_items)
    try:
        config = ExperimentConfig(
            dataset=FLAGS.dataset,
            data_dir=FLAGS.data_dir,
            data_options=_data_options(),
            cache_dir=FLAGS.cache_dir,
            synthetic=synthetic,
            max_users=FLAGS.max_users,
            models=tuple(_models(["din", "wide_deep"])),
            methods=tuple(FLAGS.methods),
            seeds=tuple(int(s) for s in FLAGS.seeds),
            cloud=CloudConfig(batch_size=FLAGS.cloud_batch_size, epochs=FLAGS.cloud_epochs, learning_rate=FLAGS.cloud_lr),
            fleet=FleetConfig(learning_rate=FLAGS.device_lr, epochs=FLAGS.device_epochs, workers=FLAGS.workers),
            hard=HardSearchConfig(
                users_per_group=FLAGS.hard_users_per_group, edges=tuple(float(e) for e in FLAGS.hard_edges)
            ),
            export_batch_size=FLAGS.device_batch_size,
            output_dir=FLAGS.output_dir,
            name=FLAGS.name,
            resume=FLAGS.resume,
        )
    except ValueError as err:
        raise app.UsageError(str(err)) from None
    from lcft_tf.data.raw import RawDataError

    try:
        results = run_experiment(config)
    except (FileNotFoundError, RawDataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(results["table"])
    print(f"\nwrote {config.output_dir}/{config.run_name}/ (results.json, report.md, figures)")


def _only_ours_below_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.startswith("lcft_tf")


def bundle_command() -> None:
    from lcft_tf.bundle import BundleConfig, build_bundle, verify_bundle
    from lcft_tf.models import REGISTRY

    entries = build_bundle(FLAGS.out, BundleConfig(models=tuple(_models(list(REGISTRY)))))
    verify_bundle(FLAGS.out)
    for e in entries:
        print(f"{e['tflite']:<20} {e['bytes'] / 1024:8.1f} KiB  sha256 {e['sha256'][:16]}")
    print(f"wrote {FLAGS.out}/ (+ index.json); every model loads, trains a step and restores")


def main(argv: list[str]) -> None:
    # Our INFO lines, and only warnings from TF / absl internals (which
    # reset the root level while saving models, so filter at the handler).
    logging.getLogger("lcft_tf").setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_only_ours_below_warning)
    commands = argv[1:] or ["run"]
    if len(commands) > 1 or commands[0] not in COMMANDS:
        raise app.UsageError(f"expected one command from {COMMANDS}, got {commands}")
    {"benchmark": benchmark_command, "run": run_command, "bundle": bundle_command}[commands[0]]()


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
