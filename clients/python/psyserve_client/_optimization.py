"""Requests and replies of the optimisation RPCs (typed experiments, metrics with SEM, attach,
best point, Pareto front, predictions, trace), shared by Client, AsyncClient and the AxClient facade.

Protocol details only; experiment logic stays on the server.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._common import Call, ConfigureResult, TellResult, Trial, parse_parameter, parse_summary, parse_trial
from ._proto.psyserve.v1 import messages_pb2 as pb
from .wire import Value, from_stimulus, to_value, to_values

_VALUE_TYPES = {"float": pb.VALUE_TYPE_FLOAT, "int": pb.VALUE_TYPE_INT, "str": pb.VALUE_TYPE_STR, "bool": pb.VALUE_TYPE_BOOL}
_METHODS = {"fast": pb.GENERATION_METHOD_FAST, "random_search": pb.GENERATION_METHOD_RANDOM_SEARCH}


@dataclass(frozen=True)
class ArmEstimate:
    """Means and SEMs (NaN: unknown) of every modelled metric at one parameterisation."""

    trial_id: int
    parameters: dict[str, Value]
    means: dict[str, float]
    sems: dict[str, float]


@dataclass(frozen=True)
class Objective:
    metric: str
    minimize: bool = False
    threshold: float | None = None


@dataclass(frozen=True)
class GenerationStrategy:
    """method "fast" (quasi-random, then Bayesian optimisation) or "random_search"."""

    method: str = "fast"
    initialization_trials: int | None = None
    seed: int | None = None
    max_parallelism: int = 0
    num_restarts: int = 0
    raw_samples: int = 0


@dataclass(frozen=True)
class ExperimentDefinition:
    """A typed experiment. parameters: Ax's dicts ({"name", "type": range|choice|fixed, "bounds",
    "values", "value", "value_type", "log_scale", "digits", "is_ordered"})."""

    parameters: Sequence[Mapping[str, Any]]
    objectives: Sequence[Objective]
    parameter_constraints: Sequence[str] = ()
    outcome_constraints: Sequence[str] = ()
    tracking_metrics: Sequence[str] = ()
    generation_strategy: GenerationStrategy = field(default_factory=GenerationStrategy)


_PARAMETER_KEYS = {"name", "type", "bounds", "values", "value", "value_type", "log_scale", "digits", "is_ordered", "sort_values", "target_value"}


def parameter_to_pb(spec: Mapping[str, Any], index: int) -> pb.ParameterConfig:
    """One Ax parameter dict -> ParameterConfig (bad keys raise ValueError naming the parameter)."""
    where = f"parameters[{index}] ({spec.get('name', '?')!r})"
    unknown = sorted(set(spec) - _PARAMETER_KEYS)
    if unknown:
        raise ValueError(f"{where}: unsupported key(s) {unknown} (is_fidelity, is_task and dependents are not supported)")
    if "name" not in spec or "type" not in spec:
        raise ValueError(f"{where}: needs 'name' and 'type'")
    msg = pb.ParameterConfig(name=str(spec["name"]))
    kind = spec["type"]
    value_type = spec.get("value_type")
    if value_type is not None and value_type not in _VALUE_TYPES:
        raise ValueError(f"{where}: value_type must be one of {list(_VALUE_TYPES)}, got {value_type!r}")
    if kind == "range":
        bounds = spec.get("bounds")
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            raise ValueError(f"{where}: a range parameter needs bounds [lower, upper]")
        if value_type is None:  # Ax infers the type from the bounds
            value_type = "int" if all(isinstance(b, int) and not isinstance(b, bool) for b in bounds) else "float"
        msg.range.lower, msg.range.upper = float(bounds[0]), float(bounds[1])
        msg.range.value_type = _VALUE_TYPES[value_type]
        msg.range.log_scale = bool(spec.get("log_scale", False))
        if spec.get("digits") is not None:
            msg.range.digits = int(spec["digits"])
    elif kind == "choice":
        values = list(spec.get("values") or [])
        if not values:
            raise ValueError(f"{where}: a choice parameter needs values")
        if value_type == "float":
            values = [float(v) for v in values]
        elif value_type == "int":
            values = [int(v) for v in values]
        elif value_type == "str":
            values = [str(v) for v in values]
        is_ordered = spec.get("is_ordered")
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if spec.get("sort_values", numeric and bool(is_ordered)):
            values = sorted(values)
        msg.choice.values.extend(to_value(v) for v in values)
        msg.choice.is_ordered = bool(is_ordered) if is_ordered is not None else len(values) == 2 or numeric
    elif kind == "fixed":
        if "value" not in spec:
            raise ValueError(f"{where}: a fixed parameter needs a value")
        msg.fixed.value.CopyFrom(to_value(spec["value"]))
    else:
        raise ValueError(f"{where}: type must be range, choice or fixed, got {kind!r}")
    return msg


def experiment_to_pb(definition: ExperimentDefinition) -> pb.ExperimentConfig:
    gs = definition.generation_strategy
    if gs.method not in _METHODS:
        raise ValueError(f"generation_strategy.method must be one of {list(_METHODS)}, got {gs.method!r}")
    msg = pb.ExperimentConfig(parameters=[parameter_to_pb(p, i) for i, p in enumerate(definition.parameters)])
    opt = msg.optimization
    for o in definition.objectives:
        objective = opt.objectives.add(metric=o.metric, minimize=o.minimize)
        if o.threshold is not None:
            objective.threshold = float(o.threshold)
    opt.parameter_constraints.extend(definition.parameter_constraints)
    opt.outcome_constraints.extend(definition.outcome_constraints)
    opt.tracking_metrics.extend(definition.tracking_metrics)
    g = opt.generation_strategy
    g.method = _METHODS[gs.method]
    if gs.initialization_trials is not None:
        g.initialization_trials = gs.initialization_trials
    if gs.seed is not None:
        g.seed = gs.seed
    g.max_parallelism, g.num_restarts, g.raw_samples = gs.max_parallelism, gs.num_restarts, gs.raw_samples
    return msg


def configure_experiment(
    definition: ExperimentDefinition, name: str = "", metadata: Mapping[str, str] | None = None, request_id: str = ""
) -> Call[ConfigureResult]:
    request = pb.ConfigureRequest(experiment=experiment_to_pb(definition), name=name, metadata=dict(metadata or {}), request_id=request_id)
    return Call(
        "Configure",
        request,
        lambda r: ConfigureResult(r.strategy_id, [parse_parameter(p) for p in r.parameters], list(r.warnings), parse_summary(r.summary)),
    )


MetricValue = float | int | tuple[float, float | None] | Sequence[float | None]


def metric_outcomes(raw: MetricValue | Mapping[str, MetricValue], default_metric: str = "") -> list[pb.Outcome]:
    """Ax's raw_data: mean | (mean, sem) | {metric: mean | (mean, sem)}; sem None: unknown noise."""

    def one(name: str, value: Any) -> pb.Outcome:
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError(f"metric {name or 'value'!r}: expected (mean, sem), got {value!r}")
            mean, sem = value
        else:
            mean, sem = value, None
        if isinstance(mean, bool) or not isinstance(mean, (int, float)):
            try:
                mean = float(mean)  # numpy scalars
            except (TypeError, ValueError):
                raise ValueError(f"metric {name or 'value'!r}: the mean must be a number, got {mean!r}") from None
        msg = pb.Outcome(name=name, value=float(mean))
        if sem is not None and not (isinstance(sem, float) and math.isnan(sem)):
            msg.sem = float(sem)
        return msg

    if isinstance(raw, Mapping):
        return [one(str(k), v) for k, v in raw.items()]
    return [one(default_metric, raw)]


def tell_metrics(
    strategy_id: int,
    trial_id: int,
    raw_data: Any,
    metadata: Mapping[str, Any] | None = None,
    sample_size: int | None = None,
    default_metric: str = "",
) -> Call[TellResult]:
    request = pb.TellRequest(
        strategy_id=strategy_id,
        trial_id=trial_id,
        outcomes=metric_outcomes(raw_data, default_metric),
        metadata={str(k): str(v) for k, v in (metadata or {}).items()},
    )
    if sample_size is not None:
        request.sample_size = int(sample_size)
    return Call(
        "Tell",
        request,
        lambda r: TellResult(r.trial_id, r.trials_recorded, r.model_data_added, r.duplicate, r.trials_completed, r.is_finished),
    )


def parse_arm(a: pb.ArmEstimate) -> ArmEstimate:
    return ArmEstimate(
        trial_id=a.trial_id,
        parameters=from_stimulus(a.parameters),
        means={e.metric: e.mean for e in a.estimates},
        sems={e.metric: e.sem for e in a.estimates},
    )


def attach_trial(strategy_id: int, parameters: Mapping[str, Value], ttl_seconds: float = 0.0, request_id: str = "") -> Call[Trial]:
    request = pb.AttachTrialRequest(
        strategy_id=strategy_id, parameters=pb.Stimulus(values=to_values(parameters)), ttl_seconds=ttl_seconds, request_id=request_id
    )
    return Call("AttachTrial", request, lambda r: parse_trial(r.trial))


def best_parameters(strategy_id: int, use_model: bool = True) -> Call[ArmEstimate | None]:
    request = pb.GetBestParametersRequest(strategy_id=strategy_id, use_observed=not use_model)
    return Call("GetBestParameters", request, lambda r: parse_arm(r.best) if r.found else None)


def pareto_front(strategy_id: int, use_model: bool = True) -> Call[list[ArmEstimate]]:
    request = pb.GetParetoFrontRequest(strategy_id=strategy_id, use_observed=not use_model)
    return Call("GetParetoFront", request, lambda r: [parse_arm(a) for a in r.front])


def predict_metrics(strategy_id: int, parameters: Sequence[Mapping[str, Value]], metrics: Sequence[str] = ()) -> Call[list[ArmEstimate]]:
    request = pb.PredictMetricsRequest(
        strategy_id=strategy_id, parameters=[pb.Stimulus(values=to_values(p)) for p in parameters], metrics=list(metrics)
    )
    return Call("PredictMetrics", request, lambda r: [parse_arm(a) for a in r.predictions])


def optimization_trace(strategy_id: int) -> Call[list[tuple[int, float]]]:
    return Call(
        "GetOptimizationTrace", pb.GetOptimizationTraceRequest(strategy_id=strategy_id), lambda r: [(p.trial_id, p.value) for p in r.points]
    )
