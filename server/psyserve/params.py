"""Parameter space: the five parameter types, raw-value validation and the raw <-> unit-cube maps.

Owns how a raw value on the wire becomes a model coordinate and back, and the value types the
service and transports share (raw values, stimuli, outcome values); knows nothing of configs,
strategies, storage or transports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

RawValue = float | int | str | bool
Stimulus = dict[str, RawValue]


@dataclass(frozen=True)
class OutcomeValue:
    """One told outcome: its name, value and (optional) standard error of the mean."""

    name: str
    value: float
    sem: float | None = None
    series: tuple[float, ...] | None = None  # sweeps: a learning curve for this metric

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "value": self.value}
        if self.sem is not None:
            out["sem"] = self.sem
        if self.series:
            out["series"] = list(self.series)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutcomeValue:
        series = data.get("series")
        return cls(name=data["name"], value=float(data["value"]), sem=data.get("sem"), series=tuple(series) if series else None)


class ParamType(str, Enum):
    CONTINUOUS = "continuous"
    INTEGER = "integer"
    BINARY = "binary"
    FIXED = "fixed"
    CATEGORICAL = "categorical"


class ParameterValueError(ValueError):
    """A raw value that does not fit its parameter; `field` names the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ParameterSpec:
    """One experiment parameter. Free parameters (all but fixed) are model dimensions."""

    name: str
    type: ParamType
    lower: float = 0.0
    upper: float = 1.0
    log_scale: bool = False
    choices: tuple[str, ...] = ()
    value: RawValue | None = None
    # Ax-style extras: the values' Python type ("" = by parameter type), rounding digits of a
    # continuous parameter, and whether categorical choices are ordered
    value_type: str = ""
    digits: int | None = None
    is_ordered: bool = True

    def typed_choice(self, choice: str) -> RawValue:
        """A categorical choice as the value handed out (numbers for numeric choices)."""
        if self.value_type == "int":
            return int(choice)
        if self.value_type == "float":
            return float(choice)
        return choice

    @property
    def is_free(self) -> bool:
        return self.type is not ParamType.FIXED

    def validate(self, value: object) -> RawValue:
        """Return `value` as this parameter's canonical raw value, or raise ParameterValueError."""
        name = self.name
        if self.type is ParamType.FIXED:
            if value != self.value and str(value) != str(self.value):
                raise ParameterValueError(name, f"parameter {name!r} is fixed at {self.value!r}, got {value!r}")
            return self.value if self.value is not None else 0.0
        if self.type is ParamType.CATEGORICAL:
            if self.value_type in ("int", "float") and isinstance(value, (int, float)) and not isinstance(value, bool):
                key = str(int(value)) if self.value_type == "int" and float(value) == int(value) else str(float(value))
                if key in self.choices:
                    return self.typed_choice(key)
                raise ParameterValueError(name, f"parameter {name!r}: {value!r} is not one of {[self.typed_choice(c) for c in self.choices]}")
            if not isinstance(value, str):
                raise ParameterValueError(
                    name, f"parameter {name!r} is categorical: expected one of {list(self.choices)}, got {value!r}"
                )
            if value not in self.choices:
                raise ParameterValueError(name, f"parameter {name!r}: {value!r} is not one of {list(self.choices)}")
            return self.typed_choice(value)
        if isinstance(value, str):
            raise ParameterValueError(name, f"parameter {name!r} is {self.type.value}: expected a number, got {value!r}")
        if self.type is ParamType.BINARY:
            if isinstance(value, bool):
                return value
            if isinstance(value, (int, float)) and value in (0, 1):
                return bool(value)
            raise ParameterValueError(name, f"parameter {name!r} is binary: expected true/false or 0/1, got {value!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ParameterValueError(name, f"parameter {name!r} expects a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ParameterValueError(name, f"parameter {name!r} must be finite, got {value!r}")
        tolerance = 1e-9 * max(1.0, abs(self.upper - self.lower))
        if number < self.lower - tolerance or number > self.upper + tolerance:
            raise ParameterValueError(
                name, f"parameter {name!r}: {value!r} is outside its bounds [{self.lower:g}, {self.upper:g}]"
            )
        if self.type is ParamType.INTEGER:
            if abs(number - round(number)) > 1e-9:
                raise ParameterValueError(name, f"parameter {name!r} is integer, got {value!r}")
            return int(round(number))
        return min(max(number, self.lower), self.upper)

    def to_unit(self, value: RawValue) -> float:
        """Map a validated raw value to [0, 1]."""
        if self.type is ParamType.CATEGORICAL:
            k = len(self.choices)
            key = str(value) if isinstance(value, str) or self.value_type != "int" else str(int(value))
            if self.value_type == "float" and not isinstance(value, str):
                key = str(float(value))
            return self.choices.index(key) / (k - 1) if k > 1 else 0.5
        if self.type is ParamType.BINARY:
            return 1.0 if value else 0.0
        if self.type is ParamType.FIXED:
            return 0.5
        number = float(value)
        if self.log_scale:
            lo, hi = math.log(self.lower), math.log(self.upper)
            return (math.log(number) - lo) / (hi - lo) if hi > lo else 0.5
        span = self.upper - self.lower
        return (number - self.lower) / span if span > 0 else 0.5

    def from_unit(self, u: float) -> RawValue:
        """Map a point of [0, 1] to the nearest raw value of this parameter."""
        u = min(max(float(u), 0.0), 1.0)
        if self.type is ParamType.FIXED:
            assert self.value is not None
            return self.value
        if self.type is ParamType.CATEGORICAL:
            return self.typed_choice(self.choices[int(round(u * (len(self.choices) - 1)))])
        if self.type is ParamType.BINARY:
            return u >= 0.5
        if self.log_scale:
            lo, hi = math.log(self.lower), math.log(self.upper)
            number = math.exp(lo + u * (hi - lo))
        else:
            number = self.lower + u * (self.upper - self.lower)
        if self.type is ParamType.INTEGER:
            return int(min(max(round(number), math.ceil(self.lower)), math.floor(self.upper)))
        if self.digits is not None:
            number = round(number, self.digits)
        return min(max(number, self.lower), self.upper)


@dataclass(frozen=True)
class ParameterSpace:
    """The ordered parameters of an experiment; model coordinates are the free parameters."""

    parameters: tuple[ParameterSpec, ...]
    by_name: dict[str, ParameterSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.parameters})

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @property
    def free(self) -> list[ParameterSpec]:
        return [p for p in self.parameters if p.is_free]

    @property
    def dim(self) -> int:
        return len(self.free)

    def get(self, name: str, field_path: str) -> ParameterSpec:
        spec = self.by_name.get(name)
        if spec is None:
            raise ParameterValueError(f"{field_path}.{name}", f"{field_path}: unknown parameter {name!r} (known: {self.names})")
        return spec

    def validate_stimulus(self, values: Mapping[str, object], field_path: str = "stimulus") -> Stimulus:
        """Validate a complete stimulus (every free parameter present; fixed may be omitted)."""
        for name in values:
            self.get(name, field_path)
        out: Stimulus = {}
        for spec in self.parameters:
            if spec.name in values:
                try:
                    out[spec.name] = spec.validate(values[spec.name])
                except ParameterValueError as exc:
                    raise ParameterValueError(f"{field_path}.{spec.name}", str(exc)) from None
            elif spec.type is ParamType.FIXED:
                assert spec.value is not None
                out[spec.name] = spec.value
            else:
                raise ParameterValueError(
                    f"{field_path}.{spec.name}", f"{field_path}: missing a value for parameter {spec.name!r}"
                )
        return out

    def validate_partial(self, values: Mapping[str, object], field_path: str) -> Stimulus:
        """Validate values for some parameters (fixed parameters on ask, query constraints)."""
        out: Stimulus = {}
        for name, value in values.items():
            spec = self.get(name, field_path)
            try:
                out[name] = spec.validate(value)
            except ParameterValueError as exc:
                raise ParameterValueError(f"{field_path}.{name}", str(exc)) from None
        return out

    def same(self, a: Mapping[str, RawValue], b: Mapping[str, RawValue]) -> bool:
        """Whether two validated stimuli are the same point: numbers equal to 1e-9 of their range
        (a client that prints 15 significant digits, like MATLAB's jsonencode, still matches)."""
        for p in self.parameters:
            x, y = a[p.name], b[p.name]
            if p.type in (ParamType.CONTINUOUS, ParamType.INTEGER) and not isinstance(x, str) and not isinstance(y, str):
                if abs(float(x) - float(y)) > 1e-9 * max(p.upper - p.lower, 1e-300):
                    return False
            elif x != y:
                return False
        return True

    def to_unit(self, stimulus: Mapping[str, RawValue]) -> np.ndarray:
        """A validated stimulus -> its d free coordinates in [0, 1]."""
        return np.array([p.to_unit(stimulus[p.name]) for p in self.free], dtype=float)

    def from_unit(self, u: Sequence[float] | np.ndarray) -> Stimulus:
        """d coordinates in [0, 1] -> a stimulus with every parameter (fixed ones included)."""
        free = iter(u)
        out: Stimulus = {}
        for p in self.parameters:
            out[p.name] = p.from_unit(next(free)) if p.is_free else p.from_unit(0.5)
        return out

    def fixed_unit(self, values: Mapping[str, RawValue]) -> dict[int, float]:
        """Validated partial values -> {free dimension index: unit value}."""
        index = {p.name: i for i, p in enumerate(self.free)}
        return {index[n]: self.by_name[n].to_unit(v) for n, v in values.items() if n in index}
