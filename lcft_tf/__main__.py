"""Command line: ``python -m lcft_tf [command] [--flags]``.

Commands:
  run        (default) the experiment: cloud training, device fleet, report
  benchmark  LiteRT vs TF latency, size, memory for the registry models
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

FLAGS = flags.FLAGS

# benchmark
flags.DEFINE_list("models", None, "Registry models, or 'all'. Default: per command.")
flags.DEFINE_list("batch_sizes", ["32"], "benchmark: static batch sizes to export and time.")
flags.DEFINE_list("threads", ["1"], "benchmark: interpreter thread counts.")
flags.DEFINE_integer("warmup", 10, "benchmark: untimed calls before timing.")
flags.DEFINE_integer("repeats", 100, "benchmark: timed calls per measurement.")
flags.DEFINE_string("json", None, "benchmark: also write the results as JSON here.")
flags.DEFINE_string("plot", None, "benchmark: also draw latency vs batch size to this PNG.")
flags.DEFINE_bool("memory", True, "benchmark: measure interpreter memory in a fresh process.")

COMMANDS = ("run", "benchmark")


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


def benchmark_command() -> None:
    from lcft_tf.benchmark import BenchmarkConfig, format_table, plot_latency, run_benchmark, save_json
    from lcft_tf.models import REGISTRY

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


def main(argv: list[str]) -> None:
    logging.getLogger().setLevel(logging.INFO)
    commands = argv[1:] or ["run"]
    if len(commands) > 1 or commands[0] not in COMMANDS:
        raise app.UsageError(f"expected one command from {COMMANDS}, got {commands}")
    {"benchmark": benchmark_command, "run": run_command}[commands[0]]()


def run() -> None:
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
