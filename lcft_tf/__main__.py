"""Command line: ``python -m lcft_tf [command] [--flags]``.

Commands (the first argument; ``run`` when it is left out):
  run        the experiment: cloud training, device fleet, report
  benchmark  LiteRT vs TF latency, size, memory (--suite fleet: fleet scale)
  bundle     rebuild tflite_models/ (ready .tflite + .json for mobile apps)

Each command defines only the flags it reads, generated from its config
dataclasses (:mod:`lcft_tf.cli_flags`), so a flag given to the wrong command
is an error. ``python -m lcft_tf <command> --helpfull`` lists them. Bad
input ends in one ``error: ...`` line and exit status 2; Ctrl-C in exit
status 130 and a line saying how to resume.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags

from lcft_tf.cli_flags import FlagGroup

FLAGS = flags.FLAGS
COMMANDS = ("run", "benchmark", "bundle")
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class UsageError(ValueError):
    """A command-line value that no config accepts."""


# -- the flags of each command, from the configs --------------------------------
def _run_groups() -> list[FlagGroup]:
    from lcft_tf.cloud.coda_prepare import ClassifierConfig
    from lcft_tf.cloud.export import ExportConfig
    from lcft_tf.pipeline.hard_search import HardSearchConfig
    from lcft_tf.cloud.retrieval import RetrievalConfig
    from lcft_tf.cloud.train import CloudConfig
    from lcft_tf.data.synthetic import SyntheticConfig
    from lcft_tf.device.coda_fine_tune import CodaConfig
    from lcft_tf.fleet.config import FleetConfig
    from lcft_tf.pipeline.experiment import ExperimentConfig

    return [
        FlagGroup(ExperimentConfig, help={
            "dataset": "synthetic, movielens or amazon.",
            "data_dir": "folder with the raw files of a real dataset (nothing is downloaded).",
            "cache_dir": "where prepared real datasets are cached (default ~/.cache/lcft_tf).",
            "max_users": "use a seeded random sample of this many users.",
            "models": "registry models, or 'all'.",
            "methods": "methods to compare (cloud is required: gains are measured against it).",
            "seeds": "cloud-training seeds; tables report mean ± std over them.",
            "output_dir": "where runs/<name>/ goes.",
            "name": "run name (default: the dataset, plus the raw files' folder name).",
            "resume": "continue the run in runs/<name>/: reuse finished stages whose config hash matches.",
            "overwrite": "replace the run in runs/<name>/.",
        }),
        FlagGroup(SyntheticConfig, prefix="synthetic_",
                  rename={"num_users": "num_users", "num_items": "num_items", "seed": "data_seed",
                          "mean_samples_per_user": "samples_per_user"},
                  help={"num_users": "synthetic users.", "num_items": "synthetic items.",
                        "mean_samples_per_user": "mean synthetic samples per user.",
                        "seed": "seed of the synthetic data (and of --max_users' sample)."}),
        FlagGroup(CloudConfig, prefix="cloud_", rename={"learning_rate": "cloud_lr"}, exclude=("seed",),
                  help={"learning_rate": "cloud learning rate (default: adam 1e-3, sgd 1.0; decayed by "
                                         "--cloud_decay_per_epoch each epoch).",
                        "optimizer": "cloud optimizer: adam (default) or sgd (the paper's, with lr 1.0)."}),
        FlagGroup(FleetConfig, prefix="device_", rename={"learning_rate": "device_lr", "workers": "workers",
                                                         "executor": "executor", "ray_address": "ray_address"},
                  exclude=("methods",),
                  help={"learning_rate": "on-device fine-tuning learning rate (paper 0.01; 0.1 shows more).",
                        "workers": "fleet and hard-search workers (0: one per core; under Ray, the cluster's CPUs).",
                        "executor": "where the fleet and hard search run: auto (serial for one worker, else a "
                                    "process pool), serial, process or ray (docs/scaling.md).",
                        "ray_address": "Ray cluster to join (auto, ray://host:10001); unset: start a local Ray."}),
        FlagGroup(ExportConfig, prefix="device_", exclude=("learning_rate", "global_ctr", "hard_table"),
                  help={"batch_size": "static batch of the exported train signature.",
                        "optimizer": "on-device optimizer compiled into the file: sgd or adam."}),
        FlagGroup(HardSearchConfig, prefix="hard_", exclude=("seed",),
                  help={"edges": "local-CTR interval edges of the hard table.",
                        "users_per_group": "users sampled per CTR interval for the hard grid search."}),
        FlagGroup(RetrievalConfig, prefix="retrieval_", exclude=("seed",),
                  help={"k": "CoDA: samples the cloud retrieves per user.",
                        "index": "CoDA: faiss index, flat (exact), ivf or hnsw.",
                        "pool_size": "CoDA: a seeded subsample of the train samples to retrieve from (default all)."}),
        FlagGroup(ClassifierConfig, prefix="classifier_"),
        FlagGroup(CodaConfig, prefix="coda_", exclude=("use_classifier", "correction"),
                  help={"keep": "CoDA: keep retrieved samples by 'threshold' or top 'fraction'.",
                        "keep_value": "CoDA: the probability threshold, or the kept fraction."}),
    ]


def _data_groups() -> dict[str, FlagGroup]:
    from lcft_tf.data.amazon import AmazonOptions
    from lcft_tf.data.movielens import MovieLensOptions

    return {"movielens": FlagGroup(MovieLensOptions), "amazon": FlagGroup(AmazonOptions)}


def _define_data_flags() -> dict[str, dict[str, str]]:
    """One flag per loader option (default None: the loader's own default
    applies unless the flag is given). Options both loaders share keep their
    name; the others are prefixed with their dataset. Returns dataset ->
    field -> flag name."""
    groups = _data_groups()
    fields = {d: {f: (kind, default) for f, _, kind, default in g.fields()} for d, g in groups.items()}
    names: dict[str, dict[str, str]] = {}
    defined: set[str] = set()
    for dataset, own in fields.items():
        names[dataset] = {}
        for field, (kind, default) in own.items():
            shared = all(field in other for other in fields.values())
            name = field if shared else f"{dataset}_{field}"
            names[dataset][field] = name
            if name in defined:
                continue
            defined.add(name)
            text = f"{'' if shared else dataset + ' '}loader option {field} (default {default!r})"
            if isinstance(kind, tuple):
                flags.DEFINE_list(name, None, text)
            elif kind is bool:
                flags.DEFINE_bool(name, None, text)
            elif kind is int:
                flags.DEFINE_integer(name, None, text)
            elif kind is float:
                flags.DEFINE_float(name, None, text)
            else:
                flags.DEFINE_string(name, None, text)
    return names


def _data_options(dataset: str, names: dict[str, dict[str, str]]) -> dict:
    """The loader options the user gave, for the chosen dataset only."""
    options = {}
    for other, fields in names.items():
        for field, name in fields.items():
            if not FLAGS[name].present or (other != dataset and name in names.get(dataset, {}).values()):
                continue
            if other != dataset:
                raise UsageError(f"--{name} applies to --dataset {other}, not {dataset}")
            value = FLAGS[name].value
            options[field] = tuple(value) if isinstance(value, list) else value
    return options


def _benchmark_groups() -> list[FlagGroup]:
    from lcft_tf.benchmarks.coda import CodaBenchmarkConfig
    from lcft_tf.benchmarks.fleet import FleetBenchmarkConfig
    from lcft_tf.benchmarks.interpreter import BenchmarkConfig
    from lcft_tf.benchmarks.vocab import VocabBenchmarkConfig

    return [
        FlagGroup(BenchmarkConfig, help={"models": "registry models, or 'all'.",
                                         "batch_sizes": "static batch sizes to export and time.",
                                         "threads": "interpreter thread counts."}),
        FlagGroup(FleetBenchmarkConfig, prefix="fleet_"),
        FlagGroup(CodaBenchmarkConfig, prefix="coda_"),
        FlagGroup(VocabBenchmarkConfig, prefix="vocab_"),
    ]


def _bundle_groups() -> list[FlagGroup]:
    from lcft_tf.bundle import BundleConfig

    return [FlagGroup(BundleConfig, help={"models": "registry models, or 'all'."})]


def define_flags(command: str) -> dict:
    """Define ``command``'s flags on the global FLAGS; returns what building its configs needs."""
    flags.DEFINE_bool("tf_logs", False, "show TensorFlow's C++ start-up and runtime log lines.")
    if command == "run":
        groups = _run_groups()
        for g in groups:
            g.define(FLAGS)
        return {"groups": groups, "data": _define_data_flags()}
    if command == "benchmark":
        flags.DEFINE_enum("suite", "interpreter", ["interpreter", "fleet", "coda", "vocab"],
                          "'interpreter' (per-signature latency), 'fleet' (ML-20M-scale fleet + naive baseline), "
                          "'coda' (retrieval, CoDA fleet vs Local, the sample classifier) or 'vocab' (full model vs "
                          "per-device submodel at growing vocabularies).")
        flags.DEFINE_string("json", None, "also write the results as JSON here.")
        flags.DEFINE_string("plot", None, "also draw latency vs batch size to this PNG (interpreter suite).")
        groups = _benchmark_groups()
        for g in groups:
            g.define(FLAGS)
        return {"groups": groups}
    flags.DEFINE_string("out", "tflite_models", "folder to (re)write the ready models into.")
    groups = _bundle_groups()
    for g in groups:
        g.define(FLAGS)
    return {"groups": groups}


def _all_models(names) -> tuple[str, ...]:
    from lcft_tf.models import REGISTRY

    return tuple(REGISTRY) if tuple(names) == ("all",) else tuple(names)


# -- commands --------------------------------------------------------------------
def run_command(spec: dict) -> None:
    from lcft_tf.pipeline.experiment import run_experiment

    experiment, synthetic, cloud, fleet, export, hard, retrieval, classifier, coda = spec["groups"]
    config = experiment.build(
        FLAGS,
        models=_all_models(FLAGS.models),
        data_options=_data_options(FLAGS.dataset, spec["data"]),
        synthetic=synthetic.build(FLAGS),
        cloud=cloud.build(FLAGS),
        fleet=fleet.build(FLAGS, coda=coda.build(FLAGS)),
        export=export.build(FLAGS),
        hard=hard.build(FLAGS),
        retrieval=retrieval.build(FLAGS),
        classifier=classifier.build(FLAGS),
    )
    spec["resume_hint"] = f"python -m lcft_tf run --resume --name {config.run_name} (with the same flags)"
    results = run_experiment(config)
    print(results["table"])
    print(f"\nwrote {config.output_dir}/{config.run_name}/ (results.json, report.md, figures)")


def benchmark_command(spec: dict) -> None:
    import json
    import tempfile
    from pathlib import Path

    from lcft_tf._io import atomic_write, to_json
    from lcft_tf.benchmarks.coda import run_coda_benchmark
    from lcft_tf.benchmarks.fleet import run_fleet_benchmark
    from lcft_tf.benchmarks.interpreter import format_table, plot_latency, run_benchmark, save_json

    interpreter, fleet, coda, vocab = spec["groups"]
    if FLAGS.suite == "vocab":
        from lcft_tf.benchmarks.vocab import format_vocab_table, run_vocab_benchmark

        with tempfile.TemporaryDirectory() as tmp:
            result = run_vocab_benchmark(vocab.build(FLAGS), Path(tmp))
        print(format_vocab_table(result))
        if FLAGS.json:
            atomic_write(FLAGS.json, to_json(result))
        return
    if FLAGS.suite in ("fleet", "coda"):
        config, run_suite = (fleet.build(FLAGS), run_fleet_benchmark) if FLAGS.suite == "fleet" else (
            coda.build(FLAGS), run_coda_benchmark)
        with tempfile.TemporaryDirectory() as tmp:
            result = run_suite(config, Path(tmp))
        print(json.dumps(json.loads(to_json(result)), indent=2))
        if FLAGS.json:
            atomic_write(FLAGS.json, to_json(result))
        return
    config = interpreter.build(FLAGS, models=_all_models(FLAGS.models))
    rows = run_benchmark(config)
    print(format_table(rows))
    if FLAGS.json:
        save_json(rows, config, FLAGS.json)
    if FLAGS.plot:
        plot_latency(rows, FLAGS.plot)


def bundle_command(spec: dict) -> None:
    from lcft_tf.bundle import build_bundle, verify_bundle

    (bundle,) = spec["groups"]
    config = bundle.build(FLAGS, models=_all_models(FLAGS.models))
    entries = build_bundle(FLAGS.out, config)
    verify_bundle(FLAGS.out)
    for e in entries:
        print(f"{e['tflite']:<20} {e['bytes'] / 1024:8.1f} KiB  sha256 {e['sha256'][:16]}")
    print(f"wrote {FLAGS.out}/ (+ index.json); every model loads, trains a step and restores")


# -- plumbing --------------------------------------------------------------------
def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up lines (oneDNN, cuInit, ...)
    silenced; ``--tf_logs`` keeps them."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # the device probe logs at first use
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _only_ours_below_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or record.name.startswith("lcft_tf")


def _fail(message: str, status: int = EXIT_USAGE) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def main(argv: list[str], command: str, spec: dict) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; the command ({'/'.join(COMMANDS)}) comes first")
    # Our INFO lines, and only warnings from TF / absl internals (which
    # reset the root level while saving models, so filter at the handler).
    logging.getLogger("lcft_tf").setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_only_ours_below_warning)
    from lcft_tf.data.raw import RawDataError
    from lcft_tf.pipeline.stages import RunInUseError

    try:
        {"run": run_command, "benchmark": benchmark_command, "bundle": bundle_command}[command](spec)
    except KeyboardInterrupt:
        hint = spec.get("resume_hint")
        _fail(f"interrupted{'; continue with: ' + hint if hint else ''}", EXIT_INTERRUPTED)
    except (ValueError, FileNotFoundError, RawDataError, RunInUseError) as err:
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except OSError as err:  # unwritable output folder, full disk, ...
        _fail(f"{err.strerror or err}: {err.filename}" if err.filename else str(err))


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """The command (first argument, default ``run``) and the rest of argv."""
    if len(argv) > 1 and not argv[1].startswith("-"):
        if argv[1] not in COMMANDS:
            _fail(f"unknown command {argv[1]!r}; choose from {', '.join(COMMANDS)}")
        return argv[1], [argv[0], *argv[2:]]
    return "run", list(argv)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    command, argv = split_command(list(sys.argv if argv is None else argv))
    if not any(a.split("=")[0] == "--tf_logs" and not a.endswith("=false") for a in argv):
        quiet_tensorflow()  # before the configs' modules import it
    spec = define_flags(command)
    app.run(lambda args: main(args, command, spec), argv=argv)


if __name__ == "__main__":
    run()
