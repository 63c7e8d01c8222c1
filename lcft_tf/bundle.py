"""Rebuild ``tflite_models/``: every registry model trained on the synthetic
default and exported (with a hard-correction table) for bundling in an app.

Deterministic: seeded data, seeded training with TF op determinism, and
metadata without timings — the same package version rebuilds the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from lcft_tf import __version__
from lcft_tf._io import atomic_write
from lcft_tf.checks import positive

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BundleConfig:
    """What the bundle trains and exports.

    Raises ``ValueError`` on construction for an unknown model, or
    ``num_users``, ``batch_size`` or ``hard_users_per_group`` below 1.
    """

    models: tuple[str, ...] = dataclasses.field(
        default=("lr", "wide_deep", "deepfm", "pnn", "din", "edgerec"), metadata={"help": "registry models, or 'all'."})
    num_users: int = dataclasses.field(default=500, metadata={"help": "synthetic users the models are trained on."})
    cloud_epochs: int = dataclasses.field(default=1, metadata={"help": "cloud training epochs."})
    hard_users_per_group: int = dataclasses.field(
        default=10, metadata={"help": "users sampled per CTR interval for the hard-correction grid search."})
    batch_size: int = dataclasses.field(
        default=32, metadata={"help": "static batch of the exported train signature (samples)."})
    learning_rate: float = dataclasses.field(
        default=0.01, metadata={"help": "on-device learning rate written into the files (and used by the hard search)."})
    seed: int = dataclasses.field(
        default=0, metadata={"help": "seed of the synthetic data, the cloud training and the hard search."})

    def __post_init__(self) -> None:
        from lcft_tf.models import check_names  # TensorFlow: imported on use
        check_names(self.models)
        positive("num_users", self.num_users)
        positive("batch_size", self.batch_size)
        positive("hard_users_per_group", self.hard_users_per_group)


# Kept by --overwrite: the bundle's guide (tflite_models/README.md), written by hand, never by the bundle.
KEPT = ("README.md",)


def prepare_out(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """The bundle's output folder, checked before anything is trained, as a
    run checks its run folder: created if missing; one that holds anything
    is refused unless ``overwrite``, which empties it but for the bundle's
    guide (:data:`KEPT`: ``README.md``, which the bundle never writes), so an
    index then lists every model in the folder and no file of the user's is
    replaced silently.

    Raises ``ValueError`` for an empty path, a path that is not a folder, a
    non-empty folder without ``overwrite``, or (even with it) a folder that
    holds the current folder or is the home folder; ``OSError`` if it cannot
    be created or emptied.
    """
    if not str(out_dir).strip():
        raise ValueError("--out is empty: name the folder to write the bundle into")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is not a folder")
    present = sorted(out.iterdir()) if out.is_dir() else []
    if present and not overwrite:
        raise ValueError(f"--out {out} is not empty (it holds {present[0].name}"
                         f"{f' and {len(present) - 1} more' if len(present) > 1 else ''}); "
                         "pass --overwrite to replace what it holds, or another --out")
    if present:
        target, here = out.resolve(), Path.cwd().resolve()
        if target == here or target in here.parents or target == Path.home().resolve():
            raise ValueError(f"--overwrite would empty {out}, which holds the current folder or is the home "
                             "folder; give the bundle a folder of its own")
        log.warning("overwriting %s", out)
        for p in present:
            if p.name in KEPT:
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_bundle(out_dir: str | os.PathLike, config: BundleConfig | None = None,
                 overwrite: bool = False) -> list[dict[str, Any]]:
    """Train each model on the synthetic default, search its hard-correction
    table, and write ``<model>.tflite`` + ``<model>.json`` and an
    ``index.json`` listing them into ``out_dir`` (:func:`prepare_out`: created
    if missing, refused if not empty unless ``overwrite``, which empties it
    first).

    Returns the index entries: ``model``, ``tflite`` and ``metadata`` (file
    names), ``bytes`` (the ``.tflite`` size) and ``sha256`` (hex). Turns on
    TensorFlow op determinism for the process. Raises ``ValueError`` from
    :func:`prepare_out` before anything is trained, what training or the
    export raise (``FlexOpsError`` for a model needing Flex ops), ``OSError``
    if ``out_dir`` cannot be written.
    """
    config = config or BundleConfig()
    out = prepare_out(out_dir, overwrite)
    import tensorflow as tf

    from lcft_tf.cloud.export import ExportConfig, export_tflite
    from lcft_tf.pipeline.hard_search import HardSearchConfig, search_hard_table
    from lcft_tf.cloud.train import CloudConfig, train_cloud
    from lcft_tf.data.synthetic import SyntheticConfig, generate

    tf.config.experimental.enable_op_determinism()
    data = generate(SyntheticConfig(num_users=config.num_users, seed=config.seed))
    entries = []
    for name in config.models:
        model = train_cloud(name, data, CloudConfig(epochs=config.cloud_epochs, validation_fraction=0.0, seed=config.seed))
        export = ExportConfig(batch_size=config.batch_size, learning_rate=config.learning_rate, global_ctr=data.global_ctr)
        path = out / f"{name}.tflite"
        export_tflite(model, path, export)
        table, _ = search_hard_table(
            path, data, HardSearchConfig(users_per_group=config.hard_users_per_group, seed=config.seed),
            config.learning_rate,
        )
        metadata = export_tflite(model, path, dataclasses.replace(export, hard_table=table))
        entries.append(
            {
                "model": name,
                "tflite": path.name,
                "metadata": path.with_suffix(".json").name,
                "bytes": metadata["tflite_bytes"],
                "sha256": metadata["tflite_sha256"],
            }
        )
    index = {
        "package_version": __version__,
        "trained_on": {"dataset": "synthetic", **dataclasses.asdict(SyntheticConfig(num_users=config.num_users, seed=config.seed))},
        "bundle_config": dataclasses.asdict(config),
        "models": entries,
    }
    atomic_write(out / "index.json", json.dumps(index, indent=2).encode())
    return entries


def verify_bundle(folder: str | os.PathLike, models: Sequence[str] | None = None) -> list[str]:
    """Load every model listed in ``folder/index.json`` (only ``models`` when
    given), check it against its metadata, run one train step on ones
    (``learning_rate`` 0.5, hard-corrected labels) and restore.

    Returns the names of the models checked, in index order. Raises
    ``ValueError`` for a file that does not match its metadata (sha256,
    signatures), ``RuntimeError`` if a step changes nothing or a restore does
    not bring the predictions back exactly, ``FileNotFoundError`` for a
    missing file.
    """
    import numpy as np

    from lcft_tf.device.model import OnDeviceModel

    folder = Path(folder)
    index = json.loads((folder / "index.json").read_text())
    checked = []
    for entry in index["models"]:
        if models and entry["model"] not in models:
            continue
        device = OnDeviceModel(folder / entry["tflite"])  # checks sha256 and signatures
        spec = device.spec
        rows = device.batch_size
        features = {n: np.ones((rows, *spec.shape(n)[1:]), spec.dtype(n)) for n in spec.names}
        labels = np.tile([1.0, 0.0], rows)[:rows]
        before, state = device.infer(features), device.save()
        device.train(features, device.correct(labels, "hard"), learning_rate=0.5)
        if np.array_equal(device.infer(features), before):
            raise RuntimeError(f"{entry['model']}: a train step changed nothing")
        device.restore(state)
        if not np.array_equal(device.infer(features), before):
            raise RuntimeError(f"{entry['model']}: restore did not bring the weights back")
        checked.append(entry["model"])
    return checked
