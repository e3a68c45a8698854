"""The job entry points a pool worker runs: worker_init, fit_state, generate, query.

Validates a job against the contract, seeds it, and calls the numerics below (models, factory,
optimize, predict), which it imports inside the functions so that the server process can import
this module (to hand the functions to the pool) without loading torch. Touches no server state or I/O.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from psyserve.compute.contract import (
    CLASSIFICATION,
    INDEPENDENT,
    KNOWN_MODELS,
    GenerateJob,
    GenerateResult,
    GeneratorSpec,
    ModelSpec,
    ModelState,
    QueryJob,
    QueryJobResult,
    TrainingData,
    acqf_supports,
    canonical_acqf,
    joined_state,
    opt_int,
    part_state,
    validate_fixed,
    validate_model_data,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from psyserve.compute.models import FittedModel

__all__ = ["fit_state", "generate", "query", "worker_init"]


@contextlib.contextmanager
def _job_context(seed: int) -> Iterator[None]:
    r"""Seed torch and numpy (restoring the caller's RNG states afterwards); silence numerical chatter."""
    import torch

    np_state = np.random.get_state()  # PairwiseGP's Laplace solver draws from numpy's global RNG
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            _silence_warnings()
            torch.manual_seed(int(seed) % (2**63))
            np.random.seed(int(seed) % (2**32))
            yield
    finally:
        np.random.set_state(np_state)


def _silence_warnings() -> None:
    from botorch.exceptions.warnings import BotorchWarning
    from gpytorch.utils.warnings import GPInputWarning
    from linear_operator.utils.warnings import NumericalWarning

    for cat in (BotorchWarning, NumericalWarning, GPInputWarning):
        warnings.filterwarnings("ignore", category=cat)
    warnings.filterwarnings("ignore", message=".*[Ii]nput data is not.*")
    warnings.filterwarnings("ignore", message=".*not p.d., added jitter.*")


# --------------------------------------------------------------------------- jobs


def _fit(
    spec: ModelSpec,
    data: TrainingData,
    warm_state: ModelState | None,
    refit: bool,
) -> FittedModel:
    from psyserve.compute.models import fit_model

    X, y = validate_model_data(spec, data)
    return fit_model(spec, X, y, warm_state=warm_state, refit=refit)


def _fit_parts(
    spec: ModelSpec, data: TrainingData, warm_state: ModelState | None, refit: bool
) -> tuple[list[FittedModel], ModelState, float]:
    r"""IndependentGPsModel: each part fitted on its own column of ``y`` (its warm state from the joined one)."""
    from psyserve.compute.models import fit_model

    X, Y = validate_model_data(spec, data)
    fitted = [
        fit_model(part, X, Y[:, i], warm_state=part_state(warm_state, i, part.kind), refit=refit) for i, part in enumerate(spec.parts)
    ]
    state = joined_state([f.state for f in fitted], int(X.shape[0]))
    return fitted, state, sum(f.fit_seconds for f in fitted)


def _generate_independent(job: GenerateJob, fixed: dict[int, float]) -> GenerateResult:
    r"""AEPsych's IndependentOptimizeAcqfGenerator: each part's own acquisition on its own model; every
    point is optimised with the points already chosen in this ask pending. AEPsych returns one point per
    part for each point asked (in a random order); psyserve returns the number of points asked, the parts
    taking turns: point ``j`` of the ask comes from part ``(turn + j) mod parts``, ``turn`` (generator
    option) counting the phase's asks, so that every outcome gets its share of the trials."""
    import torch

    from psyserve.compute.optimize import generate_points

    if len(job.generator.parts) != len(job.model.parts):
        raise ValueError(f"{len(job.model.parts)} model parts need as many generators, got {len(job.generator.parts)}")
    for part, gen in zip(job.model.parts, job.generator.parts, strict=True):
        if not acqf_supports(part.kind, canonical_acqf(gen.acqf)):
            raise ValueError(f"acquisition function {gen.acqf!r} does not support model {part.kind!r}")
    fitted, state, fit_s = _fit_parts(job.model, job.data, job.warm_state, job.refit)
    t0 = time.perf_counter()
    turn = opt_int(job.generator.options, "turn", 0)
    chosen: list[np.ndarray] = []
    for j in range(int(job.num_points)):
        i = (turn + j) % len(fitted)
        pending = torch.as_tensor(np.stack(chosen), dtype=torch.float64) if chosen else None
        chosen.append(generate_points(fitted[i], job.generator.parts[i], 1, fixed, int(job.seed) + 7 * j, pending=pending)[0])
    return GenerateResult(points=np.stack(chosen), state=state, fit_seconds=fit_s, generate_seconds=time.perf_counter() - t0)


def fit_state(
    model: ModelSpec,
    data: TrainingData,
    seed: int,
    warm_state: ModelState | None = None,
    refit: bool = True,
) -> tuple[ModelState, float]:
    r"""Fit ``model`` on ``data`` (``n x d``; pairwise ``n x 2 x d``).

    Returns:
        ``(state, fit_seconds)``. ``refit=False`` with a ``warm_state`` of the same kind
        keeps its hyper-parameters and only conditions on the data; without a usable
        ``warm_state`` a full fit is done.
    """
    with _job_context(seed):
        if model.kind == INDEPENDENT:
            _, state, seconds = _fit_parts(model, data, warm_state, refit)
            return state, seconds
        fitted = _fit(model, data, warm_state, refit)
    return fitted.state, fitted.fit_seconds


def generate(job: GenerateJob) -> GenerateResult:
    r"""Fit the model and propose ``job.num_points`` new points.

    Returns:
        A ``GenerateResult`` whose ``points`` are ``num_points x d`` in ``[0, 1]``
        (pairwise: ``num_points x 2 x d``) with ``job.fixed`` dimensions set exactly.

    Raises:
        ValueError: unknown model / acquisition, unsupported combination, bad data.
    """
    if int(job.num_points) < 1:
        raise ValueError(f"num_points must be >= 1, got {job.num_points!r}")
    if job.model.kind == INDEPENDENT:
        fixed_parts = validate_fixed(job.fixed, int(job.model.dim))
        with _job_context(job.seed):
            return _generate_independent(job, fixed_parts)
    name = canonical_acqf(job.generator.acqf)
    if job.model.kind not in KNOWN_MODELS:
        raise ValueError(f"unknown model {job.model.kind!r}")
    if not acqf_supports(job.model.kind, name, job.model.options):
        raise ValueError(f"acquisition function {job.generator.acqf!r} does not support model {job.model.kind!r}")
    if int(job.num_points) < 1:
        raise ValueError(f"num_points must be >= 1, got {job.num_points!r}")
    fixed = validate_fixed(job.fixed, int(job.model.dim))
    with _job_context(job.seed):
        from psyserve.compute.optimize import generate_points

        fitted = _fit(job.model, job.data, job.warm_state, job.refit)
        t0 = time.perf_counter()
        points = generate_points(fitted, job.generator, int(job.num_points), fixed, int(job.seed))
        gen_s = time.perf_counter() - t0
        levels = None
        if fitted.cutpoints is not None:  # ordinal: how likely each answer is at the new points
            from psyserve.compute.predict import predict

            levels = predict(fitted, points.reshape(len(points), -1), probability_space=False)["level_probabilities"]
    return GenerateResult(
        points=points, state=fitted.state, fit_seconds=fitted.fit_seconds, generate_seconds=gen_s, level_probabilities=levels
    )


def query(job: QueryJob) -> QueryJobResult:
    r"""Answer a max / min / prediction / inverse query about the fitted model.

    "prediction" evaluates at ``job.x`` (``m x d``); "max"/"min" optimise the posterior
    mean (latent, or the response probability when ``probability_space`` for
    classification) over the non-fixed dims; "inverse" finds the ``x`` whose prediction
    is closest to ``job.y``. All outputs are length-``m`` arrays (``m = 1`` except
    "prediction").
    """
    qtype = job.query_type
    if qtype not in ("max", "min", "prediction", "inverse"):
        raise ValueError(f"unknown query type {qtype!r}")
    fixed = validate_fixed(job.fixed, int(job.model.dim))
    x_arr: np.ndarray | None = None
    if qtype == "prediction":
        if job.x is None:
            raise ValueError("prediction query needs x")
        x_arr = np.asarray(job.x, dtype=np.float64)
        if x_arr.ndim == 1:
            x_arr = x_arr.reshape(1, -1)
        if x_arr.ndim != 2 or x_arr.shape[1] != int(job.model.dim):
            raise ValueError(f"query x must have shape (m, {job.model.dim}), got {np.shape(job.x)}")
        if not np.all(np.isfinite(x_arr)):
            raise ValueError("query x contains NaN or infinite values")
    if qtype == "inverse" and (job.y is None or not math.isfinite(float(job.y))):
        raise ValueError("inverse query needs a finite target y")
    with _job_context(job.seed):
        from psyserve.compute.predict import optimize_prediction, predict

        fitted = _fit(job.model, job.data, job.state, refit=job.state is None)
        if qtype != "prediction":
            x_arr = optimize_prediction(
                fitted,
                qtype,
                probability_space=bool(job.probability_space),
                target=None if job.y is None else float(job.y),
                fixed=fixed,
                seed=int(job.seed),
            )
        assert x_arr is not None
        pred = predict(fitted, x_arr, probability_space=bool(job.probability_space))
    return QueryJobResult(
        x=x_arr,
        mean=pred["mean"],
        variance=pred["variance"],
        probability=pred["probability"],
        lower=pred["lower"],
        upper=pred["upper"],
        state=fitted.state,
        fit_seconds=fitted.fit_seconds,
        level_probabilities=pred.get("level_probabilities"),
    )


def _scan_thread_pools_once() -> None:
    r"""Make BoTorch's per-optimisation ``threadpool_limits(limits=1, user_api="blas")`` cheap.

    BoTorch wraps every L-BFGS run (each model fit and each acquisition optimisation) in
    threadpoolctl's ``threadpool_limits``, which rescans the process's shared libraries every
    time: about 3 ms per call here, a tenth of a whole warm fit. A warm worker loads no new
    BLAS, so one ``ThreadpoolController`` scan is reused; the limits are still applied and
    restored around each run exactly as before.
    """
    try:
        import botorch.generation.gen as gen_module
        import botorch.optim.utils.timeout as timeout_module
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - layout of another BoTorch release
        return
    controller = ThreadpoolController()

    def threadpool_limits(limits: int | None = None, user_api: str | None = None) -> Any:
        return controller.limit(limits=limits, user_api=user_api)

    for module in (gen_module, timeout_module):
        if hasattr(module, "threadpool_limits"):
            setattr(module, "threadpool_limits", threadpool_limits)  # noqa: B010 - patching a module attribute


def worker_init() -> None:
    r"""Process-pool initializer: one thread per BLAS / OpenMP pool, heavy imports done, warnings silenced."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only allowed before any inter-op work
        torch.set_num_interop_threads(1)
    import botorch  # noqa: F401
    import gpytorch  # noqa: F401

    import psyserve.compute.models
    import psyserve.compute.optimize
    import psyserve.compute.predict  # noqa: F401

    _silence_warnings()
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(botorch|gpytorch|linear_operator)")
    # A worker is one thread by design (the pool has one worker per core). NumPy's and SciPy's
    # OpenBLAS otherwise start a thread per core and hand small solves to them: on 2 cores a
    # 40 x 10 triangular solve then took 3 ms instead of 0.2 ms (and L-BFGS-B's own BLAS too).
    threadpool_limits(limits=1)
    _scan_thread_pools_once()
    # one tiny job so that the first real job does not pay for lazy initialisation (~0.4 s)
    with contextlib.suppress(Exception):
        X = np.array([[0.2, 0.3], [0.8, 0.6], [0.5, 0.9]])
        generate(
            GenerateJob(
                ModelSpec(CLASSIFICATION, 2, {}),
                GeneratorSpec("MCLevelSetEstimation", {"restarts": 2, "samps": 16, "maxiter": 5}),
                TrainingData(X, np.array([0.0, 1.0, 1.0])),
                num_points=1,
                seed=0,
            )
        )
