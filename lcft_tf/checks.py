"""Checks of scalar settings, each rule written once (configs, export, devices, correction)."""

from __future__ import annotations

import math

import numpy as np


def learning_rate(value, name: str = "learning_rate") -> float:
    """``value`` as a float that is finite and >= 0 *in float32*, the dtype
    the ``train`` signature receives (1e39 is finite as a float64 but inf as
    a float32, and would turn every weight into NaN)."""
    try:
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
