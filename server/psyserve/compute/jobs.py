"""Pure job functions and their picklable contract (specs, data, results) for psyserve's compute process pool.
Must not touch server state, I/O, sockets or parameter (de)normalisation; stays torch-free at import time."""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from psyserve.compute.models import FittedModel

__all__ = [
    "ACQF_ALIASES",
    "KNOWN_ACQFS",
    "KNOWN_MODELS",
    "GenerateJob",
    "GenerateResult",
    "GeneratorSpec",
    "ModelSpec",
    "ModelState",
    "QueryJob",
    "QueryJobResult",
    "TrainingData",
    "acqf_supports",
    "canonical_acqf",
    "fit_state",
    "generate",
    "query",
    "worker_init",
]

# --------------------------------------------------------------------------- registry
# Kept here (torch-free) so that the server can validate experiment configs without
# importing torch; acquisition.py dispatches on the same names.

CLASSIFICATION = "GPClassificationModel"
REGRESSION = "GPRegressionModel"
PAIRWISE = "PairwiseProbitModel"

KNOWN_MODELS: frozenset[str] = frozenset({CLASSIFICATION, REGRESSION, PAIRWISE})

_ALL = frozenset({CLASSIFICATION, REGRESSION, PAIRWISE})
_SUPPORT: dict[str, frozenset[str]] = {
    "MCLevelSetEstimation": frozenset({CLASSIFICATION, REGRESSION}),
    "EAVC": frozenset({CLASSIFICATION}),
    "GlobalMI": frozenset({CLASSIFICATION}),
    "BernoulliMCMutualInformation": frozenset({CLASSIFICATION}),
    "MCPosteriorVariance": frozenset({CLASSIFICATION, REGRESSION}),
    "qNoisyExpectedImprovement": _ALL,
    "qLogNoisyExpectedImprovement": _ALL,
    "PairwiseMCPosteriorVariance": frozenset({PAIRWISE}),
    "qUpperConfidenceBound": _ALL,
}
#: Accepted alternative spellings -> canonical name.
ACQF_ALIASES: dict[str, str] = {
    "qUCB": "qUpperConfidenceBound",
    "UpperConfidenceBound": "qUpperConfidenceBound",
    "UCB": "qUpperConfidenceBound",
}
KNOWN_ACQFS: frozenset[str] = frozenset(_SUPPORT) | frozenset(ACQF_ALIASES)


def canonical_acqf(name: str) -> str:
    r"""Canonical AEPsych name of an acquisition function.

    Raises:
        ValueError: ``unknown acquisition function 'name'`` for unknown names.
    """
    if name in _SUPPORT:
        return name
    if name in ACQF_ALIASES:
        return ACQF_ALIASES[name]
    raise ValueError(f"unknown acquisition function {name!r}")


def acqf_supports(model_kind: str, acqf: str) -> bool:
    r"""Whether acquisition ``acqf`` can drive model ``model_kind``.

    A pure predicate: unknown model kinds or acquisition names give ``False`` (check
    ``acqf in KNOWN_ACQFS`` / ``model_kind in KNOWN_MODELS`` for a precise error).
    """
    if model_kind not in KNOWN_MODELS:
        return False
    try:
        return model_kind in _SUPPORT[canonical_acqf(acqf)]
    except ValueError:
        return False


# --------------------------------------------------------------------------- contract


@dataclass(frozen=True)
class ModelSpec:
    r"""Which model to fit on the unit cube ``[0, 1]^dim``.

    options: ``inducing_size`` (int, default 100, classification), ``max_fit_time``
    (seconds), ``max_fit_iter`` (L-BFGS iterations, default 200), ``fit_ftol`` (L-BFGS
    relative tolerance, default 1e-6), ``kernel``
    (``"rbf"`` default or ``"matern52"``; classification/regression), ``elbo`` / ``laplace``
    (``"fast"`` default: the numpy objectives ``PackedElbo`` / ``PackedPairwiseLaplace`` for
    classification / pairwise; anything else: BoTorch's autograd fitting, also the fallback).
    """

    kind: str
    dim: int
    options: dict[str, float | int | str] = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratorSpec:
    r"""Which acquisition function (AEPsych name) to optimise, with its options.

    options: ``target`` (0.75), ``beta`` (3.84; squared width, i.e. 1.96 sd),
    ``objective`` ("ProbitObjective" / "" / "IdentityMCObjective"), ``restarts`` (10),
    ``samps`` (raw samples, 1000), ``maxiter`` (L-BFGS iterations per restart, 100),
    ``ftol`` (L-BFGS relative tolerance, 1e-6),
    ``max_gen_time`` (seconds), ``mc_samples`` (256, qNEI/qUCB), ``lookahead_points``
    (reference set size for EAVC/GlobalMI, 500).
    """

    acqf: str
    options: dict[str, float | int | str] = field(default_factory=dict)


@dataclass
class TrainingData:
    r"""Observations in the unit cube.

    X: ``n x d`` (pairwise: ``n x 2 x d``, the two stimuli of each comparison).
    y: ``n`` floats: 0/1 (classification), continuous (regression), or for pairwise
    1.0 when the FIRST stimulus was preferred, 0.0 when the second.
    """

    X: np.ndarray
    y: np.ndarray


@dataclass
class ModelState:
    r"""Fitted hyper-parameters (plain python) for warm starts.

    hyperparameters: parameter name -> nested lists (``tensor.tolist()``; scalars as
    one-element lists). Classification states also carry the variational parameters
    and a ``__digest__`` of the data they were fitted on, so that a later job on the
    very same data can reuse them without any optimisation.
    """

    kind: str
    hyperparameters: dict[str, list]
    n_train: int


@dataclass
class GenerateJob:
    model: ModelSpec
    generator: GeneratorSpec
    data: TrainingData
    num_points: int
    seed: int
    warm_state: ModelState | None = None
    refit: bool = True
    fixed: dict[int, float] = field(default_factory=dict)


@dataclass
class GenerateResult:
    r"""points: ``num_points x d`` in ``[0, 1]`` (pairwise: ``num_points x 2 x d``)."""

    points: np.ndarray
    state: ModelState
    fit_seconds: float
    generate_seconds: float


@dataclass
class QueryJob:
    r"""A question about the fitted model.

    query_type: "max" | "min" | "prediction" | "inverse". ``x`` is ``m x d`` for
    "prediction" (pairwise: single stimuli, latent utility). ``y`` is the target for
    "inverse". ``state``: when given, its hyper-parameters are used as they are (no
    hyper-parameter refit; only conditioning on ``data``).
    """

    model: ModelSpec
    data: TrainingData
    state: ModelState | None
    query_type: str
    probability_space: bool
    x: np.ndarray | None
    y: float | None
    fixed: dict[int, float]
    seed: int


@dataclass
class QueryJobResult:
    r"""Predictions at ``x`` (``m x d``; ``m = 1`` for max/min/inverse), each ``m``."""

    x: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    probability: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    state: ModelState
    fit_seconds: float


# --------------------------------------------------------------------------- helpers


def _validate_model(spec: ModelSpec, data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    r"""Check kind, shapes and ranges; return float64 ``X`` (``n x d`` / ``n x 2 x d``), ``y`` (``n``)."""
    if spec.kind not in KNOWN_MODELS:
        raise ValueError(f"unknown model {spec.kind!r}")
    d = int(spec.dim)
    if d < 1:
        raise ValueError(f"model dim must be >= 1, got {spec.dim!r}")
    X = np.asarray(data.X, dtype=np.float64)
    y = np.asarray(data.y, dtype=np.float64).reshape(-1)
    want = (2, d) if spec.kind == PAIRWISE else (d,)
    if X.size == 0:
        X = X.reshape((0, *want))
    if X.ndim != 1 + len(want) or tuple(X.shape[1:]) != want:
        raise ValueError(f"training X must have shape (n, {', '.join(map(str, want))}), got {X.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"training X has {X.shape[0]} rows but y has {y.shape[0]}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("training data contains NaN or infinite values")
    if X.size and (X.min() < -1e-6 or X.max() > 1 + 1e-6):
        raise ValueError("training X must lie in the unit cube [0, 1]^d")
    if spec.kind == CLASSIFICATION and np.any((y != 0.0) & (y != 1.0)):
        raise ValueError("GPClassificationModel needs binary (0/1) outcomes")
    return np.clip(X, 0.0, 1.0), y


def _validate_fixed(fixed: Mapping[int, float] | None, d: int) -> dict[int, float]:
    out: dict[int, float] = {}
    for k, v in (fixed or {}).items():
        i = int(k)
        if not 0 <= i < d:
            raise ValueError(f"fixed dimension {k!r} out of range for dim {d}")
        fv = float(v)
        if not math.isfinite(fv) or fv < -1e-9 or fv > 1 + 1e-9:
            raise ValueError(f"fixed value for dimension {i} must be in [0, 1], got {v!r}")
        out[i] = min(max(fv, 0.0), 1.0)
    return out


def data_digest(kind: str, options: Mapping[str, Any], X: np.ndarray, y: np.ndarray) -> str:
    r"""Fingerprint of (model kind, model options, data) used to reuse variational fits."""
    h = hashlib.sha256()
    h.update(kind.encode())
    h.update(repr(sorted((str(k), str(v)) for k, v in options.items())).encode())
    h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()


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

    X, y = _validate_model(spec, data)
    return fit_model(spec, X, y, warm_state=warm_state, refit=refit)


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
    name = canonical_acqf(job.generator.acqf)
    if job.model.kind not in KNOWN_MODELS:
        raise ValueError(f"unknown model {job.model.kind!r}")
    if not acqf_supports(job.model.kind, name):
        raise ValueError(f"acquisition function {job.generator.acqf!r} does not support model {job.model.kind!r}")
    if int(job.num_points) < 1:
        raise ValueError(f"num_points must be >= 1, got {job.num_points!r}")
    fixed = _validate_fixed(job.fixed, int(job.model.dim))
    with _job_context(job.seed):
        from psyserve.compute.acquisition import generate_points

        fitted = _fit(job.model, job.data, job.warm_state, job.refit)
        t0 = time.perf_counter()
        points = generate_points(fitted, job.generator, int(job.num_points), fixed, int(job.seed))
        gen_s = time.perf_counter() - t0
    return GenerateResult(points=points, state=fitted.state, fit_seconds=fitted.fit_seconds, generate_seconds=gen_s)


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
    fixed = _validate_fixed(job.fixed, int(job.model.dim))
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
        from psyserve.compute.acquisition import optimize_prediction, predict

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

    import psyserve.compute.acquisition
    import psyserve.compute.models  # noqa: F401

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
