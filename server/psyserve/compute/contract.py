"""The compute contract: model/acquisition registry, picklable job specs, data and results, option readers.

Torch-free and import-free of the rest of psyserve: config.py validates experiment configs with it and
every compute module builds on it. Must not touch server state, I/O, or import torch/BoTorch/GPyTorch."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ACQF_ALIASES",
    "BINARY_MODELS",
    "DEFAULT_N_LEVELS",
    "HADAMARD",
    "INDEPENDENT",
    "INDEPENDENT_PARTS",
    "KNOWN_ACQFS",
    "KNOWN_MODELS",
    "LINKS",
    "LOOKAHEAD_ACQFS",
    "MONOTONIC",
    "OBJECTIVE_LINKS",
    "ORDINAL",
    "SEMIP",
    "SEMIP_MODELS",
    "VARIATIONAL",
    "VARIATIONAL_LIKELIHOODS",
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
    "data_digest",
    "joined_state",
    "model_family",
    "n_levels",
    "opt_float",
    "opt_int",
    "opt_str",
    "part_state",
    "validate_fixed",
    "validate_model_data",
]

# --------------------------------------------------------------------------- registry
# Kept here (torch-free) so that the server can validate experiment configs without
# importing torch; compute/factory.py dispatches on the same names.

CLASSIFICATION = "GPClassificationModel"
REGRESSION = "GPRegressionModel"
PAIRWISE = "PairwiseProbitModel"
MODEL_LIST = "ModelListGP"  # one GP per metric (Ax-style optimisation); its jobs: compute/optimization.py
SEMIP = "SemiParametricGPModel"  # compute/semip.py
HADAMARD = "HadamardSemiPModel"  # compute/semip.py
#: semi-parametric psychometric models: a linear latent along ``stim_dim``, GP slope and offset over the rest
SEMIP_MODELS: frozenset[str] = frozenset({SEMIP, HADAMARD})
MONOTONIC = "MonotonicProjectionGP"  # GP classification projected monotone along dims (compute/monotonic.py)
#: binary-outcome models with a response link (floor objectives) and probability read-outs
BINARY_MODELS: frozenset[str] = frozenset({CLASSIFICATION, MONOTONIC}) | SEMIP_MODELS
ORDINAL = "OrdinalGPModel"  # ordinal (Likert) outcomes 0..n_levels-1, learned cut-points (compute/ordinal.py)
INDEPENDENT = "IndependentGPsModel"  # one model per outcome (ModelSpec.parts), each with its own acquisition
#: AEPsych 0.8's base variational GP with the likelihood its config names (option ``likelihood``)
VARIATIONAL = "VariationalGPModel"
#: VariationalGPModel's likelihoods -> the model family whose outcomes, acquisitions and read-outs it has:
#: Gaussian (AEPsych's default; continuous outcomes), Bernoulli (binary; a floor objective's link with
#: ``link``/``floor``) and ordinal (``n_levels``)
VARIATIONAL_LIKELIHOODS: dict[str, str] = {"gaussian": REGRESSION, "bernoulli": CLASSIFICATION, "ordinal": ORDINAL}

KNOWN_MODELS: frozenset[str] = (
    frozenset({CLASSIFICATION, REGRESSION, PAIRWISE, MODEL_LIST, ORDINAL, INDEPENDENT, MONOTONIC, VARIATIONAL}) | SEMIP_MODELS
)
#: the models an IndependentGPsModel may hold, one per outcome
INDEPENDENT_PARTS: frozenset[str] = frozenset({CLASSIFICATION, REGRESSION, ORDINAL})
#: AEPsych's default number of levels of an OrdinalGPModel (its OrdinalLikelihood's n_levels)
DEFAULT_N_LEVELS = 5

_ALL = frozenset({CLASSIFICATION, REGRESSION, PAIRWISE})
_LATENT_BINARY = frozenset({CLASSIFICATION, MONOTONIC}) | SEMIP_MODELS
_SUPPORT: dict[str, frozenset[str]] = {
    "MCLevelSetEstimation": _LATENT_BINARY | {REGRESSION},
    "EAVC": _LATENT_BINARY,
    "GlobalMI": _LATENT_BINARY,
    "GlobalSUR": _LATENT_BINARY,
    "ApproxGlobalSUR": _LATENT_BINARY,
    "LocalMI": _LATENT_BINARY,
    "LocalSUR": _LATENT_BINARY,
    "BernoulliMCMutualInformation": _LATENT_BINARY,
    "MCPosteriorVariance": _LATENT_BINARY | {REGRESSION, ORDINAL},
    "qNoisyExpectedImprovement": _ALL | {ORDINAL},
    "qLogNoisyExpectedImprovement": _ALL | {MODEL_LIST, ORDINAL},
    "qLogNoisyExpectedHypervolumeImprovement": frozenset({MODEL_LIST}),
    "PairwiseMCPosteriorVariance": frozenset({PAIRWISE}),
    "qUpperConfidenceBound": _ALL | {ORDINAL},
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


def model_family(kind: str, options: Mapping[str, Any] | None = None) -> str:
    r"""The model kind whose outcomes, acquisitions and read-outs ``kind`` has: a VariationalGPModel's
    is its likelihood's (``VARIATIONAL_LIKELIHOODS``, Gaussian by default); every other kind is its own.

    Raises:
        ValueError: a VariationalGPModel likelihood that is not one of ``VARIATIONAL_LIKELIHOODS``.
    """
    if kind != VARIATIONAL:
        return kind
    likelihood = str((options or {}).get("likelihood", "gaussian") or "gaussian")
    if likelihood not in VARIATIONAL_LIKELIHOODS:
        raise ValueError(f"{VARIATIONAL} likelihood must be one of {sorted(VARIATIONAL_LIKELIHOODS)}, got {likelihood!r}")
    return VARIATIONAL_LIKELIHOODS[likelihood]


def acqf_supports(model_kind: str, acqf: str, options: Mapping[str, Any] | None = None) -> bool:
    r"""Whether acquisition ``acqf`` can drive model ``model_kind`` (with its ``options``: a
    VariationalGPModel's likelihood decides, see ``model_family``).

    A pure predicate: unknown model kinds or acquisition names give ``False`` (check
    ``acqf in KNOWN_ACQFS`` / ``model_kind in KNOWN_MODELS`` for a precise error).
    """
    if model_kind not in KNOWN_MODELS:
        return False
    try:
        return model_family(model_kind, options) in _SUPPORT[canonical_acqf(acqf)]
    except ValueError:
        return False


#: Look-ahead level-set acquisitions: exact for the probit link (with a floor), not for logit / Gumbel.
LOOKAHEAD_ACQFS: frozenset[str] = frozenset({"EAVC", "GlobalMI", "GlobalSUR", "ApproxGlobalSUR", "LocalMI", "LocalSUR"})
#: Links of the binary model's response probability ``floor + (1 - floor) F(f)`` (compute/links.py).
LINKS: frozenset[str] = frozenset({"probit", "logit", "gumbel"})
#: AEPsych's floor objectives -> the link ``F`` they put under the floor.
OBJECTIVE_LINKS: dict[str, str] = {
    "FloorProbitObjective": "probit",
    "FloorLogitObjective": "logit",
    "FloorGumbelObjective": "gumbel",
}


#: AEPsych 0.8's inducing-point allocators psyserve honours (`inducing_point_method`; compute/inducing.py)
INDUCING_ALLOCATORS: tuple[str, ...] = (
    "GreedyVarianceReduction",
    "KMeansAllocator",
    "SobolAllocator",
    "FixedAllocator",
    "FixedPlusAllocator",
)
#: FixedPlusAllocator's main allocators
INDUCING_MAIN_ALLOCATORS: tuple[str, ...] = ("GreedyVarianceReduction", "KMeansAllocator", "SobolAllocator")


# --------------------------------------------------------------------------- contract


@dataclass(frozen=True)
class ModelSpec:
    r"""Which model to fit on the unit cube ``[0, 1]^dim``.

    options: ``inducing_size`` (int, default 100, the variational models: classification, monotonic,
    ordinal, semi-parametric, VariationalGPModel), ``inducing_point_method``
    (one of ``INDUCING_ALLOCATORS``; default psyserve's own, see compute/inducing.py) with
    ``inducing_points`` (JSON unit-cube rows) and ``inducing_main_allocator``, ``max_fit_time``
    (seconds), ``max_fit_iter`` (L-BFGS iterations, default 200), ``fit_ftol`` (L-BFGS
    relative tolerance, default 1e-6; pairwise 2.2e-9, scipy's default), ``kernel``
    (``"rbf"`` default or ``"matern52"``; classification/regression), ``elbo`` / ``laplace``
    (``"fast"`` default: the numpy objectives ``PackedElbo`` / ``PackedPairwiseLaplace`` for
    classification / pairwise; anything else: BoTorch's autograd fitting, also the fallback),
    ``link`` (``"probit"`` default, ``"logit"``, ``"gumbel"``) and ``floor`` (guess rate, default 0)
    of classification: the response probability is ``floor + (1 - floor) F(f)``, used by the
    fit, every acquisition on the probability and every probability read-out; ``n_levels``
    (default 5) of OrdinalGPModel: outcomes are the integers ``0 .. n_levels - 1``; ``likelihood``
    (``VARIATIONAL_LIKELIHOODS``, default ``"gaussian"``) of VariationalGPModel.

    parts: IndependentGPsModel only, one model per outcome (column ``i`` of the data's ``y``).
    """

    kind: str
    dim: int
    options: dict[str, float | int | str] = field(default_factory=dict)
    parts: tuple[ModelSpec, ...] = ()


@dataclass(frozen=True)
class GeneratorSpec:
    r"""Which acquisition function (AEPsych name) to optimise, with its options.

    options: ``target`` (0.75), ``beta`` (3.84; squared width, i.e. 1.96 sd),
    ``objective`` ("ProbitObjective" / "" / "IdentityMCObjective" / a floor objective: the model's
    link then applies, ``target`` is a response probability in ``(floor, 1)``), ``restarts`` (10),
    ``samps`` (raw samples, 1000), ``maxiter`` (L-BFGS iterations per restart, 100),
    ``ftol`` (L-BFGS relative tolerance, 1e-6),
    ``max_gen_time`` (seconds), ``mc_samples`` (256, qNEI/qUCB), ``lookahead_points``
    (reference set size for EAVC/GlobalMI, 500), ``method`` (``"optimize"`` default,
    ``"epsilon_greedy"`` with ``epsilon`` (0.1), ``"grid"`` / ``"thompson"`` over ``samps`` (1024)
    Sobol points: AEPsych's EpsilonGreedy / AcqfGridSearch / AcqfThompsonSampler generators).
    """

    acqf: str
    options: dict[str, float | int | str] = field(default_factory=dict)
    #: IndependentOptimizeAcqfGenerator: one generator per part of an IndependentGPsModel, same order
    parts: tuple[GeneratorSpec, ...] = ()


@dataclass
class TrainingData:
    r"""Observations in the unit cube.

    X: ``n x d`` (pairwise: ``n x 2 x d``, the two stimuli of each comparison).
    y: ``n`` floats: 0/1 (classification), continuous (regression), or for pairwise
    1.0 when the FIRST stimulus was preferred, 0.0 when the second; IndependentGPsModel: ``n x m``,
    column ``i`` for part ``i``.
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
    r"""points: ``num_points x d`` in ``[0, 1]`` (pairwise: ``num_points x 2 x d``).

    level_probabilities: ordinal models only, ``num_points x n_levels``: the fitted model's
    probability of each level at each point (what speculation uses to pick the likely answers).
    """

    points: np.ndarray
    state: ModelState
    fit_seconds: float
    generate_seconds: float
    level_probabilities: np.ndarray | None = None


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
    #: ordinal models: ``m x n_levels``, the probability of each level (``probability`` is the expected level)
    level_probabilities: np.ndarray | None = None


# --------------------------------------------------------------------------- option readers and validation


def opt_float(options: Mapping[str, Any], key: str, default: float | None) -> float | None:
    r"""Read a float option (``None``/"" -> ``default``)."""
    v = options.get(key, None)
    if v is None or (isinstance(v, str) and not v.strip()):
        return default
    try:
        return float(v)
    except (TypeError, ValueError) as e:
        raise ValueError(f"option {key!r} must be a number, got {v!r}") from e


def opt_str(options: Mapping[str, Any], key: str, default: str) -> str:
    r"""Read a string option."""
    v = options.get(key, None)
    return default if v is None or str(v).strip() == "" else str(v).strip()


def opt_int(options: Mapping[str, Any], key: str, default: int) -> int:
    r"""Read an integer option."""
    v = opt_float(options, key, float(default))
    assert v is not None
    if not math.isfinite(v):
        raise ValueError(f"option {key!r} must be finite, got {v!r}")
    return int(round(v))




def validate_model_data(spec: ModelSpec, data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    r"""Check kind, shapes and ranges; return float64 ``X`` (``n x d`` / ``n x 2 x d``), ``y`` (``n``)."""
    if spec.kind not in KNOWN_MODELS:
        raise ValueError(f"unknown model {spec.kind!r}")
    if spec.kind == MODEL_LIST:
        raise ValueError(f"{MODEL_LIST} jobs are optimisation jobs (compute.optimization_jobs), not model jobs")
    if spec.kind == INDEPENDENT:
        Y = np.asarray(data.y, dtype=np.float64)
        if not spec.parts or Y.ndim != 2 or Y.shape[1] != len(spec.parts):
            raise ValueError(f"{INDEPENDENT} needs one part per outcome and y of shape (n, {len(spec.parts)}), got {Y.shape}")
        columns = []
        for i, part in enumerate(spec.parts):
            if part.kind not in INDEPENDENT_PARTS:
                raise ValueError(f"{INDEPENDENT} part {i}: {part.kind!r} is not one of {sorted(INDEPENDENT_PARTS)}")
            X, y = validate_model_data(part, TrainingData(data.X, Y[:, i]))
            columns.append(y)
        return X, np.stack(columns, axis=1) if columns else Y
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
    family = model_family(spec.kind, spec.options)
    if family in BINARY_MODELS and np.any((y != 0.0) & (y != 1.0)):
        raise ValueError(f"{spec.kind} needs binary (0/1) outcomes")
    if family == ORDINAL:
        k = n_levels(spec.options)
        if np.any((y != np.round(y)) | (y < 0) | (y > k - 1)):
            raise ValueError(f"OrdinalGPModel with n_levels = {k} needs integer outcomes in 0..{k - 1}")
    return np.clip(X, 0.0, 1.0), y


def part_state(state: ModelState | None, index: int, kind: str) -> ModelState | None:
    r"""Part ``index`` of an IndependentGPsModel's state (``None`` when absent or of another kind)."""
    if state is None or state.kind != INDEPENDENT:
        return None
    prefix = f"{index}/"
    hypers = {k[len(prefix) :]: v for k, v in state.hyperparameters.items() if k.startswith(prefix)}
    if not hypers or hypers.get("__kind__") != [kind]:
        return None
    hypers.pop("__kind__")
    return ModelState(kind=kind, hyperparameters=hypers, n_train=state.n_train)


def joined_state(states: list[ModelState], n_train: int) -> ModelState:
    r"""An IndependentGPsModel's state: each part's hyper-parameters under ``"i/"`` (its kind too)."""
    hypers: dict[str, list] = {}
    for i, s in enumerate(states):
        hypers[f"{i}/__kind__"] = [s.kind]
        hypers.update({f"{i}/{k}": v for k, v in s.hyperparameters.items()})
    return ModelState(kind=INDEPENDENT, hyperparameters=hypers, n_train=n_train)


def n_levels(options: Mapping[str, Any]) -> int:
    r"""An ordinal model's number of levels (option ``n_levels``, default 5, at least 2)."""
    k = opt_int(options, "n_levels", DEFAULT_N_LEVELS)
    if k < 2:
        raise ValueError(f"option 'n_levels' must be at least 2, got {k}")
    return k


def validate_fixed(fixed: Mapping[int, float] | None, d: int) -> dict[int, float]:
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


