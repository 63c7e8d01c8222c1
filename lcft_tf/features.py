"""One feature schema shared by data pipelines, models and the .tflite export.

Id convention (every categorical and sequence feature):

* ids ``1 .. vocab_size - 1`` are real values, ``0`` is reserved for padding /
  unknown (``padding_id`` of sequences);
* anything outside ``[0, vocab_size)`` (negative, too large) is mapped inside
  the model to an extra out-of-vocabulary row ``vocab_size``, so a device can
  never crash the interpreter with an out-of-range gather.

Ids are ``int32`` on the wire (TFLite's native index type); dense features
are ``float32``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

import numpy as np

ID_DTYPE = np.int32
FLOAT_DTYPE = np.float32


@dataclasses.dataclass(frozen=True)
class SparseFeature:
    """A single categorical id per sample (user id, item id, category)."""

    name: str
    vocab_size: int
    embedding: str | None = None  # name of a shared embedding table; default: own

    @property
    def table(self) -> str:
        """The embedding table this feature reads: ``embedding``, else its own name."""
        return self.embedding or self.name


@dataclasses.dataclass(frozen=True)
class SequenceFeature:
    """A fixed-length list of ids per sample, padded with ``padding_id``.

    ``query`` names the sparse feature the sequence is compared against by
    attention models (e.g. the candidate item for a click history).
    """

    name: str
    vocab_size: int
    length: int
    embedding: str | None = None
    query: str | None = None
    padding_id: int = 0

    @property
    def table(self) -> str:
        """The embedding table this feature reads: ``embedding``, else its own name."""
        return self.embedding or self.name


@dataclasses.dataclass(frozen=True)
class DenseFeature:
    """A fixed-size float vector per sample (e.g. the 1,128-d tag genome)."""

    name: str
    dim: int


Feature = SparseFeature | SequenceFeature | DenseFeature
_KINDS = {"sparse": SparseFeature, "sequence": SequenceFeature, "dense": DenseFeature}


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The ordered list of model inputs; the order is the signature order."""

    features: tuple[Feature, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        # Per-name lookups, precomputed: validate() runs on every device call.
        object.__setattr__(self, "_by_name", {f.name: f for f in self.features})
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in {names}")
        reserved = {"label", "sample_weight", "learning_rate", "local_ctr", "method"}
        if reserved & set(names):
            raise ValueError(f"feature names {sorted(reserved & set(names))} are reserved")
        for f in self.features:
            if not f.name.isidentifier():
                raise ValueError(f"feature name {f.name!r} must be a Python identifier")
            if isinstance(f, (SparseFeature, SequenceFeature)) and f.vocab_size < 1:
                raise ValueError(f"{f.name}: vocab_size must be >= 1, got {f.vocab_size}")
            if isinstance(f, SequenceFeature) and f.length < 1:
                raise ValueError(f"{f.name}: length must be >= 1, got {f.length}")
            if isinstance(f, DenseFeature) and f.dim < 1:
                raise ValueError(f"{f.name}: dim must be >= 1, got {f.dim}")
        for table, sizes in self._table_sizes().items():
            if len(sizes) > 1:
                raise ValueError(f"embedding table {table!r} shared with vocab sizes {sorted(sizes)}")
        sparse_names = {f.name for f in self.sparse}
        for f in self.sequences:
            if f.query is not None and f.query not in sparse_names:
                raise ValueError(f"{f.name}: query {f.query!r} is not a sparse feature")

    def _table_sizes(self) -> dict[str, set[int]]:
        sizes: dict[str, set[int]] = {}
        for f in self.sparse + self.sequences:
            sizes.setdefault(f.table, set()).add(f.vocab_size)
        return sizes

    @property
    def sparse(self) -> tuple[SparseFeature, ...]:
        """The single-id features (int32 ``[B]``), in spec order."""
        return tuple(f for f in self.features if isinstance(f, SparseFeature))

    @property
    def sequences(self) -> tuple[SequenceFeature, ...]:
        """The id-list features (int32 ``[B, length]``), in spec order."""
        return tuple(f for f in self.features if isinstance(f, SequenceFeature))

    @property
    def dense(self) -> tuple[DenseFeature, ...]:
        """The dense-vector features (float32 ``[B, dim]``), in spec order."""
        return tuple(f for f in self.features if isinstance(f, DenseFeature))

    @property
    def names(self) -> tuple[str, ...]:
        """Every feature's name, in spec order."""
        return tuple(f.name for f in self.features)

    @property
    def tables(self) -> dict[str, int]:
        """Embedding table name -> vocabulary size (without the OOV row)."""
        return {t: next(iter(s)) for t, s in self._table_sizes().items()}

    def __getitem__(self, name: str) -> Feature:
        return self._by_name[name]

    def shape(self, name: str, batch: int | None = None) -> tuple[int | None, ...]:
        """Feature ``name``'s shape with ``batch`` rows: ``(B,)`` sparse,
        ``(B, length)`` sequence, ``(B, dim)`` dense; raises ``KeyError`` for
        an unknown name."""
        f = self[name]
        if isinstance(f, SequenceFeature):
            return (batch, f.length)
        if isinstance(f, DenseFeature):
            return (batch, f.dim)
        return (batch,)

    def dtype(self, name: str) -> np.dtype:
        """float32 for a dense feature, int32 for ids; raises ``KeyError`` for an unknown name."""
        return np.dtype(FLOAT_DTYPE if isinstance(self[name], DenseFeature) else ID_DTYPE)

    def validate(self, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check names, dtypes, shapes and finiteness; return int32/float32 arrays.

        Raises ``ValueError`` naming the offending feature; ids are only cast
        when the cast is exact.
        """
        if len(features) != len(self._by_name) or any(n not in features for n in self._by_name):
            missing = [n for n in self._by_name if n not in features]
            unknown = [n for n in features if n not in self._by_name]
            raise ValueError(f"feature names do not match the spec: missing {missing}, unknown {unknown}")
        out: dict[str, np.ndarray] = {}
        rows: int | None = None
        for name in self._by_name:
            value = np.asarray(features[name])
            want = self.shape(name)
            if value.ndim != len(want) or value.shape[1:] != want[1:]:
                raise ValueError(f"feature {name!r}: expected shape {_fmt(want)}, got {value.shape}")
            if rows is None:
                rows = value.shape[0]
            elif value.shape[0] != rows:
                raise ValueError(f"feature {name!r} has {value.shape[0]} rows, expected {rows}")
            out[name] = _cast(name, value, self.dtype(name))
        return out

    def to_json(self) -> dict[str, Any]:
        """``{"features": [{"kind": sparse | sequence | dense, <fields>}, ...]}``."""
        return {
            "features": [
                {"kind": kind, **dataclasses.asdict(f)}
                for f in self.features
                for kind, cls in _KINDS.items()
                if type(f) is cls
            ]
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> "FeatureSpec":
        """The spec from :meth:`to_json`'s dict or its JSON text; raises
        ``ValueError`` for an unknown kind (and the spec's own errors)."""
        if isinstance(data, str):
            data = json.loads(data)
        features = []
        for item in data["features"]:
            item = dict(item)
            kind = item.pop("kind", None)
            if kind not in _KINDS:
                raise ValueError(f"unknown feature kind {kind!r} in {item}")
            features.append(_KINDS[kind](**item))
        return cls(tuple(features))


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _cast(name: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == ID_DTYPE:
        if value.dtype == ID_DTYPE:
            return np.ascontiguousarray(value)
        if value.dtype.kind not in "iu":
            if value.dtype.kind == "f" and value.size and np.all(np.isfinite(value)) and np.all(value == np.round(value)):
                pass  # integral floats (e.g. from pandas) are accepted
            elif value.size:
                raise ValueError(f"feature {name!r}: ids must be integers, got dtype {value.dtype}")
        info = np.iinfo(ID_DTYPE)
        if value.size and (value.min() < info.min or value.max() > info.max):
            raise ValueError(f"feature {name!r}: ids overflow int32")
        return np.ascontiguousarray(value, dtype=ID_DTYPE)
    if value.dtype.kind not in "fiub":
        raise ValueError(f"feature {name!r}: expected numbers, got dtype {value.dtype}")
    value = np.ascontiguousarray(value, dtype=FLOAT_DTYPE)
    if not np.all(np.isfinite(value)):
        raise ValueError(f"feature {name!r} contains NaN or inf")
    return value
