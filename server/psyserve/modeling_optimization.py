"""Compute jobs of Ax-style optimisation strategies, built from a strategy's trials.

Owns the translation strategy -> OptimizationProblem / MetricData / pending points (unit cube, linear
constraints mapped from raw units) for modeling.PoolModelEngine. Never mutates a strategy, never
touches the journal, the pool or a transport.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .compute.optimization import (
    LinearBound,
    MetricData,
    MetricObjective,
    OptimizationGenerateJob,
    OptimizationProblem,
    OptimizationReadoutJob,
    OptimizationState,
    OutcomeBound,
)
from .params import ParamType
from .strategy import COMPLETED, PENDING, Strategy


def problem_of(strategy: Strategy) -> OptimizationProblem:
    """Objectives, outcome constraints and unit-cube linear constraints of a strategy."""
    opt = strategy.spec.optimization
    assert opt is not None
    metrics = opt.modelled_metrics
    free = strategy.spec.space.free
    index = {p.name: i for i, p in enumerate(free)}
    linear = []
    for c in opt.parameter_constraints:
        # x = lower + u * (upper - lower) for every constrained (linear, range) parameter
        coefficients = [0.0] * len(free)
        bound = c.bound
        for name, w in c.coefficients:
            p = free[index[name]]
            coefficients[index[name]] = w * (p.upper - p.lower)
            bound -= w * p.lower
        linear.append(LinearBound(tuple(coefficients), bound))
    return OptimizationProblem(
        dim=strategy.spec.space.dim,
        metrics=metrics,
        objectives=tuple(MetricObjective(metrics.index(o.metric), o.minimize, o.threshold) for o in opt.objectives),
        outcome_constraints=tuple(OutcomeBound(metrics.index(c.metric), c.upper, c.bound) for c in opt.outcome_constraints),
        linear_constraints=tuple(linear),
        categorical=tuple(
            (i, len(p.choices)) for i, p in enumerate(free) if p.type is ParamType.CATEGORICAL and not p.is_ordered and len(p.choices) >= 3
        ),
    )


def metric_data(strategy: Strategy) -> tuple[MetricData, list[int]]:
    """Completed model-data trials in trial order -> (X n x d, Y / Yvar n x m; NaN: none) and their ids."""
    opt = strategy.spec.optimization
    assert opt is not None
    metrics = opt.modelled_metrics
    space = strategy.spec.space
    rows = [t for t in strategy.trials.values() if t.state == COMPLETED and t.model_data]
    X = np.array([space.to_unit(t.stimuli[0]) for t in rows], dtype=float).reshape(len(rows), space.dim)
    Y = np.full((len(rows), len(metrics)), math.nan)
    Yvar = np.full((len(rows), len(metrics)), math.nan)
    for i, t in enumerate(rows):
        for o in t.outcomes:
            if o.name in metrics:
                j = metrics.index(o.name)
                Y[i, j] = o.value
                if o.sem is not None:
                    Yvar[i, j] = o.sem**2
    return MetricData(X=X, Y=Y, Yvar=Yvar), [t.trial_id for t in rows]


def pending_points(strategy: Strategy) -> tuple[np.ndarray, tuple[int, ...]]:
    """Points of trials asked (or attached) and not yet told: the acquisition's X_pending."""
    space = strategy.spec.space
    trials = [t for t in strategy.trials.values() if t.state == PENDING]
    X = np.array([space.to_unit(t.stimuli[0]) for t in trials], dtype=float).reshape(len(trials), space.dim)
    return X, tuple(t.trial_id for t in trials)


def generate_job(
    strategy: Strategy, phase_index: int, n: int, fixed: dict[int, float], seed: int, warm: Any
) -> tuple[tuple[Any, ...], OptimizationGenerateJob]:
    """The job for the next n points and the parts of its cache key beyond the data key."""
    phase = strategy.spec.phases[phase_index]
    data, _ = metric_data(strategy)
    pending, pending_ids = pending_points(strategy)
    job = OptimizationGenerateJob(
        problem=problem_of(strategy),
        data=data,
        pending=pending,
        num_points=n,
        seed=seed,
        options=dict(phase.generator_options),
        fixed=dict(fixed),
        warm_state=warm if isinstance(warm, OptimizationState) else None,
    )
    return ("optimization", pending_ids), job


def readout_job(strategy: Strategy, kind: str, use_model: bool, x: np.ndarray | None, warm: Any) -> tuple[OptimizationReadoutJob, list[int]]:
    data, trial_ids = metric_data(strategy)
    job = OptimizationReadoutJob(
        problem=problem_of(strategy),
        data=data,
        kind=kind,
        use_model=use_model,
        seed=strategy.seed & 0x7FFFFFFF,
        x=x,
        warm_state=warm if isinstance(warm, OptimizationState) else None,
    )
    return job, trial_ids
