"""Conversion between psyserve.v1 protobuf values/enums and plain Python, in one place.

Public: the server's transports import it too, so both sides read and write the wire the same way.
Owns parameter values, stimuli and the enum <-> name tables; knows nothing of RPCs, clients or
server state (no request building, no result types).
"""

from __future__ import annotations

from collections.abc import Mapping

from ._proto.psyserve.v1 import messages_pb2 as pb

Value = float | int | str | bool
"""A parameter value as Python holds it: number, integer, category or flag."""

__all__ = [
    "OUTCOME_TYPE_ENUMS",
    "OUTCOME_TYPE_NAMES",
    "PARAMETER_TYPE_ENUMS",
    "PARAMETER_TYPE_NAMES",
    "QUERY_TYPE_ENUMS",
    "QUERY_TYPE_NAMES",
    "SWEEP_BEST_MODE_ENUMS",
    "SWEEP_BEST_MODE_NAMES",
    "SWEEP_ORDER_ENUMS",
    "SWEEP_ORDER_NAMES",
    "TRIAL_STATE_ENUMS",
    "TRIAL_STATE_NAMES",
    "Value",
    "from_stimulus",
    "from_value",
    "from_values",
    "require_value",
    "to_stimulus",
    "to_value",
    "to_values",
]


# ---------------------------------------------------------------------------- values


def to_value(value: Value) -> pb.ParameterValue:
    """bool -> flag, int -> integer, str -> category, float -> number (bool before int: bool is an int)."""
    if isinstance(value, bool):
        return pb.ParameterValue(flag=value)
    if isinstance(value, int):
        return pb.ParameterValue(integer=value)
    if isinstance(value, str):
        return pb.ParameterValue(category=value)
    if isinstance(value, float):
        return pb.ParameterValue(number=value)
    raise TypeError(f"parameter values must be float, int, str or bool, got {type(value).__name__}")


def from_value(value: pb.ParameterValue) -> Value | None:
    """The value its oneof holds; None when no member is set (the receiver reports it as missing)."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    return getattr(value, kind)  # type: ignore[no-any-return]


def require_value(value: pb.ParameterValue, field: str) -> Value:
    """`from_value` for values that must be present; an unset one is a ValueError naming `field`."""
    out = from_value(value)
    if out is None:
        raise ValueError(f"{field}: no value set")
    return out


def to_values(values: Mapping[str, Value]) -> dict[str, pb.ParameterValue]:
    return {name: to_value(v) for name, v in values.items()}


def from_values(values: Mapping[str, pb.ParameterValue]) -> dict[str, Value | None]:
    return {name: from_value(v) for name, v in values.items()}


def to_stimulus(values: Mapping[str, Value]) -> pb.Stimulus:
    return pb.Stimulus(values=to_values(values))


def from_stimulus(stimulus: pb.Stimulus, field: str = "stimulus") -> dict[str, Value]:
    """A stimulus every value of which must be set (replies): an unset one is a ValueError."""
    return {name: require_value(v, f"{field}.{name}") for name, v in stimulus.values.items()}


# ---------------------------------------------------------------------------- enums (name <-> wire)

PARAMETER_TYPE_NAMES: dict[pb.ParameterType.ValueType, str] = {
    pb.PARAMETER_TYPE_CONTINUOUS: "continuous",
    pb.PARAMETER_TYPE_INTEGER: "integer",
    pb.PARAMETER_TYPE_BINARY: "binary",
    pb.PARAMETER_TYPE_FIXED: "fixed",
    pb.PARAMETER_TYPE_CATEGORICAL: "categorical",
}
PARAMETER_TYPE_ENUMS: dict[str, pb.ParameterType.ValueType] = {v: k for k, v in PARAMETER_TYPE_NAMES.items()}

OUTCOME_TYPE_NAMES: dict[pb.OutcomeType.ValueType, str] = {
    pb.OUTCOME_TYPE_BINARY: "binary",
    pb.OUTCOME_TYPE_CONTINUOUS: "continuous",
    pb.OUTCOME_TYPE_ORDINAL: "ordinal",
}
OUTCOME_TYPE_ENUMS: dict[str, pb.OutcomeType.ValueType] = {v: k for k, v in OUTCOME_TYPE_NAMES.items()}

TRIAL_STATE_NAMES: dict[pb.TrialState.ValueType, str] = {
    pb.TRIAL_STATE_PENDING: "pending",
    pb.TRIAL_STATE_COMPLETED: "completed",
    pb.TRIAL_STATE_FAILED: "failed",
    pb.TRIAL_STATE_ABANDONED: "abandoned",
}
TRIAL_STATE_ENUMS: dict[str, pb.TrialState.ValueType] = {v: k for k, v in TRIAL_STATE_NAMES.items()}

QUERY_TYPE_NAMES: dict[pb.QueryType.ValueType, str] = {
    pb.QUERY_TYPE_MAX: "max",
    pb.QUERY_TYPE_MIN: "min",
    pb.QUERY_TYPE_PREDICTION: "prediction",
    pb.QUERY_TYPE_INVERSE: "inverse",
}
QUERY_TYPE_ENUMS: dict[str, pb.QueryType.ValueType] = {v: k for k, v in QUERY_TYPE_NAMES.items()}

SWEEP_ORDER_NAMES: dict[pb.SweepOrder.ValueType, str] = {pb.SWEEP_ORDER_INDEX: "index", pb.SWEEP_ORDER_SHUFFLE: "shuffle"}
SWEEP_ORDER_ENUMS: dict[str, pb.SweepOrder.ValueType] = {v: k for k, v in SWEEP_ORDER_NAMES.items()}

SWEEP_BEST_MODE_NAMES: dict[pb.SweepBestMode.ValueType, str] = {pb.SWEEP_BEST_MODE_MAX: "max", pb.SWEEP_BEST_MODE_MIN: "min"}
SWEEP_BEST_MODE_ENUMS: dict[str, pb.SweepBestMode.ValueType] = {v: k for k, v in SWEEP_BEST_MODE_NAMES.items()}
