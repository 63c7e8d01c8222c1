"""absl flags generated from the config dataclasses, so the command line and
the configs never drift apart: every flaggable field of a config is a flag,
its default is the dataclass default, and the dataclass's own
``__post_init__`` validates what the user typed.

A field is flaggable if its type is ``bool``, ``int``, ``float``, ``str``,
an ``Optional`` of those, or a ``tuple`` of ``int`` / ``float`` / ``str``
(a comma-separated list). Other fields (dicts, tables, nested configs) are
set by the code that builds the config.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping, Sequence

from absl import flags

_SCALARS = (bool, int, float, str)


@dataclasses.dataclass(frozen=True)
class FlagGroup:
    """The flags of one config dataclass: ``prefix + field`` unless renamed."""

    config: type
    prefix: str = ""
    rename: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exclude: Sequence[str] = ()
    help: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def fields(self) -> list[tuple[str, str, Any, Any]]:
        """``(field, flag name, type, default)`` of every flaggable field."""
        hints = typing.get_type_hints(self.config)
        out = []
        for f in dataclasses.fields(self.config):
            if f.name in self.exclude or not f.init:
                continue
            kind = _flag_type(hints[f.name])
            if kind is None:
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            out.append((f.name, self.rename.get(f.name, self.prefix + f.name), kind, default))
        return out

    def define(self, flag_values: flags.FlagValues) -> None:
        for field, name, kind, default in self.fields():
            text = self.help.get(field) or f"{self.config.__name__}.{field}"
            if isinstance(kind, tuple):  # a tuple of one scalar type
                flags.DEFINE_list(name, None if default is None else [_text(v) for v in default], text,
                                  flag_values=flag_values)
            elif kind is bool:
                flags.DEFINE_bool(name, default, text, flag_values=flag_values)
            elif kind is int:
                flags.DEFINE_integer(name, default, text, flag_values=flag_values)
            elif kind is float:
                flags.DEFINE_float(name, default, text, flag_values=flag_values)
            else:
                flags.DEFINE_string(name, default, text, flag_values=flag_values)

    def values(self, flag_values: flags.FlagValues) -> dict[str, Any]:
        """Field values from the parsed flags (lists converted back to tuples);
        raises ``ValueError`` naming the flag for a list item of the wrong type."""
        out = {}
        for field, name, kind, _ in self.fields():
            value = flag_values[name].value
            if isinstance(kind, tuple) and value is not None:
                try:
                    value = tuple(kind[0](v) for v in value)
                except ValueError:
                    raise ValueError(f"--{name} takes {kind[0].__name__} values, got {','.join(value)}") from None
            out[field] = value
        return out

    def build(self, flag_values: flags.FlagValues, **overrides: Any):
        """The config from the flags (its ``__post_init__`` validates)."""
        return self.config(**{**self.values(flag_values), **overrides})


def _flag_type(hint: Any) -> Any:
    """``bool/int/float/str``, ``(scalar,)`` for a tuple of scalars, else None."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _flag_type(args[0]) if len(args) == 1 else None
    if origin is tuple:
        args = typing.get_args(hint)
        if args and args[0] in _SCALARS and all(a in (args[0], Ellipsis) for a in args):
            return (args[0],)
        return None
    if origin is typing.Literal:
        values = typing.get_args(hint)
        return type(values[0]) if values and type(values[0]) in _SCALARS else None
    return hint if hint in _SCALARS else None


def _text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)
