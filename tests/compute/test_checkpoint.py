"""compute.checkpoint: a fitted state survives the bytes the journal keeps, every float bit for bit."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest

from psyserve.compute import ModelSpec, TrainingData, fit_state
from psyserve.compute.checkpoint import FORMAT, decode_state, encode_state
from psyserve.compute.contract import ModelState
from psyserve.compute.optimization import OptimizationState


def bits(value: object) -> object:
    """Floats as their IEEE bits (so -0.0 != 0.0 and NaN == NaN), recursively."""
    if isinstance(value, float):
        return ("f", struct.pack("<d", value))
    if isinstance(value, list):
        return [bits(v) for v in value]
    if isinstance(value, dict):
        return {k: bits(v) for k, v in value.items()}
    return (type(value).__name__, value)


def test_a_fitted_classification_state_comes_back_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    X = rng.random((12, 2))
    state, _ = fit_state(ModelSpec(kind="GPClassificationModel", dim=2), TrainingData(X=X, y=(X[:, 0] > 0.5).astype(float)), 5)
    back = decode_state(encode_state(state))
    assert isinstance(back, ModelState) and (back.kind, back.n_train) == (state.kind, state.n_train)
    assert bits(back.hyperparameters) == bits(state.hyperparameters)


def test_awkward_values_and_optimization_states() -> None:
    awkward = {
        "floats": [[0.1, -0.0], [math.inf, 1e-308]],
        "nan": [math.nan],
        "ints": [1, 2**40],
        "flags": [True, False],
        "empty": [],
        "text": ["digest"],
        "ragged": [[1.0], [2.0, 3.0]],
        "nested": [{"a": [0.5]}],
    }
    state = OptimizationState(hyperparameters=[awkward, {"b": [1.0 / 3.0]}], n_train=4)
    back = decode_state(encode_state(state))
    assert isinstance(back, OptimizationState) and back.n_train == 4
    assert bits(back.hyperparameters) == bits(state.hyperparameters)
    assert decode_state(encode_state(None)) is None


def test_an_unreadable_state_is_an_error_and_another_format_is_ignored() -> None:
    blob = encode_state(ModelState(kind="GPRegressionModel", hyperparameters={"x": [1.0]}, n_train=1))
    with pytest.raises(ValueError, match="unreadable"):
        decode_state(blob[:-3])
    raw = bytearray(zlib.decompress(blob))
    raw[0] = FORMAT + 1
    assert decode_state(zlib.compress(bytes(raw))) is None
