"""Read-outs of the Ax-style optimisation jobs: best point, Pareto front, model predictions and the
optimisation trace, from the per-metric GPs of compute/optimization_numerics.py. Imports torch/BoTorch,
the contract (compute/optimization.py) and optimization_numerics only; no server state or I/O."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from psyserve.compute.optimization import OptimizationReadoutJob, OptimizationReadoutResult
from psyserve.compute.optimization_numerics import (
    DTYPE,
    _feasible,
    _fit,
    _metric_rows,
    _reference_point,
    _seeded,
    _signed_objectives,
)

__all__ = ["readout"]


def _predict(models: list, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Xt = torch.tensor(X, dtype=DTYPE)
    means, sems = [], []
    with torch.no_grad():
        for model in models:
            posterior = model.posterior(Xt)
            means.append(posterior.mean.reshape(-1).numpy())
            sems.append(posterior.variance.clamp_min(0).sqrt().reshape(-1).numpy())
    return np.stack(means, axis=-1), np.stack(sems, axis=-1)


def _hypervolume(signed: np.ndarray, ref: np.ndarray) -> float:
    from botorch.utils.multi_objective.hypervolume import Hypervolume
    from botorch.utils.multi_objective.pareto import is_non_dominated

    better = signed[np.all(signed > ref, axis=1)]
    if not len(better):
        return 0.0
    Y = torch.tensor(better, dtype=DTYPE)
    return float(Hypervolume(torch.tensor(ref, dtype=DTYPE)).compute(Y[is_non_dominated(Y)]))


def readout(job: OptimizationReadoutJob) -> OptimizationReadoutResult:
    from botorch.utils.multi_objective.pareto import is_non_dominated

    problem, data = job.problem, job.data
    m = len(problem.metrics)
    empty = np.zeros((0, m))
    fit_seconds = 0.0
    observed_sem = np.sqrt(np.where(np.isfinite(data.Yvar), np.maximum(data.Yvar, 0.0), np.nan))
    needs_model = job.kind == "predict" or (job.use_model and job.kind in ("best", "pareto"))
    values, sems = data.Y, observed_sem
    if needs_model:
        counts = [int(_metric_rows(data, j).sum()) for j in range(m)]
        if min(counts, default=0) == 0:
            raise ValueError("no model yet: a metric has no observations")
        with _seeded(job.seed):
            t0 = time.perf_counter()
            models, _ = _fit(problem, data, job.warm_state, 200)
            fit_seconds = time.perf_counter() - t0
            if job.kind == "predict":
                assert job.x is not None
                mean, sem = _predict(models, np.asarray(job.x, dtype=float))
                return OptimizationReadoutResult(list(range(len(mean))), mean, sem, np.zeros(0), fit_seconds)
            values, sems = _predict(models, data.X)
    if job.kind == "trace":
        trace = np.full(len(data.X), math.nan)
        feasible = _feasible(problem, data.Y)
        if len(problem.objectives) == 1:
            o = problem.objectives[0]
            best = math.nan
            for i in range(len(data.X)):
                if feasible[i]:
                    v = float(data.Y[i, o.index])
                    best = v if math.isnan(best) else (min(best, v) if o.minimize else max(best, v))
                trace[i] = best
        else:
            ref = _reference_point(problem, data.Y)
            signed = _signed_objectives(problem, data.Y)
            for i in range(len(data.X)):
                so_far = feasible[: i + 1]
                trace[i] = _hypervolume(signed[: i + 1][so_far], ref) if so_far.any() else math.nan
        return OptimizationReadoutResult([], empty, empty, trace, fit_seconds)
    feasible = _feasible(problem, values)
    candidates = np.flatnonzero(feasible)
    rows: list[int] = []
    if len(candidates):
        signed = _signed_objectives(problem, values[candidates])
        if job.kind == "best":
            if len(problem.objectives) != 1:
                raise ValueError("best parameters need one objective; use the Pareto front for several")
            rows = [int(candidates[int(np.argmax(signed[:, 0]))])]
        else:
            mask = is_non_dominated(torch.tensor(signed, dtype=DTYPE), deduplicate=True).numpy()
            rows = [int(r) for r in np.asarray(candidates)[mask]]
    return OptimizationReadoutResult(
        rows, values[rows] if rows else empty, sems[rows] if rows else empty, np.zeros(0), fit_seconds
    )
