"""Export of per-device submodels: the TensorFlow half (docs/submodels.md).

Beside ``<name>.tflite`` the cloud writes ``<name>.sub.tflite``: the same
model whose embedding tables hold ``capacity`` rows, and in its metadata the
table layout that packs are cut by (:mod:`lcft_tf.artifacts.pack`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from lcft_tf._io import atomic_write
from lcft_tf.artifacts.pack import IDMAP_PREFIX, PACK_FORMAT, reserved_ids, submodel_spec, table_rows


def needs_submodel(spec, capacity: int) -> bool:
    """True if some table of ``spec`` has more rows than ``capacity`` (0: never)."""
    return capacity > 0 and any(v > capacity for v in spec.tables.values())


def export_submodel(model, path: str | os.PathLike, config, full_metadata: Mapping[str, Any],
                    compile_model: Callable) -> dict[str, Any]:
    """Convert the submodel of ``model`` (tables of ``config.submodel_capacity``
    rows) to ``path`` and its ``.json``; returns that metadata, which adds a
    ``submodel`` section (table layout, the full file's sha256).

    ``compile_model(model, config) -> (module, flatbuffer, metadata)`` is
    :func:`lcft_tf.cloud.export.compile_model` (passed in: export calls this
    module). Raises ``ValueError`` when the submodel's state does not line up
    with the full model's (docs/submodels.md)."""

    capacity = int(config.submodel_capacity)
    if capacity < 1:
        raise ValueError(f"submodel capacity must be >= 1, got {capacity}")
    path = Path(path)
    sub_spec = submodel_spec(model.spec, capacity)
    sub_model = type(model).from_config({**model.get_config(), "spec": sub_spec.to_json()}).build_from_spec()
    module, tflite, metadata = compile_model(sub_model, config)
    states = _table_states(module)
    full_state = {t["name"]: t["shape"] for t in full_metadata["signatures"]["save"]["outputs"]}
    sub_state = {t["name"]: t["shape"] for t in metadata["signatures"]["save"]["outputs"]}
    if set(full_state) != set(sub_state):  # same layers, same names (docs/tflite_training.md)
        raise ValueError(f"{model.name}: submodel state names differ from the full model's")
    rows = table_rows(model.spec, capacity)
    reserved = reserved_ids(model.spec)
    tables = {}
    for table, vocab in sorted(model.spec.tables.items()):
        names = sorted(n for n, t in states.items() if t == table)
        for n in names:
            if full_state[n][0] != vocab + 1 or sub_state[n][0] != rows[table] + 1:
                raise ValueError(f"{model.name}: state {n!r} is not a table of {vocab} + 1 rows")
        if any(r >= rows[table] for r in reserved[table]):
            raise ValueError(f"table {table!r}: reserved ids {reserved[table]} do not fit {rows[table]} rows")
        tables[table] = {"vocab_size": vocab, "rows": rows[table], "state": names, "reserved_ids": reserved[table]}
    for n, shape in full_state.items():
        if n not in states and sub_state[n] != shape:
            raise ValueError(f"{model.name}: state {n!r} changes shape in the submodel but is no embedding table")
    metadata["submodel"] = {
        "capacity": capacity,
        "full_model": {"file": Path(path).name.replace(".sub.tflite", ".tflite"),
                       "tflite_sha256": full_metadata["tflite_sha256"]},
        "feature_vocab_sizes": {f.name: f.vocab_size for f in model.spec.features if hasattr(f, "vocab_size")},
        "tables": tables,
        "pack": {"format": PACK_FORMAT, "container": "safetensors",
                 "idmap": f"{IDMAP_PREFIX}<table>: int64 [rows], the global id of each slot, -1 empty; "
                          "slot <rows> is the OOV row (global row vocab_size)"},
        "remap": "host side, before train/infer: global id in the pack -> its slot; other ids in "
                 "[0, vocab_size) -> slot rows (OOV); ids outside [0, vocab_size) unchanged (OOV in-graph)",
    }
    atomic_write(path, tflite)
    atomic_write(path.with_suffix(".json"), json.dumps(metadata, indent=2).encode())
    return metadata


def _table_states(module) -> dict[str, str]:
    """State name -> embedding table, for table weights and their Adam slots."""
    from lcft_tf.models.layers import Embedding

    by_var: dict[int, str] = {}
    found = []
    for layer in module.model._flatten_layers(include_self=True):
        if isinstance(layer, Embedding):
            found.append(layer)
        for attr in ("tables", "weights_by_table"):  # CTRModel.tables, LinearTerms.weights_by_table
            for table, emb in (getattr(layer, attr, None) or {}).items():
                if isinstance(emb, Embedding):
                    by_var[id(emb.embeddings.value)] = table
        for feature, emb in (getattr(layer, "weights_by_feature", None) or {}).items():  # untied LinearTerms
            by_var[id(emb.embeddings.value)] = layer.spec[feature].table
    if len(by_var) != len(found):
        raise ValueError(f"{module.model.name}: an Embedding layer is not listed in a table dict")
    names = dict(zip((id(v) for v in module._model_vars), module.state_names))
    out = {names[i]: t for i, t in by_var.items()}
    if module.config.optimizer == "adam":
        slot_names = module.state_names[len(module._model_vars):]
        for k, v in enumerate(module._trainable):
            if id(v) in by_var:
                out[slot_names[2 * k]] = out[slot_names[2 * k + 1]] = by_var[id(v)]
    return out
