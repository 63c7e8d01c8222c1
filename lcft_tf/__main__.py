"""Command line: ``python -m lcft_tf [command] [--flags]``.

Commands (the first argument; ``run`` when it is left out):
  run        the experiment: cloud training, device fleet, report
  benchmark  LiteRT vs TF latency, size, memory (--suite fleet: fleet scale)
  bundle     rebuild tflite_models/ (ready .tflite + .json for mobile apps)

Each command defines only the flags it reads, generated from its config
dataclasses (:mod:`lcft_tf.cli_flags`), so a flag given to the wrong command
is an error. ``python -m lcft_tf <command> --helpfull`` lists them. Bad
input (a flag's value, an unknown flag, a config's check) ends in one
``error: ...`` line and exit status 2; Ctrl-C (SIGINT) in exit status 130
and SIGTERM in 143, each with one line saying how to resume.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from typing import Any, Callable

from absl import app, flags

from lcft_tf.cli_flags import FlagGroup, define_flag, help_flags

FLAGS = flags.FLAGS
COMMANDS = ("run", "benchmark", "bundle")
EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143
_MAIN_MODULE = "lcft_tf.__main__"  # help group of the flags no config owns


class UsageError(ValueError):
    """A command-line value that no config accepts."""


@dataclasses.dataclass
class CommandSetup:
    """What :func:`define_flags` made for one command.

    ``flag_values`` holds only this command's flags (also appended to the
    global ``FLAGS``, which parses them); ``groups`` maps a config's short
    name to its :class:`FlagGroup`; ``data_flag_names`` (``run`` only) maps
    dataset -> loader option -> flag name; ``resume_hint`` is set once the
    experiment's run name is known, for the Ctrl-C message.
    """

    command: str
    flag_values: flags.FlagValues
    groups: dict[str, FlagGroup]
    data_flag_names: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    resume_hint: str | None = None


# -- the flags of each command, from the configs --------------------------------
def _experiment_groups() -> dict[str, FlagGroup]:
    """The ``run`` command's flag groups, one per config, keyed by the
    :class:`~lcft_tf.pipeline.config.ExperimentConfig` field they build."""
    from lcft_tf.cloud.coda_prepare import ClassifierConfig
    from lcft_tf.cloud.export import ExportConfig
    from lcft_tf.cloud.retrieval import RetrievalConfig
    from lcft_tf.cloud.train import CloudConfig
    from lcft_tf.data.synthetic import SyntheticConfig
    from lcft_tf.device.coda_fine_tune import CodaConfig
    from lcft_tf.fleet.config import FleetConfig
    from lcft_tf.pipeline.config import ExperimentConfig
    from lcft_tf.pipeline.hard_search import HardSearchConfig

    return {
        "experiment": FlagGroup(ExperimentConfig),
        "synthetic": FlagGroup(SyntheticConfig, prefix="synthetic_",
                               rename={"num_users": "num_users", "num_items": "num_items", "seed": "data_seed",
                                       "mean_samples_per_user": "samples_per_user"}),
        "cloud": FlagGroup(CloudConfig, prefix="cloud_", rename={"learning_rate": "cloud_lr"}, exclude=("seed",)),
        "fleet": FlagGroup(FleetConfig, prefix="device_", rename={"learning_rate": "device_lr", "workers": "workers",
                                                                  "executor": "executor",
                                                                  "ray_address": "ray_address"},
                           exclude=("methods",)),
        "export": FlagGroup(ExportConfig, prefix="device_", exclude=("learning_rate", "global_ctr", "hard_table")),
        "hard": FlagGroup(HardSearchConfig, prefix="hard_", exclude=("seed",)),
        "retrieval": FlagGroup(RetrievalConfig, prefix="retrieval_", exclude=("seed",)),
        "classifier": FlagGroup(ClassifierConfig, prefix="classifier_"),
        "coda": FlagGroup(CodaConfig, prefix="coda_", exclude=("use_classifier", "correction")),
    }


def _data_groups() -> dict[str, FlagGroup]:
    """The real datasets' loader options, keyed by ``--dataset`` value."""
    from lcft_tf.data.amazon import AmazonOptions
    from lcft_tf.data.movielens import MovieLensOptions

    return {"movielens": FlagGroup(MovieLensOptions), "amazon": FlagGroup(AmazonOptions)}


def _define_data_flags(flag_values: flags.FlagValues) -> dict[str, dict[str, str]]:
    """One flag per loader option (default None: the loader's own default
    applies unless the flag is given). Options both loaders share keep their
    name and are listed under ``lcft_tf.data``; the others are prefixed with
    their dataset and listed under their options class. Returns dataset ->
    field -> flag name."""
    groups = _data_groups()
    fields = {dataset: {f.field: f for f in group.fields()} for dataset, group in groups.items()}
    names: dict[str, dict[str, str]] = {}
    defined: set[str] = set()
    for dataset, own in fields.items():
        names[dataset] = {}
        for field, f in own.items():
            shared = all(field in other for other in fields.values())
            name = field if shared else f"{dataset}_{field}"
            names[dataset][field] = name
            if name in defined:
                continue
            defined.add(name)
            if shared:
                text = _shared_loader_help({d: other[field] for d, other in fields.items()})
                module = "lcft_tf.data (options of every real dataset)"
            else:
                text, module = f"{f.help} (default {f.default!r})", groups[dataset].label
            define_flag(flag_values, name, f.kind, None, text, module)
    return names


def _shared_loader_help(per_dataset: dict[str, Any]) -> str:
    """One help text for an option several loaders share: its help once if
    they agree, else each dataset's, with each dataset's default."""
    texts = {f.help for f in per_dataset.values()}
    defaults = {repr(f.default) for f in per_dataset.values()}
    default = (f"default {defaults.pop()}" if len(defaults) == 1
               else "default " + ", ".join(f"{d} {f.default!r}" for d, f in per_dataset.items()))
    if len(texts) == 1:
        return f"{texts.pop()} ({default})"
    return "; ".join(f"{d}: {f.help} (default {f.default!r})" for d, f in per_dataset.items())


def _data_options(dataset: str, names: dict[str, dict[str, str]]) -> dict:
    """The loader options the user gave, for the chosen dataset only; raises
    :class:`UsageError` for an option of another dataset."""
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


def _benchmark_groups() -> dict[str, FlagGroup]:
    """The ``benchmark`` command's flag groups, keyed by ``--suite``."""
    from lcft_tf.benchmarks.coda import CodaBenchmarkConfig
    from lcft_tf.benchmarks.fleet import FleetBenchmarkConfig
    from lcft_tf.benchmarks.interpreter import BenchmarkConfig
    from lcft_tf.benchmarks.vocab import VocabBenchmarkConfig

    return {
        "interpreter": FlagGroup(BenchmarkConfig),
        "fleet": FlagGroup(FleetBenchmarkConfig, prefix="fleet_"),
        "coda": FlagGroup(CodaBenchmarkConfig, prefix="coda_"),
        "vocab": FlagGroup(VocabBenchmarkConfig, prefix="vocab_"),
    }


def _bundle_groups() -> dict[str, FlagGroup]:
    """The ``bundle`` command's one flag group."""
    from lcft_tf.bundle import BundleConfig

    return {"bundle": FlagGroup(BundleConfig)}


def define_flags(command: str) -> CommandSetup:
    """Define ``command``'s flags (``run``, ``benchmark`` or ``bundle``) on a
    fresh ``FlagValues`` with help flags that list only them, then append
    them to the global ``FLAGS`` (after absl's help flags, which ours
    replace) so that ``absl.app.run`` parses them with absl's and
    TensorFlow's flags. Raises ``absl.flags.DuplicateFlagError`` if called
    twice in one process."""
    flag_values = flags.FlagValues()
    define_flag(flag_values, "tf_logs", bool, False, "show TensorFlow's C++ start-up and runtime log lines.",
                _MAIN_MODULE)
    if command == "run":
        groups = _experiment_groups()
    elif command == "benchmark":
        flags.DEFINE_enum("suite", "interpreter", ["interpreter", "fleet", "coda", "vocab"],
                          "'interpreter' (per-signature latency), 'fleet' (ML-20M-scale fleet + naive baseline), "
                          "'coda' (retrieval, CoDA fleet vs Local, the sample classifier) or 'vocab' (full model vs "
                          "per-device submodel at growing vocabularies).",
                          flag_values=flag_values, module_name=_MAIN_MODULE)
        define_flag(flag_values, "json", str, None, "also write the results as JSON here.", _MAIN_MODULE)
        define_flag(flag_values, "plot", str, None, "also draw latency vs batch size to this PNG (interpreter suite).",
                    _MAIN_MODULE)
        groups = _benchmark_groups()
    else:
        define_flag(flag_values, "out", str, "tflite_models", "folder to write the ready models into: new or "
                    "empty, else give --overwrite.", _MAIN_MODULE)
        define_flag(flag_values, "overwrite", bool, False, "empty a non-empty --out before training (without it, "
                    "one is refused).", _MAIN_MODULE)
        groups = _bundle_groups()
    for group in groups.values():
        group.define(flag_values)
    setup = CommandSetup(command, flag_values, groups)
    if command == "run":
        setup.data_flag_names = _define_data_flags(flag_values)
    help_flags(sys.modules[__name__].__doc__ or "", flag_values)
    app.define_help_flags()  # absl's first, so that ours replace them on FLAGS
    FLAGS.append_flag_values(flag_values)
    return setup


def _all_models(names) -> tuple[str, ...]:
    """``names`` as a tuple, or every registry model for ``("all",)``."""
    from lcft_tf.models import REGISTRY

    return tuple(REGISTRY) if tuple(names) == ("all",) else tuple(names)


# -- commands --------------------------------------------------------------------
def experiment_command(setup: CommandSetup) -> None:
    """``run``: build the :class:`~lcft_tf.pipeline.config.ExperimentConfig`
    from the flags, run it and print its table. Raises ``ValueError`` (a
    config's validation, :class:`UsageError`) for bad flags."""
    from lcft_tf.pipeline.experiment import run_experiment

    groups = setup.groups
    config = groups["experiment"].build(
        FLAGS,
        models=_all_models(FLAGS.models),
        data_options=_data_options(FLAGS.dataset, setup.data_flag_names),
        synthetic=groups["synthetic"].build(FLAGS),
        cloud=groups["cloud"].build(FLAGS),
        fleet=groups["fleet"].build(FLAGS, coda=groups["coda"].build(FLAGS)),
        export=groups["export"].build(FLAGS),
        hard=groups["hard"].build(FLAGS),
        retrieval=groups["retrieval"].build(FLAGS),
        classifier=groups["classifier"].build(FLAGS),
    )
    setup.resume_hint = f"python -m lcft_tf run --resume --name {config.run_name} (with the same flags)"
    results = run_experiment(config)
    print(results["table"])
    print(f"\nwrote {config.output_dir}/{config.run_name}/ (results.json, report.md, figures)")


def benchmark_command(setup: CommandSetup) -> None:
    """``benchmark``: run the ``--suite`` the flags name and print (and with
    ``--json`` / ``--plot`` write) its results."""
    import json
    import tempfile
    from pathlib import Path

    from lcft_tf._io import atomic_write, to_json
    from lcft_tf.benchmarks.coda import run_coda_benchmark
    from lcft_tf.benchmarks.fleet import run_fleet_benchmark
    from lcft_tf.benchmarks.interpreter import format_table, plot_latency, run_benchmark, save_json

    groups = setup.groups
    if FLAGS.suite == "vocab":
        from lcft_tf.benchmarks.vocab import format_vocab_table, run_vocab_benchmark

        with tempfile.TemporaryDirectory() as tmp:
            result = run_vocab_benchmark(groups["vocab"].build(FLAGS), Path(tmp))
        print(format_vocab_table(result))
        if FLAGS.json:
            atomic_write(FLAGS.json, to_json(result))
        return
    if FLAGS.suite in ("fleet", "coda"):
        run_suite = run_fleet_benchmark if FLAGS.suite == "fleet" else run_coda_benchmark
        config = groups[FLAGS.suite].build(FLAGS)
        with tempfile.TemporaryDirectory() as tmp:
            result = run_suite(config, Path(tmp))
        print(json.dumps(json.loads(to_json(result)), indent=2))
        if FLAGS.json:
            atomic_write(FLAGS.json, to_json(result))
        return
    config = groups["interpreter"].build(FLAGS, models=_all_models(FLAGS.models))
    rows = run_benchmark(config)
    print(format_table(rows))
    if FLAGS.json:
        save_json(rows, config, FLAGS.json)
    if FLAGS.plot:
        plot_latency(rows, FLAGS.plot)


def bundle_command(setup: CommandSetup) -> None:
    """``bundle``: write ``--out`` (ready ``.tflite`` + ``.json`` per model;
    a non-empty folder only with ``--overwrite``, checked before training),
    verify that every model loads, trains a step and restores, and print one
    line per file."""
    from pathlib import Path

    from lcft_tf.bundle import build_bundle, verify_bundle

    config = setup.groups["bundle"].build(FLAGS, models=_all_models(FLAGS.models))
    entries = build_bundle(FLAGS.out, config, overwrite=FLAGS.overwrite)
    verify_bundle(FLAGS.out)
    for e in entries:
        print(f"{e['tflite']:<20} {e['bytes'] / 1024:8.1f} KiB  sha256 {e['sha256'][:16]}")
    print(f"wrote {Path(FLAGS.out)}/ (+ index.json); every model loads, trains a step and restores")


COMMAND_FUNCTIONS: dict[str, Callable[[CommandSetup], None]] = {
    "run": experiment_command, "benchmark": benchmark_command, "bundle": bundle_command}


# -- plumbing --------------------------------------------------------------------
def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up lines (oneDNN, cuInit, ...)
    silenced (``TF_CPP_MIN_LOG_LEVEL=3`` unless set, and fd 2 pointed at
    /dev/null during the import and device probe); ``--tf_logs`` keeps them."""
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
    """Logging filter: this package's records at any level, others' from WARNING up."""
    return record.levelno >= logging.WARNING or record.name.startswith("lcft_tf")


# -- signals ---------------------------------------------------------------------
class Stopped(KeyboardInterrupt):
    """Raised where the main thread is by SIGINT or SIGTERM. A
    ``KeyboardInterrupt``, so that what cleans up after Ctrl-C (the process
    pool, Ray, the run lock) does so after SIGTERM too."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """SIGINT and SIGTERM, handled alike while a command runs: each raises
    :class:`Stopped` (for the first signal received) in the main thread.

    Two ways a library loses a ``KeyboardInterrupt`` are covered. A bare
    ``except:`` turns it into another error (Keras does, in the loss it
    builds while TensorFlow traces the training function): :attr:`received`
    still says the command was stopped, whatever reaches the caller. One
    raised inside a finalizer is printed by Python as "Exception ignored"
    and then dropped: :meth:`install`'s ``sys.unraisablehook`` hides it and
    raises it again (from SIGALRM, ``AGAIN_SECONDS`` later) out of the
    finalizer.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> None:
        """Handle SIGINT and SIGTERM in this process (main thread only)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        signal.signal(signal.SIGALRM, self._again)
        previous = sys.unraisablehook

        def unraisable(info: Any) -> None:
            if isinstance(info.exc_value, Stopped):  # dropped in a finalizer: raised again once out of it
                signal.setitimer(signal.ITIMER_REAL, self.AGAIN_SECONDS)
                return
            previous(info)

        sys.unraisablehook = unraisable

    AGAIN_SECONDS = 0.05  # after a finalizer dropped the stop: long enough to have left the finalizer

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
        raise Stopped(self.received)

    def _again(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise Stopped(self.received)

    def stopped_by(self, err: BaseException) -> int | None:
        """The signal that ended the command with ``err``, else None. Ray's
        driver replaces the SIGTERM handler with ``sys.exit(SIGTERM)``; that
        exit counts as SIGTERM."""
        if (isinstance(err, SystemExit) and err.code == signal.SIGTERM
                and signal.getsignal(signal.SIGTERM) != self._handle):
            self.received = self.received or signal.SIGTERM
        if self.received is None and isinstance(err, KeyboardInterrupt):
            return signal.SIGINT
        return self.received


def _fail(message: str, status: int = EXIT_USAGE) -> None:
    """Print ``error: message`` to stderr and exit with ``status``."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def run_parsed_command(argv: list[str], setup: CommandSetup) -> None:
    """Run ``setup.command`` once absl has parsed the flags (``argv``: what
    is left, the program name first). Bad input (a stray argument, a
    ``ValueError``, a missing file, unreadable raw data, a run folder in use,
    an ``OSError``) ends in one ``error: ...`` line and exit status 2;
    SIGINT (Ctrl-C) in status 130 and SIGTERM in 143, with the resume hint,
    whatever error the signal turned into (:class:`StopSignals`)."""
    if len(argv) > 1:
        _fail(f"unexpected arguments {argv[1:]}; the command ({'/'.join(COMMANDS)}) comes first")
    # Our INFO lines, and only warnings from TF / absl internals (which
    # reset the root level while saving models, so filter at the handler).
    logging.getLogger("lcft_tf").setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_only_ours_below_warning)
    from lcft_tf.data.raw import RawDataError
    from lcft_tf.fleet.lifecycle import WorkerLostError
    from lcft_tf.pipeline.stages import RunInUseError

    stop = StopSignals()
    stop.install()
    try:
        try:
            COMMAND_FUNCTIONS[setup.command](setup)
        except BaseException as err:
            signum = stop.stopped_by(err)
            if signum is None:
                raise
            hint = setup.resume_hint
            what, status = ("terminated", EXIT_TERMINATED) if signum == signal.SIGTERM else ("interrupted",
                                                                                          EXIT_INTERRUPTED)
            _fail(f"{what}{'; continue with: ' + hint if hint else ''}", status)
    except WorkerLostError as err:  # finished chunks are kept: the run can continue
        hint = setup.resume_hint
        _fail(f"{err}{'; continue with: ' + hint if hint else ''}", EXIT_FAILED)
    except (ValueError, FileNotFoundError, RawDataError, RunInUseError) as err:
        _fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
    except OSError as err:  # unwritable output folder, full disk, ...
        _fail(f"{err.strerror or err}: {err.filename}" if err.filename else str(err))


def split_command(argv: list[str]) -> tuple[str, list[str]]:
    """The command (first argument, default ``run``) and the rest of argv;
    exits with status 2 for an unknown command."""
    if len(argv) > 1 and not argv[1].startswith("-"):
        if argv[1] not in COMMANDS:
            _fail(f"unknown command {argv[1]!r}; choose from {', '.join(COMMANDS)}")
        return argv[1], [argv[0], *argv[2:]]
    return "run", list(argv)


def cli_main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``lcft-tf``) and ``python -m lcft_tf``:
    ``argv`` defaults to ``sys.argv``. Always ends in ``sys.exit``."""
    command, argv = split_command(list(sys.argv if argv is None else argv))
    # Ray's C++ failure-signal handler also takes SIGTERM: it prints a native
    # stack and arms a 3 s abort that fires while Ray shuts down after the
    # signal (exit 134). This process handles SIGTERM itself (StopSignals).
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    if not any(a.split("=")[0] == "--tf_logs" and not a.endswith("=false") for a in argv):
        quiet_tensorflow()  # before the configs' modules import it
    setup = define_flags(command)
    app.run(lambda args: run_parsed_command(args, setup), argv=argv, flags_parser=flags_parser(command))


def flags_parser(command: str) -> Callable[[list[str]], list[str]]:
    """absl's flag parsing for ``app.run``, with a flag it cannot parse (a
    bad, empty or missing value, an unknown flag, a flag of another command)
    ending in one ``error: ...`` line and exit status 2, as other bad input
    does (absl's own parser prints ``FATAL Flags parsing error`` and exits 1)."""
    def parse(argv: list[str]) -> list[str]:
        try:
            return FLAGS(argv)
        except flags.Error as err:
            text = "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__
            _fail(f"{text} (python -m lcft_tf {command} --help lists its flags)")
            raise  # not reached: _fail exits

    return parse


if __name__ == "__main__":
    cli_main()
