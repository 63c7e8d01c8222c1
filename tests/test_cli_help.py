"""The command line's help is written once, on the config fields, and
``--help`` / ``--helpfull`` list the command's own flags, not TensorFlow's."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from absl import flags

import lcft_tf.__main__ as cli
from lcft_tf.cli_flags import FlagGroup, define_flag
from lcft_tf.fleet.config import FleetConfig

# Flags TensorFlow and absl register on the global FLAGS at import.
FOREIGN = ("tt_check_filter", "hbm_oom_exit", "op_conversion_fallback_to_while_loop", "pdb_post_mortem")


def _flat(text: str) -> str:
    """absl wraps help at 80 columns; compare with whitespace collapsed."""
    return " ".join(text.split())


@pytest.fixture(scope="module", params=["--helpfull", "--help"])
def run_help(request) -> str:
    done = subprocess.run([sys.executable, "-m", "lcft_tf", "run", request.param], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stderr[-2000:]  # absl's help flags exit 1
    return done.stdout


def _run_flag_groups() -> list[FlagGroup]:
    return [*cli._experiment_groups().values(), *cli._data_groups().values()]


def test_run_help_shows_the_field_help_and_no_tensorflow_flags(run_help):
    text = _flat(run_help)
    fleet_lr = next(f for f in dataclasses.fields(FleetConfig) if f.name == "learning_rate").metadata["help"]
    assert f"--device_lr: {_flat(fleet_lr)} (default: '0.01')" in text
    assert "lcft_tf.fleet.config.FleetConfig:" in run_help  # grouped by config
    for name in FOREIGN:
        assert name not in run_help


def test_run_help_lists_every_generated_flag_with_its_help_and_default(run_help):
    text = _flat(run_help)
    for group in cli._experiment_groups().values():
        assert f"{group.label}:" in run_help
        for f in group.fields():
            boolean = "[no]" if f.kind is bool else ""
            assert f"--{boolean}{f.flag}: {_flat(f.help)}" in text, f.flag
            if f.default is not None and not isinstance(f.kind, tuple):
                default = str(f.default).lower() if f.kind is bool else repr(f.default) if f.kind is float else f.default
                assert f"(default: '{default}')" in text.split(f"--{boolean}{f.flag}: ", 1)[1][:400], f.flag
    for dataset, names in {"movielens": ["movielens_use_genome", "min_train"], "amazon": ["amazon_category"]}.items():
        for name in names:
            assert f"--{name}:" in run_help or f"--[no]{name}:" in run_help, (dataset, name)


@pytest.mark.parametrize("group", _run_flag_groups(), ids=lambda g: g.config.__name__)
def test_every_run_flag_has_help_on_its_field(group):
    exposed = {f.field for f in group.fields()}
    assert exposed
    for field in dataclasses.fields(group.config):
        if field.name in exposed:
            assert str(field.metadata.get("help", "")).strip(), f"{group.config.__name__}.{field.name} has no help"


@pytest.mark.parametrize("command", ["benchmark", "bundle"])
def test_every_benchmark_and_bundle_flag_has_help_on_its_field(command):
    groups = cli._benchmark_groups() if command == "benchmark" else cli._bundle_groups()
    for group in groups.values():
        names = {f.field for f in group.fields()}
        missing = [f.name for f in dataclasses.fields(group.config)
                   if f.name in names and not f.metadata.get("help")]
        assert not missing, (group.config.__name__, missing)


def test_flag_group_reads_the_field_help_and_falls_back_to_the_field_name():
    @dataclasses.dataclass(frozen=True)
    class Toy:
        rate: float = dataclasses.field(default=0.5, metadata={"help": "a rate, per second"})
        sizes: tuple[int, ...] = (1, 2)
        name: str | None = None

    flag_values = flags.FlagValues()
    FlagGroup(Toy, prefix="toy_").define(flag_values)
    assert flag_values["toy_rate"].help == "a rate, per second"
    assert flag_values["toy_sizes"].help == "Toy.sizes"
    assert flag_values["toy_sizes"].default == ["1", "2"] and flag_values["toy_name"].default is None
    assert set(flag_values.flags_by_module_dict()) == {FlagGroup(Toy).label}
    flag_values(["prog", "--toy_sizes=3,4"])
    assert FlagGroup(Toy, prefix="toy_").build(flag_values) == Toy(0.5, (3, 4), None)


def test_define_flag_is_the_one_type_switch():
    flag_values = flags.FlagValues()
    for name, kind, default in [("b", bool, True), ("i", int, 3), ("f", float, 0.1), ("s", str, "x"),
                                ("l", (float,), (0.1, 2.0))]:
        define_flag(flag_values, name, kind, default, f"help of {name}", "toy")
    flag_values(["prog", "--nob", "--i=4", "--f=1e-3", "--s=y", "--l=0.5"])
    assert (flag_values.b, flag_values.i, flag_values.f, flag_values.s, flag_values.l) == (False, 4, 1e-3, "y", ["0.5"])
    assert flag_values["l"].default == ["0.1", "2.0"]
