"""A device running a per-device submodel (docs/submodels.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from lcft_tf._io import sha256
from lcft_tf.artifacts.pack import Pack, SubmodelLayout, make_pack
from lcft_tf.artifacts.tflite import submodel_path
from lcft_tf.device.model import OnDeviceModel


class SubmodelDevice:
    """The submodel file beside a full model, with the full model's state to
    cut packs from; :meth:`pack` gives a user's pack (or raises
    :class:`PackCapacityError`)."""

    def __init__(self, full_path: str | os.PathLike, global_state: Mapping[str, np.ndarray],
                 num_threads: int | None = 1, runtime: str = "interpreter"):
        full_path = Path(full_path)
        path = submodel_path(full_path)
        self.device = OnDeviceModel(path, num_threads=num_threads, runtime=runtime)
        self.layout = SubmodelLayout.from_metadata(self.device.metadata)
        if self.layout.full_sha256 != sha256(full_path.read_bytes()):
            raise ValueError(f"{path} was cut from another export than {full_path} (sha256 differs); re-export")
        self.global_state = dict(global_state)

    def pack(self, *feature_sets: Mapping[str, np.ndarray]) -> Pack:
        """The pack of the ids ``feature_sets`` use, with their rows from the
        global state (:func:`lcft_tf.artifacts.pack.make_pack`; raises
        :class:`PackCapacityError` when they do not fit; docs/submodels.md)."""
        return make_pack(self.layout, self.global_state, *feature_sets)
