"""Entry points of the Ax-style optimisation jobs, run in the compute pool (or on Dask workers).
Torch-free at import: the numerics (optimization_numerics) load inside the job; no server state or I/O."""

from __future__ import annotations

from psyserve.compute.optimization import (
    READOUTS,
    OptimizationGenerateJob,
    OptimizationGenerateResult,
    OptimizationReadoutJob,
    OptimizationReadoutResult,
    check_problem,
)

__all__ = ["optimization_generate", "optimization_readout"]


def optimization_generate(job: OptimizationGenerateJob) -> OptimizationGenerateResult:
    """Fit the per-metric GPs and optimise qLogNEI (one objective) or qLogNEHVI (several) under
    the outcome and linear constraints; quasi-random feasible points while a metric has no data."""
    check_problem(job.problem, job.data)
    if int(job.num_points) < 1:
        raise ValueError(f"num_points must be >= 1, got {job.num_points!r}")
    from psyserve.compute.optimization_numerics import generate_points

    return generate_points(job)


def optimization_readout(job: OptimizationReadoutJob) -> OptimizationReadoutResult:
    """Best point, Pareto front, predictions or trace (see OptimizationReadoutJob)."""
    check_problem(job.problem, job.data)
    if job.kind not in READOUTS:
        raise ValueError(f"unknown read-out {job.kind!r} (known: {list(READOUTS)})")
    from psyserve.compute.optimization_readout import readout

    return readout(job)
