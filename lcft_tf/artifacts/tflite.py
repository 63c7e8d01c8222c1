"""The exported model's contract: file names, metadata format and the signature table.

The cloud writes ``<name>.tflite`` and ``<name>.json``
(:func:`lcft_tf.cloud.export.export_tflite`); every device reads them
(:class:`lcft_tf.device.model.OnDeviceModel`, the Kotlin sketch in
``tflite_models/README.md``). Both sides take the signatures' inputs and
outputs from :func:`signature_table`, so a name, shape or dtype is written
once: the export derives its ``tf.TensorSpec`` from it, and the device checks
the file against it (docs/tflite_training.md, docs/architecture.md).

Signatures (all builtin ops, static batch ``B``):

* ``train(<features>[B], label[B], sample_weight[B], learning_rate[]) ->
  loss[], grad_norm[], applied[] int32``
* ``infer(<features>[B]) -> probability[B]``; ``infer_one`` the same at batch 1
* ``save() -> <state>``; ``restore(<state>) -> num_restored[] int32``
* ``correct(label[B], local_ctr[], method[] int32) -> corrected_label[B],
  alpha[], beta[], valid[] int32``

Numpy and JSON only: no TensorFlow here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

FORMAT, FORMAT_VERSION = "lcft-tflite", 3  # 2: train outputs grad_norm/applied, correct outputs valid; 3: train also rolls back a step whose new weights predict NaN or inf on its batch
SIGNATURES = ("train", "infer", "infer_one", "save", "restore", "correct")  # what an export writes
OPTIONAL_SIGNATURES = ("infer_one",)  # batch-1 scoring; a device without it scores one row with infer
REQUIRED_SIGNATURES = tuple(s for s in SIGNATURES if s not in OPTIONAL_SIGNATURES)
ADAM_STEP = "adam_step"  # Adam's step counter in the state; slots follow the model's variables


def tensor(name: str, shape: Sequence[int], dtype: str = "float32") -> dict[str, Any]:
    """One signature input or output as the metadata lists it."""
    return {"name": name, "shape": [int(d) for d in shape], "dtype": dtype}


def signature_table(
    batch_size: int,
    features: Sequence[Mapping[str, Any]],
    state: Sequence[Mapping[str, Any]],
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """``{signature: {"inputs": [...], "outputs": [...]}}`` for a file with
    static batch ``batch_size``.

    Args:
        batch_size: the static batch ``B`` of train / infer / correct.
        features: the feature inputs at batch ``B``, each
            ``{"name", "shape": [B, ...], "dtype"}`` (from the FeatureSpec).
        state: every state tensor (weights, then optimizer slots), each
            ``{"name", "shape", "dtype"}``.

    ``infer_one`` takes the same features with the batch dimension 1.
    """
    b = int(batch_size)
    features = [tensor(f["name"], f["shape"], f["dtype"]) for f in features]
    features_one = [tensor(f["name"], [1, *f["shape"][1:]], f["dtype"]) for f in features]
    state = [tensor(s["name"], s["shape"], s["dtype"]) for s in state]
    return {
        "train": {
            "inputs": features + [tensor("label", [b]), tensor("sample_weight", [b]), tensor("learning_rate", [])],
            "outputs": [tensor("loss", []), tensor("grad_norm", []), tensor("applied", [], "int32")],
        },
        "infer": {"inputs": features, "outputs": [tensor("probability", [b])]},
        "infer_one": {"inputs": features_one, "outputs": [tensor("probability", [1])]},
        "save": {"inputs": [], "outputs": state},
        "restore": {"inputs": state, "outputs": [tensor("num_restored", [], "int32")]},
        "correct": {
            "inputs": [tensor("label", [b]), tensor("local_ctr", []), tensor("method", [], "int32")],
            "outputs": [tensor("corrected_label", [b]), tensor("alpha", []), tensor("beta", []),
                        tensor("valid", [], "int32")],
        },
    }


def metadata_path(model_path: str | os.PathLike) -> Path:
    """``<dir>/<name>.json`` beside ``<dir>/<name>.tflite``."""
    return Path(model_path).with_suffix(".json")


def submodel_path(model_path: str | os.PathLike) -> Path:
    """``<dir>/<name>.sub.tflite`` beside ``<dir>/<name>.tflite`` (docs/submodels.md)."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}.sub.tflite")


def read_metadata(model_path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of the exported file ``model_path``, after checking its
    format and version.

    Raises:
        FileNotFoundError: no ``.json`` beside the file.
        ValueError: not JSON, or a format / version this package does not read
            (one line naming the file).
    """
    path = metadata_path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"no metadata beside the model: expected {path}")
    try:
        metadata = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(metadata).__name__}")
    version = (metadata.get("format"), metadata.get("format_version"))
    if version != (FORMAT, FORMAT_VERSION):
        raise ValueError(f"{path}: format {version}, this package reads {(FORMAT, FORMAT_VERSION)}; re-export the model")
    return metadata


def state_tensors(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The state tensors (``save``'s outputs) the metadata lists."""
    return list(metadata["signatures"]["save"]["outputs"])


def submodel_file(model_path: str | os.PathLike, metadata: Mapping[str, Any] | None = None) -> Path | None:
    """The submodel exported beside ``model_path``, or None when the export
    wrote none (every table fit its capacity)."""
    metadata = read_metadata(model_path) if metadata is None else metadata
    sub = metadata.get("submodel")
    return Path(model_path).parent / sub["file"] if sub else None
