"""Label correction for fine-tuning (LCFT), docs/loss_and_correction.md.

A device whose local click rate ``w_i`` differs from the global one ``w_g``
trains on corrected labels: positives get ``alpha``, negatives ``beta``,
chosen so that ``w_i * alpha + (1 - w_i) * beta == w_g``.

Defined edge cases (each tested):

* ``w_i == w_g``: every method returns ``(1, 0)`` — the raw labels.
* ``w_i == 0`` / ``w_i == 1`` (one class only): soft1 gives ``(1, w_g)`` /
  ``(w_g, 0)``. Soft2's own formula divides by zero there (it would scale the
  missing class), so soft2 falls back to soft1's pair, the only finite pair
  of soft-label form that still meets the equation.
* A user with no local samples has no ``w_i``: :func:`local_ctr` raises,
  :func:`correct_labels` returns an empty array (there is nothing to train).
* ``w`` outside ``[0, 1]`` or NaN: ``ValueError`` naming the value.
* Hard: a table of CTR intervals -> ``(alpha, beta)`` grid-searched in the
  cloud; the equation need not hold there.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from lcft_tf.checks import in_unit_interval

CORRECTIONS = ("none", "soft1", "soft2", "hard")
# Method ids of the in-model ``correct`` signature (same order as CORRECTIONS).
CORRECTION_IDS = {name: i for i, name in enumerate(CORRECTIONS)}


def local_ctr(labels: Sequence[float] | np.ndarray) -> float:
    """The local click rate ``w_i``: the share of positive raw labels."""
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if labels.size == 0:
        raise ValueError("local CTR is undefined for a user with no local samples")
    if not np.all((labels == 0) | (labels == 1)):
        bad = labels[(labels != 0) & (labels != 1)][0]
        raise ValueError(f"raw labels must be 0 or 1, got {bad!r}")
    return float(labels.mean())


def soft1(local: float, global_: float) -> tuple[float, float]:
    """Soft1: scale positives down when ``w_i > w_g``, lift negatives otherwise."""
    w_i, w_g = in_unit_interval(local, "local CTR"), in_unit_interval(global_, "global CTR")
    if w_i > w_g:
        return w_g / w_i, 0.0
    if w_i == w_g:
        return 1.0, 0.0
    return 1.0, (w_g - w_i) / (1.0 - w_i)


def soft2(local: float, global_: float) -> tuple[float, float]:
    """Soft2: the mirror of soft1 (``alpha > 1`` or ``beta < 0`` possible).

    Falls back to soft1 for one-class users (``w_i`` in {0, 1}), see module doc.
    """
    w_i, w_g = in_unit_interval(local, "local CTR"), in_unit_interval(global_, "global CTR")
    if w_i in (0.0, 1.0) or w_i == w_g:
        return soft1(w_i, w_g)
    if w_i > w_g:
        return 1.0, (w_g - w_i) / (1.0 - w_i)
    return w_g / w_i, 0.0


@dataclasses.dataclass(frozen=True)
class HardCorrectionTable:
    """Local-CTR intervals -> ``(alpha, beta)``, found by the cloud's grid search.

    ``edges`` are the ``k - 1`` interior boundaries (strictly increasing, in
    (0, 1)) of ``k`` intervals; interval ``j`` is ``[edges[j-1], edges[j])``
    (the last one includes 1). ``alphas`` / ``betas`` hold one value per
    interval. Shipped inside the .tflite so a device never reveals ``w_i``.
    """

    edges: tuple[float, ...]
    alphas: tuple[float, ...]
    betas: tuple[float, ...]

    def __post_init__(self) -> None:
        for field in ("edges", "alphas", "betas"):
            object.__setattr__(self, field, tuple(float(v) for v in getattr(self, field)))
        if len(self.alphas) != len(self.edges) + 1 or len(self.betas) != len(self.alphas):
            raise ValueError(
                f"a table with {len(self.edges)} edges needs {len(self.edges) + 1} alphas and betas, "
                f"got {len(self.alphas)} and {len(self.betas)}"
            )
        if any(not (0.0 < e < 1.0) for e in self.edges) or any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"edges must increase strictly inside (0, 1), got {list(self.edges)}")
        if not all(math.isfinite(v) for v in self.alphas + self.betas):
            raise ValueError("alphas and betas must be finite")

    @classmethod
    def identity(cls, edges: Sequence[float] = ()) -> "HardCorrectionTable":
        """A table that leaves labels unchanged (alpha 1, beta 0 everywhere)."""
        return cls(tuple(edges), (1.0,) * (len(edges) + 1), (0.0,) * (len(edges) + 1))

    def interval(self, local: float) -> int:
        """The interval of ``local`` (raises ``ValueError`` outside [0, 1])."""
        return int(interval_of(self.edges, in_unit_interval(local, "local CTR")))

    def lookup(self, local: float) -> tuple[float, float]:
        """``(alpha, beta)`` of the interval of ``local``; raises
        ``ValueError`` outside [0, 1]."""
        j = self.interval(local)
        return self.alphas[j], self.betas[j]

    def to_json(self) -> dict[str, Any]:
        """``{"edges", "alphas", "betas"}`` as lists of floats."""
        return {"edges": list(self.edges), "alphas": list(self.alphas), "betas": list(self.betas)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> "HardCorrectionTable":
        """The table from :meth:`to_json`'s dict or its JSON text; raises
        ``ValueError`` for a missing key or an invalid table."""
        if isinstance(data, str):
            data = json.loads(data)
        try:
            return cls(tuple(data["edges"]), tuple(data["alphas"]), tuple(data["betas"]))
        except KeyError as err:
            raise ValueError(f"hard correction table is missing {err}") from None


def interval_of(edges: Sequence[float], local: float | np.ndarray) -> np.ndarray:
    """The hard-table interval ``j`` of each local CTR: ``edges[j-1] <= w <
    edges[j]`` (intervals are closed on the left; the in-model ``correct``
    counts ``w >= edge`` the same way). NaN is not checked here."""
    return np.searchsorted(np.asarray(edges, np.float64), local, side="right")


def correction_pair(
    method: str, local: float, global_: float, table: HardCorrectionTable | None = None
) -> tuple[float, float]:
    """``(alpha, beta)`` for a user with local CTR ``local``."""
    if method == "none":
        in_unit_interval(local, "local CTR")
        return 1.0, 0.0
    if method == "soft1":
        return soft1(local, global_)
    if method == "soft2":
        return soft2(local, global_)
    if method == "hard":
        if table is None:
            raise ValueError("method 'hard' needs a HardCorrectionTable")
        return table.lookup(local)
    raise ValueError(f"unknown correction method {method!r}; choose from {CORRECTIONS}")


def correct_labels(
    labels: Sequence[float] | np.ndarray,
    method: str,
    global_ctr: float,
    table: HardCorrectionTable | None = None,
) -> np.ndarray:
    """Replace a user's raw 0/1 labels by ``alpha`` / ``beta`` (float32).

    ``w_i`` is computed from these labels, i.e. from all of the user's
    local training data.
    """
    labels = np.asarray(labels)
    if method not in CORRECTIONS:
        raise ValueError(f"unknown correction method {method!r}; choose from {CORRECTIONS}")
    if labels.size == 0:
        return np.zeros(labels.shape, np.float32)
    alpha, beta = correction_pair(method, local_ctr(labels), global_ctr, table)
    return np.where(labels == 1, alpha, beta).astype(np.float32)
