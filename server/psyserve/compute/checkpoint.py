"""Fitted model states as bytes, exactly: what the journal keeps so that a restarted server (or a
strategy brought back into memory) warm-starts its next fit from the very state it would have used.

Owns the byte format of ModelState / OptimizationState (every float64 bit for bit: numeric lists are
stored as raw arrays, everything else as JSON) and the job wrappers that encode a result's state in
the pool worker (so the event loop never serialises a 100 x 100 variational covariance). Torch-free;
touches no server state or I/O.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from psyserve.compute.contract import GenerateJob, GenerateResult, ModelState
from psyserve.compute.jobs import generate
from psyserve.compute.optimization import OptimizationGenerateJob, OptimizationGenerateResult, OptimizationState
from psyserve.compute.optimization_jobs import optimization_generate

__all__ = [
    "decode_state",
    "encode_state",
    "encoded_job",
    "generate_encoded",
    "optimization_generate_encoded",
    "pack_checkpoint",
    "unpack_checkpoint",
]

FORMAT = 1  # the first byte of every blob; a server that reads another number ignores the blob
_HEADER = struct.Struct("<BI")  # format, JSON header length


def _pack(value: Any, arrays: list[np.ndarray]) -> Any:
    """A JSON-able tree; rectangular numeric lists (float64 / int64 / bool in numpy) go to `arrays`
    and are referenced by index. They come back with equal values (a list mixing ints and floats
    comes back as floats, as torch would read it anyway)."""
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("model state dictionaries must have string keys")
        return {"d": {k: _pack(v, arrays) for k, v in value.items()}}
    if isinstance(value, list):
        array = None
        if value:
            try:
                array = np.asarray(value)
            except ValueError:  # ragged
                array = None
        if array is not None and array.dtype.kind in "fib" and array.dtype.itemsize in (1, 8):
            arrays.append(np.ascontiguousarray(array))
            return {"a": len(arrays) - 1, "t": array.dtype.str, "s": list(array.shape)}
        return {"l": [_pack(v, arrays) for v in value]}
    if value is None or isinstance(value, (str, bool, int, float)):
        return {"v": value}
    raise TypeError(f"model state values must be lists, dicts or scalars, got {type(value).__name__}")


def _unpack(node: Any, arrays: list[np.ndarray]) -> Any:
    if "d" in node:
        return {k: _unpack(v, arrays) for k, v in node["d"].items()}
    if "a" in node:
        return arrays[node["a"]].tolist()
    if "l" in node:
        return [_unpack(v, arrays) for v in node["l"]]
    return node["v"]


def encode_state(state: ModelState | OptimizationState | None) -> bytes:
    """The state as bytes (b"" for None); decode_state(encode_state(s)) == s, floats bit for bit
    (a float64 array's bytes, never a decimal rendering)."""
    if state is None:
        return b""
    arrays: list[np.ndarray] = []
    if isinstance(state, ModelState):
        tree = {"type": "model", "kind": state.kind, "n_train": state.n_train, "h": _pack(state.hyperparameters, arrays)}
    elif isinstance(state, OptimizationState):
        tree = {"type": "optimization", "n_train": state.n_train, "h": _pack(state.hyperparameters, arrays)}
    else:
        raise TypeError(f"not a model state: {type(state).__name__}")
    tree["arrays"] = [[a.dtype.str, list(a.shape)] for a in arrays]
    header = json.dumps(tree, separators=(",", ":")).encode()
    body = b"".join(a.tobytes() for a in arrays)
    return zlib.compress(_HEADER.pack(FORMAT, len(header)) + header + body, 1)


def decode_state(blob: bytes) -> ModelState | OptimizationState | None:
    """The state encode_state wrote; None for b"" or a blob of another format (ValueError if corrupt)."""
    if not blob:
        return None
    try:
        raw = zlib.decompress(blob)
        version, length = _HEADER.unpack_from(raw)
        if version != FORMAT:
            return None
        tree = json.loads(raw[_HEADER.size : _HEADER.size + length])
        arrays, offset = [], _HEADER.size + length
        for dtype, shape in tree["arrays"]:
            dt = np.dtype(dtype)
            count = int(np.prod(shape)) if shape else 1
            arrays.append(np.frombuffer(raw, dtype=dt, count=count, offset=offset).reshape(shape))
            offset += count * dt.itemsize
        hyperparameters = _unpack(tree["h"], arrays)
        if tree["type"] == "model":
            return ModelState(kind=str(tree["kind"]), hyperparameters=hyperparameters, n_train=int(tree["n_train"]))
        if tree["type"] == "optimization":
            return OptimizationState(hyperparameters=hyperparameters, n_train=int(tree["n_train"]))
    except (zlib.error, struct.error, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"model state unreadable: {exc}") from exc
    raise ValueError(f"model state of unknown type {tree.get('type')!r}")


_CHECKPOINT = struct.Struct("<Ii")  # the refit state's length; the last state's, -1 when the same


def pack_checkpoint(refit_blob: bytes, last_blob: bytes) -> bytes:
    """The two states a strategy's next asks and queries start from, as one journal value (the
    last served state is left out when it is the refit state itself, as with refit_every = 1)."""
    same = last_blob == refit_blob
    return _CHECKPOINT.pack(len(refit_blob), -1 if same else len(last_blob)) + refit_blob + (b"" if same else last_blob)


def unpack_checkpoint(checkpoint: bytes) -> tuple[bytes, bytes]:
    """The two states pack_checkpoint packed (ValueError if truncated)."""
    try:
        refit_length, last_length = _CHECKPOINT.unpack_from(checkpoint)
    except struct.error as exc:
        raise ValueError(f"model state truncated: {exc}") from exc
    refit = checkpoint[_CHECKPOINT.size : _CHECKPOINT.size + refit_length]
    last = refit if last_length < 0 else checkpoint[_CHECKPOINT.size + refit_length : _CHECKPOINT.size + refit_length + last_length]
    if len(refit) != refit_length or len(last) != (refit_length if last_length < 0 else last_length):
        raise ValueError("model state truncated")
    return refit, last


def generate_encoded(job: GenerateJob) -> tuple[GenerateResult, bytes]:
    """jobs.generate, with the fitted state's bytes made in the worker."""
    result = generate(job)
    return result, encode_state(result.state)


def optimization_generate_encoded(job: OptimizationGenerateJob) -> tuple[OptimizationGenerateResult, bytes]:
    """optimization_jobs.optimization_generate, with the fitted states' bytes made in the worker."""
    result = optimization_generate(job)
    return result, encode_state(result.state)


def encoded_job(job: GenerateJob | OptimizationGenerateJob) -> Callable[[Any], Any]:
    """The pool function for a generate job: it returns (result, the fitted state's bytes)."""
    return optimization_generate_encoded if isinstance(job, OptimizationGenerateJob) else generate_encoded
