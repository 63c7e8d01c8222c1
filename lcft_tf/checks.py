"""Checks of scalar settings, each rule written once (configs, export, devices, correction)."""

from __future__ import annotations

import math
import numbers

import numpy as np


def learning_rate(value, name: str = "learning_rate") -> float:
    """``value`` as a float that is finite and >= 0 *in float32*, the dtype
    the ``train`` signature receives (1e39 is finite as a float64 but inf as
    a float32, and would turn every weight into NaN). A bool or a string is
    refused too (``"0.1"`` or ``True`` are no learning rate)."""
    try:
        if isinstance(value, (bool, np.bool_, str, bytes)):
            raise TypeError
        as64 = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    with np.errstate(over="ignore"):
        as32 = np.float32(as64)
    if not (math.isfinite(as64) and np.isfinite(as32)) or as64 < 0:
        raise ValueError(f"{name} must be finite as a float32 and >= 0, got {value!r}")
    return as64


def in_unit_interval(value, name: str) -> float:
    """``value`` as a float in [0, 1] (a click rate, a share, a probability);
    raises ``ValueError`` naming ``name`` otherwise, NaN included."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:  # also false for NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return value


def positive(name: str, *values: int | float) -> None:
    """Raise ``ValueError`` naming ``name`` unless at least one value is
    given and every value is >= 1 (counts, sizes, repeats: ints or floats)."""
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{name} must be >= 1, got {list(values)}")


# Seeds reach numpy's legacy seeding (``keras.utils.set_random_seed``), which
# takes integers in [0, 2**32 - 1]; a negative one fails only inside a stage.
MAX_SEED = 2**32 - 1
# Ids are int32 in every feature and signature; the last one is kept free.
MAX_ID = 2**31 - 2


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    if low is None:
        return f"{'<' if high_open else '<='} {high}"
    return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def integer(value, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` if it is an integer (not a bool, not a float such as 5.0) in
    ``[low, high]`` (either end None: unbounded); raises ``ValueError``
    naming ``name`` and the value otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = " and ".join(b for b in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "") if b)
        raise ValueError(f"{name} must be {bounds} (an integer), got {value!r}")
    return int(value)


def number(value, name: str, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, float32: bool = False) -> float:
    """``value`` as a float if it is a real number (not a bool or a string),
    finite (NaN and inf are refused; with ``float32`` also finite as a
    float32, the dtype a ``.tflite`` signature or table holds it in, and
    then compared as that float32) and inside ``low``..``high`` (None:
    unbounded; ``*_open``: that end excluded); raises ``ValueError`` naming
    ``name`` and the value otherwise."""
    rule = "a finite number" + (" (as a float32)" if float32 else "")
    bounds = _range_text(low, high, low_open, high_open) if (low, high) != (None, None) else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {rule}{' ' + bounds if bounds else ''}, got {value!r}")
    as_float = float(value)
    if float32:
        with np.errstate(over="ignore"):
            as_float = float(np.float32(as_float)) if math.isfinite(as_float) else as_float
    ok = math.isfinite(as_float)
    if ok and low is not None:
        ok = as_float > low if low_open else as_float >= low
    if ok and high is not None:
        ok = as_float < high if high_open else as_float <= high
    if not ok:
        raise ValueError(f"{name} must be {rule}{' ' + bounds if bounds else ''}, got {value!r}")
    return float(value)


def grid(values, name: str, low: float | None = None, high: float | None = None, *, float32: bool = False
         ) -> tuple[float, ...]:
    """``values`` as a tuple of floats: a non-empty sequence (not a string)
    of numbers each passing :func:`number` with the same bounds; raises
    ``ValueError`` naming ``name`` and the values otherwise."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (tuple, list, np.ndarray)) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list of numbers, got {values!r}")
    for v in values:
        try:
            number(v, name, low, high, float32=float32)
        except ValueError as err:
            raise ValueError(f"{err} (in {name}={list(values)!r})") from None
    return tuple(float(v) for v in values)


def flag(value, name: str) -> bool:
    """``value`` if it is a bool (``"false"`` from a dict is truthy, so a
    string is refused); raises ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def choice(value, name: str, choices) -> str:
    """``value`` if it is one of ``choices``; raises ``ValueError`` naming
    ``name``, the value and the choices otherwise."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {name} {value!r}: {name} must be one of {list(choices)}")
    return value


def seed(value, name: str = "seed") -> int:
    """``value`` if it is an integer seed in [0, :data:`MAX_SEED`]."""
    return integer(value, name, 0, MAX_SEED)
