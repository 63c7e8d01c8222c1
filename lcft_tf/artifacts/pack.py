"""Per-device packs: the numpy half of the submodel contract (docs/submodels.md).

A full-size training step reads and rewrites every row of every embedding
table, so at real catalogue sizes a phone holds a *submodel*
``<name>.sub.tflite`` (the same graph with tables of a fixed ``capacity`` of
rows, written by :func:`lcft_tf.cloud.submodel.export_submodel`) and a *pack*
cut for it from the global state: the rows of the ids in the device's samples
(every sequence position too), the OOV row, and all dense weights (and Adam
slots). The device remaps global ids to pack slots on the host before
``train`` / ``infer`` (:meth:`Pack.remap`), fine-tunes, and
:func:`sparse_update` turns the trained pack back into the changed rows of the
global tables plus the dense weights, which :func:`apply_update` merges into
the global state.

:func:`make_pack` cuts one device's pack; :class:`PackCutter` cuts a chunk of
devices' at once (the fleet's path), with the same arrays for each.

This module is numpy only: the cloud writes these layouts and the device and
fleet read them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np
from safetensors.numpy import save as safetensors_bytes

from lcft_tf._io import parse_safetensors
from lcft_tf.features import FeatureSpec


PACK_FORMAT = "lcft-pack-v1"
IDMAP_PREFIX = "idmap."  # pack tensor "idmap.<table>": global id of every slot (-1: empty)
EMPTY = -1


class PackCapacityError(ValueError):
    """A device uses more distinct ids of a table than the submodel holds."""


def table_rows(spec: FeatureSpec, capacity: int) -> dict[str, int]:
    """Rows (without the OOV row) of each table in the submodel: tables that
    fit are shipped whole (identity map), larger ones get ``capacity``."""
    return {t: min(v, capacity) for t, v in spec.tables.items()}


def submodel_spec(spec: FeatureSpec, capacity: int) -> FeatureSpec:
    """``spec`` with every table's vocabulary cut to its submodel rows."""
    rows = table_rows(spec, capacity)
    features = []
    for f in spec.features:
        if hasattr(f, "vocab_size"):
            f = dataclasses.replace(f, vocab_size=rows[f.table])
        features.append(f)
    return FeatureSpec(tuple(features))


def reserved_ids(spec: FeatureSpec) -> dict[str, list[int]]:
    """Ids that keep their own value as slot in every pack: 0 (padding /
    unknown, docs: lcft_tf/features.py) and each sequence's ``padding_id``
    inside the vocabulary, so the in-graph padding masks see the same ids."""
    out: dict[str, set[int]] = {t: {0} for t in spec.tables}
    for f in spec.sequences:
        if 0 <= f.padding_id < f.vocab_size:
            out[f.table].add(f.padding_id)
    return {t: sorted(ids) for t, ids in out.items()}



@dataclasses.dataclass(frozen=True)
class TableLayout:
    """One embedding table in the submodel: its global ``vocab_size``, its
    ``rows`` in the submodel (both without the OOV row), the state tensors
    that hold its rows (weights and Adam slots) and the ids every pack keeps
    at their own slot."""

    vocab_size: int
    rows: int
    state: tuple[str, ...]
    reserved_ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class SubmodelLayout:
    """What the submodel's metadata says about its tables."""

    capacity: int
    tables: dict[str, TableLayout]
    feature_tables: dict[str, str]  # feature name -> table, for id features
    full_sha256: str  # the full model this submodel, and every pack and update of it, belongs to
    spec: FeatureSpec | None = None  # the submodel's features: names, dtypes, shapes (ids are checked by it)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "SubmodelLayout":
        """The layout the submodel's metadata (``<name>.sub.json``) describes;
        raises ``ValueError`` for metadata without a submodel section."""
        sub = metadata.get("submodel")
        if not sub or "tables" not in sub:
            raise ValueError("the metadata describes no submodel (no submodel.tables)")
        spec = FeatureSpec.from_json(metadata["feature_spec"])
        tables = {
            t: TableLayout(int(d["vocab_size"]), int(d["rows"]), tuple(d["state"]), tuple(d["reserved_ids"]))
            for t, d in sub["tables"].items()
        }
        return cls(int(sub["capacity"]), tables, {f.name: f.table for f in spec.sparse + spec.sequences},
                   sub["full_model"]["tflite_sha256"], spec)

    @property
    def table_state(self) -> dict[str, str]:
        """State tensor name -> its table, for every table tensor."""
        return {n: t for t, layout in self.tables.items() for n in layout.state}


@dataclasses.dataclass
class Pack:
    """One device's slice of the global state: ``state`` is what the
    submodel's ``restore`` takes; ``id_maps[table][slot]`` is the global id
    in each slot (-1 empty)."""

    layout: SubmodelLayout
    state: dict[str, np.ndarray]
    id_maps: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        self._lookup = {}
        if set(self.id_maps) != set(self.layout.tables):
            raise ValueError(f"pack id maps {sorted(self.id_maps)} differ from the submodel's tables "
                             f"{sorted(self.layout.tables)}")
        for table, ids in self.id_maps.items():
            layout = self.layout.tables[table]
            if ids.shape != (layout.rows,):
                raise ValueError(f"id map of table {table!r}: shape {ids.shape}, the submodel has ({layout.rows},)")
            _check_id_map(table, ids, layout)
            used = np.flatnonzero(ids != EMPTY)
            order = np.argsort(ids[used], kind="stable")
            sorted_ids, slots = ids[used][order], used[order]
            if len(sorted_ids) and (sorted_ids[0] < 0 or sorted_ids[-1] >= layout.vocab_size
                                    or np.any(sorted_ids[1:] == sorted_ids[:-1])):
                raise ValueError(f"id map of table {table!r} holds ids outside [0, {layout.vocab_size}) or duplicates")
            self._lookup[table] = (sorted_ids, slots)

    def slots(self, table: str, ids: np.ndarray) -> np.ndarray:
        """Submodel ids for global ``ids`` of ``table`` (see docs/submodels.md):
        packed ids -> their slot, other in-vocabulary ids -> the OOV slot,
        ids outside the global vocabulary unchanged (the graph sends them to
        the OOV row, as the full model does)."""
        layout = self.layout.tables[table]
        ids = np.asarray(ids)
        sorted_ids, slots = self._lookup[table]
        inside = (ids >= 0) & (ids < layout.vocab_size)
        pos = np.minimum(np.searchsorted(sorted_ids, ids), max(len(sorted_ids) - 1, 0))
        hit = inside & (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(ids.shape, bool)
        out = np.where(inside, layout.rows, ids)
        return np.where(hit, slots[pos] if len(slots) else 0, out).astype(np.int32)

    def remap(self, features: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Features with every id replaced by its slot (dense features as is).
        The features are first checked as the full model checks them (names,
        shapes, ids cast to int32 only when exact), so an id the full model
        refuses (2**32 + 5, 7.9) is refused here too, with ``ValueError``."""
        if self.layout.spec is not None:
            features = self.layout.spec.validate(features)
        out = {}
        for name, value in features.items():
            table = self.layout.feature_tables.get(name)
            out[name] = value if table is None else self.slots(table, value)
        return out

    def global_rows(self, table: str) -> np.ndarray:
        """The global table row of every pack row (-1 empty; the last is OOV)."""
        return np.append(self.id_maps[table], self.layout.tables[table].vocab_size)

    # -- on disk: one safetensors file, state + "idmap.<table>" ---------------
    def to_bytes(self, state: Mapping[str, np.ndarray] | None = None) -> bytes:
        """The pack as safetensors (``state`` defaults to the packed state;
        pass the submodel's ``save()`` to ship the fine-tuned pack)."""
        tensors = {**(state if state is not None else self.state),
                   **{IDMAP_PREFIX + t: ids for t, ids in self.id_maps.items()}}
        meta = {"format": PACK_FORMAT, "full_model_sha256": self.layout.full_sha256,
                "capacity": str(self.layout.capacity)}
        return safetensors_bytes({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta)

    @classmethod
    def from_bytes(cls, layout: SubmodelLayout, data: bytes) -> "Pack":
        """A pack of :meth:`to_bytes` for ``layout``; raises ``ValueError`` for
        unreadable bytes, a pack cut from another export or capacity, id maps
        of other tables, or id maps that break the reserved slots."""
        meta, tensors = parse_safetensors(data, "pack")
        _check_origin("pack", meta.get("format"), meta.get("full_model_sha256"), meta.get("capacity"), layout)
        maps = {k[len(IDMAP_PREFIX):]: v for k, v in tensors.items() if k.startswith(IDMAP_PREFIX)}
        if set(maps) != set(layout.tables):
            raise ValueError(f"pack id maps {sorted(maps)} differ from the submodel's tables {sorted(layout.tables)}")
        state = {k: v for k, v in tensors.items() if not k.startswith(IDMAP_PREFIX)}
        return cls(layout, state, {t: v.astype(np.int64) for t, v in maps.items()})


def _check_id_map(table: str, ids: np.ndarray, layout: TableLayout) -> None:
    """An id map keeps every reserved id at its own slot, and a table shipped
    whole keeps the identity map; else predictions would silently read other
    rows. Raises ``ValueError``."""
    if layout.rows == layout.vocab_size and not np.array_equal(ids, np.arange(layout.rows)):
        raise ValueError(f"id map of table {table!r}: a table shipped whole must map every id to itself")
    for r in layout.reserved_ids:
        if ids[r] != r:
            raise ValueError(f"id map of table {table!r}: reserved id {r} must sit in slot {r}, found {int(ids[r])}")


def _check_origin(what: str, fmt, full_sha256, capacity, layout: SubmodelLayout) -> None:
    """A pack or update must come from this submodel's export and capacity."""
    if fmt != PACK_FORMAT:
        raise ValueError(f"{what} format {fmt!r}, this package reads {PACK_FORMAT!r}")
    if full_sha256 != layout.full_sha256:
        raise ValueError(f"{what} was cut from another export (full model sha256 {str(full_sha256)[:12]}…, "
                         f"this submodel's is {layout.full_sha256[:12]}…)")
    if str(capacity) != str(layout.capacity):
        raise ValueError(f"{what} has capacity {capacity}, this submodel {layout.capacity}")


def make_pack(layout: SubmodelLayout, global_state: Mapping[str, np.ndarray],
              *feature_sets: Mapping[str, np.ndarray]) -> Pack:
    """Cut the pack of the ids in ``feature_sets`` (e.g. a device's train and
    test features) from ``global_state`` (the full model's ``save()``).

    Raises :class:`PackCapacityError` when a table needs more rows than the
    submodel has; never drops a row."""
    used: dict[str, list[np.ndarray]] = {t: [] for t in layout.tables}
    for features in feature_sets:
        for name, table in layout.feature_tables.items():
            if name in features:
                used[table].append(np.asarray(features[name]).reshape(-1))
    id_maps = {}
    for table, t in layout.tables.items():
        if t.rows == t.vocab_size:  # the whole table fits: identity map
            id_maps[table] = np.arange(t.rows, dtype=np.int64)
            continue
        ids = np.unique(np.concatenate(used[table])) if used[table] else np.zeros(0, np.int64)
        keep = (ids >= 0) & (ids < t.vocab_size)  # others read the OOV row either way
        for r in t.reserved_ids:
            keep &= ids != r
        ids = ids[keep]
        if len(ids) + len(t.reserved_ids) > t.rows:
            raise PackCapacityError(
                f"table {table!r}: the device uses {len(ids) + len(t.reserved_ids)} rows, the submodel holds "
                f"{t.rows}; export with a larger submodel_capacity"
            )
        slot_ids = np.full(t.rows, EMPTY, np.int64)
        slot_ids[list(t.reserved_ids)] = t.reserved_ids
        free = np.flatnonzero(slot_ids == EMPTY)[: len(ids)]
        slot_ids[free] = ids
        id_maps[table] = slot_ids
    table_of = layout.table_state
    state = {}
    for name, value in global_state.items():
        table = table_of.get(name)
        if table is None:
            state[name] = value  # shared, not copied: restore copies it into the model
            continue
        rows = np.append(id_maps[table], layout.tables[table].vocab_size)  # last row: OOV
        if value.shape[0] != layout.tables[table].vocab_size + 1:
            raise ValueError(f"global state {name!r} has {value.shape[0]} rows, the table has "
                             f"{layout.tables[table].vocab_size} + 1")
        packed = np.zeros((len(rows), *value.shape[1:]), value.dtype)
        real = rows != EMPTY
        packed[real] = value[rows[real]]
        state[name] = packed
    return Pack(layout, state, id_maps)


class PackCutter:
    """Cuts the packs of many devices at once from one global state: the
    fleet's path (a chunk of users per call, so numpy's per-call overhead is
    paid per chunk, not per user). Gives the arrays :func:`make_pack` and
    :meth:`Pack.remap` give for each device alone, bit for bit (tested)."""

    def __init__(self, layout: SubmodelLayout, global_state: Mapping[str, np.ndarray]):
        """Raises ``ValueError`` when a table tensor of ``global_state`` does
        not have its table's ``vocab_size + 1`` rows."""
        self.layout = layout
        self.global_state = dict(global_state)
        table_of = layout.table_state
        for name, value in self.global_state.items():
            table = table_of.get(name)
            if table is not None and value.shape[0] != layout.tables[table].vocab_size + 1:
                raise ValueError(f"global state {name!r} has {value.shape[0]} rows, the table has "
                                 f"{layout.tables[table].vocab_size} + 1")
        # per packed table: its reserved ids and the slots left for the device's ids, ascending
        self._free = {t: np.setdiff1d(np.arange(lay.rows), lay.reserved_ids) for t, lay in layout.tables.items()
                      if lay.rows != lay.vocab_size}

    def cut(self, features: Mapping[str, np.ndarray], owner: np.ndarray, devices: int) -> "CutPacks":
        """The packs of ``devices`` devices whose samples are the rows of
        ``features`` (every row of every device, any order; ``owner[row]`` in
        ``[0, devices)`` int: the device it belongs to). The features are
        checked as :meth:`Pack.remap` checks them (``ValueError``). A device
        whose ids do not fit gets its :class:`PackCapacityError` from
        :meth:`CutPacks.state`; the others are cut. Memory: every packed
        table tensor is gathered for all devices at once, ``devices x (rows
        + 1)`` rows each."""
        layout = self.layout
        features = layout.spec.validate(features) if layout.spec is not None else dict(features)
        owner = np.asarray(owner, np.int64)
        if owner.shape != (_rows_of(features),) or (len(owner) and (owner.min() < 0 or owner.max() >= devices)):
            raise ValueError(f"owner must give each of the {_rows_of(features)} rows a device in [0, {devices})")
        by_table: dict[str, list[str]] = {}
        for name, table in layout.feature_tables.items():
            if name in features:
                by_table.setdefault(table, []).append(name)
        errors: dict[int, str] = {}
        id_maps, remapped = {}, dict(features)
        for table, t in layout.tables.items():
            names = by_table.get(table, [])
            if t.rows == t.vocab_size:  # shipped whole: identity map, ids unchanged (int32)
                id_maps[table] = np.broadcast_to(np.arange(t.rows, dtype=np.int64), (devices, t.rows))
                for name in names:
                    remapped[name] = features[name].astype(np.int32)
                continue
            v = np.int64(t.vocab_size)
            reserved = np.asarray(t.reserved_ids, np.int64)
            # every id of the table's features in one flat array, with its device: key device * V + id
            ids = [features[n].reshape(len(owner), -1) for n in names]
            flat = np.concatenate([i.reshape(-1) for i in ids]).astype(np.int64) if ids else np.zeros(0, np.int64)
            who = np.concatenate([np.repeat(owner, i.shape[1]) for i in ids]) if ids else np.zeros(0, np.int64)
            inside = (flat >= 0) & (flat < v)
            is_reserved = inside & np.isin(flat, reserved)
            keep = inside & ~is_reserved
            # the inverse gives every occurrence its key's index: no lookup per feature
            keys, inverse = np.unique(who[keep] * v + flat[keep], return_inverse=True)
            dev, used = keys // v, keys % v
            counts = np.bincount(dev, minlength=devices)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            free = self._free[table]
            for d in np.flatnonzero(counts + len(reserved) > t.rows):
                errors.setdefault(int(d), f"table {table!r}: the device uses {int(counts[d]) + len(reserved)} rows, "
                                          f"the submodel holds {t.rows}; export with a larger submodel_capacity")
            rank = np.arange(len(keys)) - starts[dev]
            fits = rank < len(free)
            maps = np.full((devices, t.rows), EMPTY, np.int64)
            maps[:, reserved] = reserved
            maps[dev[fits], free[rank[fits]]] = used[fits]
            id_maps[table] = maps
            # slots: a packed id -> its slot (devices that did not fit: the OOV slot, never used), a reserved
            # id -> itself, another id inside the vocabulary -> the OOV slot, ids outside it unchanged
            slot = np.where(inside, np.int64(t.rows), flat)
            slot[is_reserved] = flat[is_reserved]
            key_slot = np.where(fits, free[np.minimum(rank, len(free) - 1)] if len(free) else 0, t.rows)
            slot[keep] = key_slot[inverse.reshape(-1)]
            at = 0
            for name, i in zip(names, ids):
                remapped[name] = slot[at : at + i.size].astype(np.int32).reshape(features[name].shape)
                at += i.size
        packed, table_of = {}, layout.table_state
        for name, value in self.global_state.items():
            table = table_of.get(name)
            if table is None or layout.tables[table].rows == layout.tables[table].vocab_size:
                continue  # dense, or a table shipped whole: the global tensor itself (below)
            maps = id_maps[table]
            rows = np.concatenate([maps, np.full((devices, 1), layout.tables[table].vocab_size)], axis=1)  # OOV last
            real = rows != EMPTY
            packed[name] = np.zeros((*rows.shape, *value.shape[1:]), value.dtype)  # empty slots: zeros
            packed[name][real] = value[rows[real]]
        return CutPacks(self, id_maps, remapped, errors, packed)


@dataclasses.dataclass
class CutPacks:
    """What :meth:`PackCutter.cut` made: per table the id maps of every
    device ``[devices, rows]`` int64, every row's features remapped to its
    device's slots, the devices whose ids did not fit (device -> the
    :class:`PackCapacityError` message), and each packed table tensor of
    every device ``[devices, rows + 1, ...]``."""

    cutter: PackCutter
    id_maps: dict[str, np.ndarray]
    features: dict[str, np.ndarray]
    errors: dict[int, str]
    packed: dict[str, np.ndarray]

    def state(self, device: int) -> dict[str, np.ndarray]:
        """Device ``device``'s pack state (what the submodel's ``restore``
        takes; dense tensors and tables shipped whole shared, not copied);
        raises :class:`PackCapacityError` for a device whose ids did not
        fit."""
        if device in self.errors:
            raise PackCapacityError(self.errors[device])
        return {name: self.packed[name][device] if name in self.packed else value
                for name, value in self.cutter.global_state.items()}

    def pack(self, device: int) -> Pack:
        """Device ``device``'s :class:`Pack` (checked; for uploads and tests)."""
        return Pack(self.cutter.layout, self.state(device),
                    {t: np.array(m[device]) for t, m in self.id_maps.items()})


def _rows_of(features: Mapping[str, np.ndarray]) -> int:
    return len(next(iter(features.values()))) if features else 0


@dataclasses.dataclass
class SparseUpdate:
    """What a device uploads after fine-tuning: for each table the global
    rows that changed and their new values (weights and optimizer slots),
    every non-table tensor whole, and the export and capacity it belongs to
    (checked by :func:`apply_update`)."""

    rows: dict[str, np.ndarray]  # table -> global row indices [R] int64 (vocab_size = OOV row)
    values: dict[str, np.ndarray]  # table state name -> [len(rows[table]), ...]
    dense: dict[str, np.ndarray]
    full_sha256: str = ""  # the full model's export
    capacity: int = 0


def sparse_update(pack: Pack, trained: Mapping[str, np.ndarray]) -> SparseUpdate:
    """The rows of ``trained`` (the submodel's ``save()`` after fine-tuning
    from ``pack``) that differ from the pack, as global rows. Raises
    ``ValueError`` when an empty slot changed (ids were not remapped)."""
    layout = pack.layout
    rows, values, dense = {}, {}, {}
    for table, t in layout.tables.items():
        global_rows = pack.global_rows(table)
        changed = np.zeros(len(global_rows), bool)
        for name in t.state:
            diff = trained[name] != pack.state[name]
            changed |= diff.reshape(len(diff), -1).any(axis=1)
        if np.any(changed & (global_rows == EMPTY)):
            raise ValueError(f"table {table!r}: an empty slot changed during fine-tuning (ids were not remapped?)")
        rows[table] = global_rows[changed]
        for name in t.state:
            values[name] = np.array(trained[name][changed])
    table_of = layout.table_state
    for name, value in trained.items():
        if name not in table_of:
            dense[name] = np.array(value)
    return SparseUpdate(rows, values, dense, layout.full_sha256, layout.capacity)


def apply_update(global_state: Mapping[str, np.ndarray], layout: SubmodelLayout,
                 update: SparseUpdate) -> dict[str, np.ndarray]:
    """A new global state: ``global_state`` with ``update``'s rows and dense
    tensors written in (the input is not modified).

    Everything is checked before anything is written, each failure a
    ``ValueError``: the update comes from this export and capacity; it names
    every table, table tensor and dense tensor of the state and nothing else;
    rows are in ``[0, vocab_size]`` (the last being the OOV row) without
    repeats; values have exactly the rows' shape; every value is finite."""
    _check_origin("update", PACK_FORMAT, update.full_sha256, update.capacity, layout)
    table_of = layout.table_state
    if set(update.rows) != set(layout.tables):
        raise ValueError(f"update tables {sorted(update.rows)} differ from the submodel's {sorted(layout.tables)}")
    if set(update.values) != set(table_of) or set(update.dense) != set(global_state) - set(table_of):
        raise ValueError("update tensors differ from the state's (missing or unknown names)")
    for table, t in layout.tables.items():
        rows = np.asarray(update.rows[table])
        if rows.dtype.kind not in "iu" or rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() > t.vocab_size)) \
                or len(np.unique(rows)) != len(rows):
            raise ValueError(f"update rows of table {table!r} must be distinct integers in [0, {t.vocab_size}]")
        for name in t.state:
            want = (len(rows), *global_state[name].shape[1:])
            _check_values(name, update.values[name], want, global_state[name].dtype)
    for name, value in update.dense.items():
        _check_values(name, value, global_state[name].shape, global_state[name].dtype)
    out = {k: np.array(v) for k, v in global_state.items()}
    for table, t in layout.tables.items():
        for name in t.state:
            out[name][update.rows[table]] = update.values[name]
    for name, value in update.dense.items():
        out[name] = np.array(value)
    return out


def _check_values(name: str, value: np.ndarray, shape: tuple, dtype) -> None:
    value = np.asarray(value)
    if value.shape != tuple(shape) or value.dtype != dtype:
        raise ValueError(f"update tensor {name!r}: {value.dtype}{list(value.shape)}, the state needs {dtype}{list(shape)}")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        raise ValueError(f"update tensor {name!r} contains NaN or inf")
