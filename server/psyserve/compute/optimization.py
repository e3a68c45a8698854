"""The contract of Ax-style optimisation jobs (one GP per metric, qLogNEI / qLogNEHVI): picklable problem,
data, job and result types and their checks. Torch-free; must not touch server state or I/O (entry points:
optimization_jobs, numerics: optimization_numerics)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "READOUTS",
    "LinearBound",
    "MetricData",
    "MetricObjective",
    "OptimizationGenerateJob",
    "OptimizationGenerateResult",
    "OptimizationProblem",
    "OptimizationReadoutJob",
    "OptimizationReadoutResult",
    "OptimizationState",
    "OutcomeBound",
    "check_problem",
]

READOUTS = ("best", "pareto", "predict", "trace")


@dataclass(frozen=True)
class MetricObjective:
    """Objective on metric column `index` of the data (minimised or maximised)."""

    index: int
    minimize: bool
    threshold: float | None = None


@dataclass(frozen=True)
class OutcomeBound:
    """Metric column `index` must be <= bound (upper) or >= bound."""

    index: int
    upper: bool
    bound: float


@dataclass(frozen=True)
class LinearBound:
    r"""``sum(coefficients * u) <= bound`` on the unit cube ``[0, 1]^d`` (``coefficients``: ``d``)."""

    coefficients: tuple[float, ...]
    bound: float


@dataclass(frozen=True)
class OptimizationProblem:
    r"""The unit cube ``[0, 1]^dim``, ``metrics`` (one GP each), objectives and constraints."""

    dim: int
    metrics: tuple[str, ...]
    objectives: tuple[MetricObjective, ...]
    outcome_constraints: tuple[OutcomeBound, ...] = ()
    linear_constraints: tuple[LinearBound, ...] = ()
    # unordered choice parameters: (dimension, number of choices); choice i sits at u = i / (k - 1)
    # and the GPs see only whether two points share it (a categorical kernel), never its rank
    categorical: tuple[tuple[int, int], ...] = ()

    def feasible_unit(self, U: np.ndarray, tolerance: float = 1e-9) -> np.ndarray:
        r"""Which rows of ``U`` (``n x dim``) satisfy every linear constraint."""
        ok = np.ones(len(U), dtype=bool)
        for c in self.linear_constraints:
            ok &= U @ np.asarray(c.coefficients) <= c.bound + tolerance * max(1.0, abs(c.bound))
        return ok


@dataclass
class MetricData:
    r"""Observations: ``X`` ``n x d`` (unit cube), ``Y`` ``n x m`` (NaN: not observed), ``Yvar``
    ``n x m`` (squared SEM; NaN: unknown, the GP infers the noise of that metric)."""

    X: np.ndarray
    Y: np.ndarray
    Yvar: np.ndarray


@dataclass
class OptimizationState:
    r"""Fitted hyper-parameters per metric (``name -> nested lists``) for warm starts."""

    hyperparameters: list[dict[str, list]]
    n_train: int


@dataclass
class OptimizationGenerateJob:
    r"""Fit one GP per metric and propose ``num_points`` points (``pending``: ``p x d`` points
    asked but not yet told, the acquisition's ``X_pending``).

    options: ``restarts`` (5), ``samps`` (raw samples, 256), ``mc_samples`` (64), ``maxiter``
    (acquisition L-BFGS/SLSQP iterations, 200), ``fit_maxiter`` (GP fit, 200), ``cache_root`` (1),
    ``bilog`` (1: outcome-constraint metrics modelled through Ax's BilogY), ``acqf`` ("auto";
    "qlogehvi", "analytic_ehvi", "analytic", "mc": the fast paths of optimization_numerics)."""

    problem: OptimizationProblem
    data: MetricData
    pending: np.ndarray
    num_points: int
    seed: int
    options: dict[str, float | int | str] = field(default_factory=dict)
    fixed: dict[int, float] = field(default_factory=dict)
    warm_state: OptimizationState | None = None


@dataclass
class OptimizationGenerateResult:
    r"""points: ``num_points x d`` in ``[0, 1]``, each satisfying the linear constraints."""

    points: np.ndarray
    state: OptimizationState | None
    fit_seconds: float
    generate_seconds: float
    level_probabilities: np.ndarray | None = None  # never set: the model engine reads it off every result (ordinal models)


@dataclass
class OptimizationReadoutJob:
    r"""kind: "best" (one row), "pareto" (rows), "predict" (at ``x``, ``k x d``), "trace" (observed).
    ``use_model``: predicted values at the observed rows (best, pareto) instead of the observations."""

    problem: OptimizationProblem
    data: MetricData
    kind: str
    use_model: bool
    seed: int
    x: np.ndarray | None = None
    warm_state: OptimizationState | None = None


@dataclass
class OptimizationReadoutResult:
    r"""rows: indices into the data (best, pareto); mean / sem: ``k x m`` at those rows (or at ``x``);
    trace: one value per data row (best feasible objective so far, or hypervolume; NaN before
    the first feasible row)."""

    rows: list[int]
    mean: np.ndarray
    sem: np.ndarray
    trace: np.ndarray
    fit_seconds: float


def check_problem(problem: OptimizationProblem, data: MetricData) -> None:
    d, m = int(problem.dim), len(problem.metrics)
    if d < 1 or m < 1 or not problem.objectives:
        raise ValueError("an optimisation problem needs a dimension, metrics and an objective")
    if data.X.ndim != 2 or data.X.shape[1] != d:
        raise ValueError(f"X must be n x {d}, got {data.X.shape}")
    if data.Y.shape != (len(data.X), m) or data.Yvar.shape != data.Y.shape:
        raise ValueError(f"Y and Yvar must be {len(data.X)} x {m}")
    for o in problem.objectives:
        if not 0 <= o.index < m:
            raise ValueError(f"objective index {o.index} out of range")
    for c in problem.outcome_constraints:
        if not 0 <= c.index < m or not math.isfinite(c.bound):
            raise ValueError(f"outcome constraint on column {c.index} is invalid")
    for dim, k in problem.categorical:
        if not 0 <= dim < d or k < 2:
            raise ValueError(f"categorical dimension {dim} with {k} choices is invalid")
    for lc in problem.linear_constraints:
        if len(lc.coefficients) != d:
            raise ValueError("linear constraint coefficients must have one entry per dimension")
