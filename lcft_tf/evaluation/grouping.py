"""User groups of the report: local-CTR drift, negative-sampling ratio
(paper Fig. 2; docs/evaluation.md "User groups") and local sample count
(Fig. 4; docs/evaluation.md "Groups by local samples").

A group index is an int64 per user; -1 means the user is in no group.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

# Bucket edges of the drift |w_i - w_g| (CTR units); docs/evaluation.md "User groups".
DRIFT_EDGES = (0.0, 0.05, 0.1, 0.2, 0.3, 1.0)
_RATIO_MATCH = 1e-9  # a train local CTR must equal 1 / (1 + r) this closely
_MAX_VALUE_GROUPS = 50  # most distinct local CTR values read as negative ratios
# Users grouped by their number of local (train) samples: where CoDA's
# augmentation should matter most (docs/coda.md). Right edges exclusive.
LOCAL_SAMPLE_EDGES = (0, 5, 10, 20, 50, 100, 200)


def right_open_index(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index j of the bucket ``[edges[j], edges[j+1])`` holding each value
    (int64, same shape as ``values``): -1 below ``edges[0]``, ``len(edges) - 1``
    at or above the last edge. ``edges`` must increase (not checked here)."""
    return np.searchsorted(edges, values, side="right") - 1


def local_sample_groups(num_train: np.ndarray, edges: Sequence[int] = LOCAL_SAMPLE_EDGES):
    """Group every user by their number of local (train) samples.

    ``num_train``: int ``[users]``, >= 0. ``edges``: increasing ints from 0;
    group j is ``[edges[j], edges[j+1])``, the last one open-ended
    (docs/evaluation.md "Groups by local samples").

    Returns ``(group, groups)``: ``group`` int64 ``[users]`` in
    ``0..len(edges) - 1``; ``groups`` one dict per group with ``label``
    (e.g. ``"5–9"``, ``"≥ 200"``) and ``local_samples`` ``[lo, hi]`` (hi None
    for the last). Raises ``ValueError`` if ``edges`` is empty, does not
    start at 0 or does not increase.
    """
    edges = np.asarray(edges, dtype=np.int64)
    if len(edges) < 1 or edges[0] != 0 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"local sample edges must start at 0 and increase, got {list(edges)}")
    group = right_open_index(edges, np.asarray(num_train))
    groups = [{"label": f"{lo}–{hi - 1}" if hi is not None else f"≥ {lo}", "local_samples": [int(lo), None if hi is None else int(hi)]}
              for lo, hi in zip(edges, [*edges[1:].tolist(), None])]
    return group, groups


@dataclasses.dataclass(frozen=True)
class Grouping:
    """How users are grouped for Fig. 2 and the group tables
    (docs/evaluation.md "User groups").

    ``drift``: buckets of ``|w_i - w_g|`` with ``drift_edges`` (the last
    bucket includes its upper edge). ``negative_ratio``: one group per
    negative-sampling ratio r, read from the train local CTR
    ``w_i = 1 / (1 + r)``; ``ratios`` None groups by the distinct local CTR
    values instead. Users without a local CTR (no train samples) are in no
    group and counted apart.

    Raises ``ValueError`` on construction for another ``kind``, fewer than
    two or non-increasing, non-finite or negative ``drift_edges``, or
    ``ratios`` that are empty, repeated, non-finite or negative.
    """

    kind: str = "drift"
    drift_edges: tuple[float, ...] = DRIFT_EDGES
    ratios: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("drift", "negative_ratio"):
            raise ValueError(f"grouping kind must be 'drift' or 'negative_ratio', got {self.kind!r}")
        edges = np.asarray(self.drift_edges, dtype=float)
        if len(edges) < 2 or not np.all(np.isfinite(edges)) or edges[0] < 0 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"drift_edges must be >= 2 increasing finite values from >= 0, got {self.drift_edges}")
        if self.ratios is not None:
            r = np.asarray(self.ratios, dtype=float)
            if len(r) == 0 or not np.all(np.isfinite(r)) or np.any(r < 0) or len(np.unique(r)) != len(r):
                raise ValueError(f"negative ratios must be distinct finite values >= 0, got {self.ratios}")

    @classmethod
    def from_info(cls, info: Mapping[str, Any], drift_edges: Sequence[float] = DRIFT_EDGES) -> "Grouping":
        """The grouping a dataset asks for in its ``info``.

        ``info["local_ctr_groups"]``: ``"drift"`` (also when absent) or
        ``"negative_ratio"``, with the ratios from ``info["negative_ratios"]``
        (None when absent: group by distinct local CTR values). Raises
        ``ValueError`` as the constructor does (e.g. an unknown kind).
        """
        kind = info.get("local_ctr_groups") or "drift"
        ratios = info.get("negative_ratios")
        return cls(kind, tuple(drift_edges), tuple(ratios) if kind == "negative_ratio" and ratios else None)

    def to_json(self) -> dict[str, Any]:
        """``summary["grouping"]``: the kind and its edges or ratios (JSON-ready)."""
        if self.kind == "drift":
            return {"kind": "drift", "drift_edges": list(self.drift_edges)}
        return {"kind": "negative_ratio", "ratios": None if self.ratios is None else list(self.ratios)}

    def assign(self, local_ctr: np.ndarray, global_ctr: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Group index of every user and the groups.

        ``local_ctr``: float ``[users]``, train local CTR w_i in [0, 1], NaN
        for users without train samples; ``global_ctr``: w_g in [0, 1].

        Returns ``(group, groups)``: ``group`` int64 ``[users]`` (-1: no
        local CTR); ``groups`` one dict per group: drift ``{"label",
        "drift": [lo, hi]}`` (each bucket ``[lo, hi)``, the last includes
        ``hi``), negative ratio ``{"label", "negative_ratio": r, "local_ctr":
        1/(1+r)}`` in ascending r.

        Raises ``ValueError`` if a local CTR is outside [0, 1], a drift is
        outside the edges, a user's local CTR is 1/(1+r) (within 1e-9) for no
        ratio r, or (without ratios) there are more than 50 distinct values.
        """
        local_ctr = np.asarray(local_ctr, dtype=np.float64)
        known = np.isfinite(local_ctr)
        if np.any((local_ctr[known] < 0) | (local_ctr[known] > 1)):
            raise ValueError("local CTR values must lie in [0, 1]")
        group = np.full(len(local_ctr), -1, np.int64)
        if self.kind == "drift":
            group[known], groups = self._by_drift(local_ctr[known], global_ctr)
        else:
            group[known], groups = self._by_ratio(local_ctr[known])
        return group, groups

    def _by_drift(self, local_ctr: np.ndarray, global_ctr: float) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Bucket of each finite local CTR by its drift |w_i - w_g|."""
        edges = np.asarray(self.drift_edges, dtype=float)
        drift = np.abs(local_ctr - global_ctr)
        if np.any((drift < edges[0]) | (drift > edges[-1])):
            raise ValueError(f"local CTR drift outside the drift edges [{edges[0]}, {edges[-1]}]")
        index = np.minimum(right_open_index(edges, drift), len(edges) - 2)  # the top edge belongs to the last bucket
        groups = [
            {"label": f"{lo:.2f}–{hi:.2f}", "drift": [float(lo), float(hi)]} for lo, hi in zip(edges[:-1], edges[1:])
        ]
        return index, groups

    def _by_ratio(self, local_ctr: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Negative ratio r of each finite local CTR, read from w_i = 1/(1+r)."""
        if self.ratios is not None:
            ratios = np.sort(np.asarray(self.ratios, dtype=float))
            targets = 1.0 / (1.0 + ratios)
        else:
            targets = np.unique(np.round(local_ctr, 12))[::-1]  # descending CTR = ascending ratio
            if len(targets) > _MAX_VALUE_GROUPS:
                raise ValueError(
                    f"{len(targets)} distinct local CTR values: not discrete negative ratios; group by drift instead"
                )
            with np.errstate(divide="ignore"):
                ratios = 1.0 / targets - 1.0
        nearest = np.abs(local_ctr[:, None] - targets[None, :]).argmin(axis=1)
        off = np.abs(local_ctr - targets[nearest]) > _RATIO_MATCH
        if np.any(off):
            raise ValueError(
                f"{int(off.sum())} users have a local CTR that is 1/(1+r) for no negative ratio r in {list(ratios)}"
            )
        groups = [
            {"label": f"r={r:g} (w_i={w:.3f})", "negative_ratio": float(r), "local_ctr": float(w)}
            for r, w in zip(ratios, targets)
        ]
        return nearest, groups
