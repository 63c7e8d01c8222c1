"""FeatureSpec: JSON round trip, validation errors, id casting."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_features

from lcft_tf.features import DenseFeature, FeatureSpec, SequenceFeature, SparseFeature


def test_json_round_trip_keeps_everything(spec):
    again = FeatureSpec.from_json(spec.to_json())
    assert again == spec
    assert again.tables == {"user_id": 20, "item_id": 30, "category": 5}
    assert again.shape("pos_hist", 8) == (8, 4)


@pytest.mark.parametrize(
    "features, message",
    [
        ((SparseFeature("a", 3), SparseFeature("a", 3)), "duplicate"),
        ((SparseFeature("label", 3),), "reserved"),
        ((SparseFeature("a b", 3),), "identifier"),
        ((SparseFeature("a", 0),), "vocab_size"),
        ((SequenceFeature("h", 3, 0),), "length"),
        ((DenseFeature("d", 0),), "dim"),
        ((SparseFeature("a", 3), SequenceFeature("h", 4, 2, embedding="a")), "shared"),
        ((SequenceFeature("h", 4, 2, query="nope"),), "query"),
    ],
)
def test_bad_specs_are_rejected(features, message):
    with pytest.raises(ValueError, match=message):
        FeatureSpec(features)


def test_unknown_kind_in_json():
    with pytest.raises(ValueError, match="unknown feature kind"):
        FeatureSpec.from_json({"features": [{"kind": "image", "name": "x"}]})


def test_validate_casts_exactly_and_names_the_feature(spec):
    x = random_features(spec, 3)
    x["item_id"] = x["item_id"].astype(np.int64)
    x["user_id"] = x["user_id"].astype(np.float64)  # integral floats are fine
    out = spec.validate(x)
    assert out["item_id"].dtype == np.int32 and out["user_id"].dtype == np.int32
    assert out["genome"].dtype == np.float32
    with pytest.raises(ValueError, match="item_id.*overflow"):
        spec.validate({**x, "item_id": np.full(3, 2**40)})
    with pytest.raises(ValueError, match="'user_id'.*integers"):
        spec.validate({**x, "user_id": np.array([1.5, 2, 3])})
    with pytest.raises(ValueError, match="'genome'.*shape"):
        spec.validate({**x, "genome": np.zeros((3, 2))})
