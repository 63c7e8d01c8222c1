"""absl flags generated from the config dataclasses, so the command line and
the configs never drift apart: every flaggable field of a config is a flag,
its default is the dataclass default, its help is the field's
``metadata["help"]``, and the dataclass's own ``__post_init__`` validates
what the user typed.

A field is flaggable if its type is ``bool``, ``int``, ``float``, ``str``,
a ``Literal`` of one of those, an ``Optional`` of those, or a ``tuple`` of
``int`` / ``float`` / ``str`` (a comma-separated list). Other fields (dicts,
tables, nested configs) are set by the code that builds the config.

A command's flags are defined on a fresh :class:`absl.flags.FlagValues`, one
help group (absl "module") per config, so ``--help`` / ``--helpfull`` /
``--helpxml`` (:func:`help_flags`) list only them, not the ~30 flags
TensorFlow and absl register on the global ``FLAGS``
(absl flags guide: https://abseil.io/docs/python/guides/flags).
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from typing import Any, Callable, Mapping, NamedTuple, Sequence, TextIO

from absl import flags

_SCALARS = (bool, int, float, str)


class FlagField(NamedTuple):
    """One flaggable config field: its name, its flag's name, the flag kind
    (:func:`flag_type`), the dataclass default and its help text."""

    field: str
    flag: str
    kind: Any
    default: Any
    help: str


@dataclasses.dataclass(frozen=True)
class FlagGroup:
    """The flags of one config dataclass: ``prefix + field`` unless renamed
    in ``rename``; fields in ``exclude`` get no flag. Each flag's help is the
    field's ``metadata["help"]`` (``<Config>.<field>`` where a config has
    none yet)."""

    config: type
    prefix: str = ""
    rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exclude: Sequence[str] = ()

    @property
    def label(self) -> str:
        """The help group the flags are listed under: ``module.Config``."""
        return f"{self.config.__module__}.{self.config.__qualname__}"

    def fields(self) -> list[FlagField]:
        """Every flaggable, not excluded ``init`` field, in definition order.
        Mutable defaults come from their ``default_factory``."""
        hints = typing.get_type_hints(self.config)
        out = []
        for f in dataclasses.fields(self.config):
            if f.name in self.exclude or not f.init:
                continue
            kind = flag_type(hints[f.name])
            if kind is None:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            text = f.metadata.get("help") or f"{self.config.__name__}.{f.name}"
            out.append(FlagField(f.name, self.rename.get(f.name, self.prefix + f.name), kind, default, text))
        return out

    def define(self, flag_values: flags.FlagValues) -> None:
        """Define one flag per :meth:`fields` entry on ``flag_values``, under
        :attr:`label`; raises ``absl.flags.DuplicateFlagError`` for a name
        that is already defined there."""
        for f in self.fields():
            define_flag(flag_values, f.flag, f.kind, f.default, f.help, self.label)

    def values(self, flag_values: flags.FlagValues) -> dict[str, Any]:
        """Field values from the parsed flags (lists converted back to tuples);
        raises ``ValueError`` naming the flag for a list item of the wrong type."""
        out = {}
        for f in self.fields():
            value = flag_values[f.flag].value
            if isinstance(f.kind, tuple) and value is not None:
                try:
                    value = tuple(f.kind[0](v) for v in value)
                except ValueError:
                    raise ValueError(f"--{f.flag} takes {f.kind[0].__name__} values, got {','.join(value)}") from None
            out[f.field] = value
        return out

    def build(self, flag_values: flags.FlagValues, **overrides: Any):
        """The config from the flags and ``overrides`` (its ``__post_init__``
        validates and raises ``ValueError`` for a bad value)."""
        return self.config(**{**self.values(flag_values), **overrides})


def flag_type(hint: Any) -> Any:
    """The flag kind of a type hint: ``bool/int/float/str``, ``(scalar,)``
    for a tuple of one scalar type, else None (not flaggable). ``Optional``
    unwraps; a ``Literal`` takes its first value's type."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return flag_type(args[0]) if len(args) == 1 else None
    if origin is tuple:
        args = typing.get_args(hint)
        if args and args[0] in _SCALARS and all(a in (args[0], Ellipsis) for a in args):
            return (args[0],)
        return None
    if origin is typing.Literal:
        values = typing.get_args(hint)
        return type(values[0]) if values and type(values[0]) in _SCALARS else None
    return hint if hint in _SCALARS else None


def define_flag(flag_values: flags.FlagValues, name: str, kind: Any, default: Any, text: str,
                module_name: str) -> None:
    """Define flag ``--name`` of ``kind`` (:func:`flag_type`) on
    ``flag_values``, listed under ``module_name`` in the help. A tuple kind
    is a comma-separated list flag (its default items written with ``repr``
    for floats, so ``0.1`` stays ``0.1``). Raises
    ``absl.flags.DuplicateFlagError`` for a name already defined."""
    where = dict(flag_values=flag_values, module_name=module_name)
    if isinstance(kind, tuple):
        flags.DEFINE_list(name, None if default is None else [_text(v) for v in default], text, **where)
    elif kind is bool:
        flags.DEFINE_bool(name, default, text, **where)
    elif kind is int:
        flags.DEFINE_integer(name, default, text, **where)
    elif kind is float:
        flags.DEFINE_float(name, default, text, **where)
    else:
        flags.DEFINE_string(name, default, text, **where)


def command_help(doc: str, flag_values: flags.FlagValues) -> str:
    """``doc`` and then every flag of ``flag_values``, grouped by the module
    name it was defined under, in definition order (absl's layout: name,
    help, ``(default: ...)``, syntax)."""
    groups = [flag_values.module_help(module) for module in flag_values.flags_by_module_dict()]
    return (f"{doc.rstrip()}\n\nflags (absl's own, such as --flagfile and --verbosity, are accepted too):\n"
            + "\n".join(g for g in groups if g) + "\n")


class _HelpFlag(flags.BooleanFlag):
    """A boolean flag that, when true, writes ``write(stdout)`` and exits
    with status 1 (as absl's help flags do). ``allow_override`` lets it
    replace absl's flag of the same name on the global ``FLAGS``."""

    def __init__(self, name: str, text: str, write: Callable[[TextIO], None], short_name: str | None = None):
        super().__init__(name, False, text, short_name=short_name, allow_override=True)
        self._write = write

    def parse(self, argument: Any) -> None:
        """Parse like a boolean flag; when true, write the help and exit 1."""
        super().parse(argument)
        if self.value:
            self._write(sys.stdout)
            sys.stdout.flush()
            sys.exit(1)


HELP_MODULE = "help"


def help_flags(doc: str, flag_values: flags.FlagValues) -> None:
    """Define ``--help`` (``-?``), ``--helpshort``, ``--helpfull`` and
    ``--helpxml`` on ``flag_values``: each lists only ``flag_values``'s flags
    (:func:`command_help`, or absl's XML). Appended to the global ``FLAGS``
    after ``absl.app.define_help_flags()``, they replace absl's, whose help
    lists every flag TensorFlow registers too."""
    def text(out: TextIO) -> None:
        out.write(command_help(doc, flag_values))

    for flag in (_HelpFlag("help", "show this help", text, short_name="?"),
                 _HelpFlag("helpshort", "show this help", text),
                 _HelpFlag("helpfull", "show this help", text),
                 _HelpFlag("helpxml", "like --helpfull, in XML", flag_values.write_help_in_xml_format)):
        flags.DEFINE_flag(flag, flag_values, module_name=HELP_MODULE)


def _text(value: Any) -> str:
    """A list item's default as text: ``repr`` for floats, ``str`` else."""
    return repr(value) if isinstance(value, float) else str(value)
