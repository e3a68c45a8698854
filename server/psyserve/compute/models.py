"""Model builders: GP classification, regression, pairwise probit and ordinal on BoTorch/GPyTorch, fitted
(packed numpy objectives, or BoTorch's own fitting) and warm-started, as a FittedModel with its LatentGP.

Must not touch server state, I/O, job orchestration or acquisition logic; the objectives, kernels
and latent posterior they use live in elbo.py, laplace.py, kernels.py, latent.py and ordinal.py.

Longer than ~500 lines on purpose: the builders share one set of warm-start, inducing-point and
state (de)serialisation helpers, and each builder is read against the others.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from botorch.exceptions.warnings import UserInputWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import PairwiseGP, SingleTaskGP, SingleTaskVariationalGP
from botorch.models.model import Model
from botorch.models.pairwise_gp import PairwiseLaplaceMarginalLogLikelihood
from botorch.models.transforms.outcome import Standardize
from botorch.optim.fit import fit_gpytorch_mll_scipy
from gpytorch.constraints import GreaterThan
from gpytorch.kernels import Kernel, RBFKernel
from gpytorch.likelihoods import BernoulliLikelihood, GaussianLikelihood
from gpytorch.means import ConstantMean, Mean, ZeroMean
from gpytorch.mlls import ExactMarginalLogLikelihood, VariationalELBO
from gpytorch.priors import GammaPrior, NormalPrior
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from psyserve.compute.contract import (
    BINARY_MODELS,
    CLASSIFICATION,
    KNOWN_MODELS,
    MONOTONIC,
    ORDINAL,
    PAIRWISE,
    REGRESSION,
    SEMIP_MODELS,
    VARIATIONAL,
    ModelSpec,
    ModelState,
    data_digest,
    model_family,
    n_levels,
    opt_float,
    opt_int,
    opt_str,
)
from psyserve.compute.elbo import PackedElbo, collapsed_gaussian_closure, set_optimal_gaussian_q, variational_elbo_closure
from psyserve.compute.inducing import DEFAULT as DEFAULT_INDUCING
from psyserve.compute.inducing import allocate_inducing_points, farthest_point_subset
from psyserve.compute.kernels import OUTPUTSCALE_BOUNDS, KernelFn, make_kernel, pairwise_kernel, prior_mean_fn
from psyserve.compute.laplace import PackedPairwiseLaplace
from psyserve.compute.latent import PROBIT_PENDING_NOISE, LatentGP
from psyserve.compute.lbfgs import FIT_FTOL, PAIRWISE_FIT_FTOL
from psyserve.compute.links import PROBIT, Link, LinkBernoulliLikelihood, link_of
from psyserve.compute.mean_covar import build_covar, build_mean, uses_factory
from psyserve.compute.numerics import DTYPE, unique_rows
from psyserve.compute.ordinal import OrdinalLikelihood, level_log_prob

__all__ = [
    "FittedModel",
    "fit_model",
    "pairwise_to_comparisons",
    "select_inducing_points",
    "unique_rows",
]

log = logging.getLogger(__name__)

#: Output-scale bounds of the regression and pairwise kernels (a factory's kernel without its own prior)
REGRESSION_OUTPUTSCALE_BOUNDS = (0.05, 20.0)
PAIRWISE_OUTPUTSCALE_BOUNDS = (5e-3, 2e2)
DIGEST_KEY = "__digest__"
INDUCING_KEY = "__inducing__"
#: the length-scale prior of the classification kernel without factory options ("lognormal": AEPsych
#: 0.8's dimension-scaled LogNormal(sqrt 2 + log(d) / 2, sqrt 3); "gamma": Gamma(3, 6), before 2026-12-02)
DEFAULT_LENGTHSCALE_PRIOR = "lognormal"
_VMEAN = "model.variational_strategy._variational_distribution.variational_mean"
_VCHOL = "model.variational_strategy._variational_distribution.chol_variational_covar"

# --------------------------------------------------------------------------- data helpers


#: psyserve's default allocator, by its old name
select_inducing_points = farthest_point_subset


def pairwise_to_comparisons(X: np.ndarray, y: np.ndarray) -> tuple[Tensor, Tensor]:
    r"""Convert comparisons to PairwiseGP inputs.

    Args:
        X: ``n x 2 x d`` the two stimuli of each comparison.
        y: ``n``; >= 0.5 means the first stimulus won.

    Returns:
        ``datapoints`` (``p x d`` unique stimuli) and ``comparisons`` (``c x 2`` long,
        ``[winner, loser]`` row indices into datapoints); self-comparisons are dropped.
    """
    n, _, d = X.shape
    flat = X.reshape(2 * n, d)
    uniq, inv = np.unique(flat, axis=0, return_inverse=True)
    inv = inv.reshape(n, 2)
    first_wins = np.asarray(y).reshape(-1) >= 0.5
    winner = np.where(first_wins, inv[:, 0], inv[:, 1])
    loser = np.where(first_wins, inv[:, 1], inv[:, 0])
    keep = winner != loser
    comps = np.stack([winner[keep], loser[keep]], axis=-1)
    return torch.as_tensor(uniq, dtype=DTYPE), torch.as_tensor(comps, dtype=torch.long).reshape(-1, 2)


# --------------------------------------------------------------------------- state (de)serialisation


def _to_list(t: Tensor) -> list:
    v = t.detach().cpu().tolist()
    return v if isinstance(v, list) else [v]


def _collect(module: torch.nn.Module, include_variational: bool) -> dict[str, list]:
    out: dict[str, list] = {}
    for name, p in module.named_parameters():
        if "variational" in name and not include_variational:
            continue
        out[name] = _to_list(p)
    return out


def _load(module: torch.nn.Module, hypers: Mapping[str, list], include_variational: bool) -> int:
    r"""Copy matching entries of ``hypers`` into ``module``'s parameters; returns how many."""
    count = 0
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name not in hypers or ("variational" in name and not include_variational):
                continue
            try:
                t = torch.as_tensor(hypers[name], dtype=p.dtype)
            except (TypeError, ValueError):
                continue
            if t.shape != p.shape:
                if t.numel() != p.numel():
                    continue
                t = t.reshape(p.shape)
            if not torch.all(torch.isfinite(t)):
                continue
            p.copy_(t)
            count += 1
    return count


# --------------------------------------------------------------------------- fitted model


@dataclass
class FittedModel:
    r"""A fitted model plus everything generation/queries need (process-internal, holds tensors).

    train_X: ``n' x d`` unique training inputs (pairwise: unique stimuli), used as the
    qNEI baseline. ``model`` is ``None`` for a prior-only model (no data).
    """

    kind: str
    dim: int
    model: Model | None
    latent: LatentGP  # semi-parametric models: a ProductLatent (same interface)
    train_X: Tensor
    pending_noise: float
    state: ModelState
    fit_seconds: float
    #: the response link of a classification model (floor objectives); probit otherwise
    link: Link = PROBIT
    #: an ordinal model's ``n_levels - 1`` cut-points (the first 0); ``None`` for other kinds
    cutpoints: Tensor | None = None
    #: the kind whose outcomes, acquisitions and read-outs the model has (contract.model_family: a
    #: VariationalGPModel's likelihood's); ``kind`` itself when not given
    family: str = ""

    def __post_init__(self) -> None:
        if not self.family:
            self.family = self.kind

    @property
    def n_train(self) -> int:
        return int(self.state.n_train)


def _fit_mll(mll: Any, options: Mapping[str, Any], max_attempts: int, closure: Any = None, ftol: float = FIT_FTOL) -> None:
    r"""``fit_gpytorch_mll`` with an iteration cap, optional timeout and no warning-driven retries;
    ``ftol`` is the default of the ``fit_ftol`` option."""
    maxiter = opt_int(options, "max_fit_iter", 200)
    timeout = opt_float(options, "max_fit_time", None)
    okw: dict[str, Any] = {"options": {"maxiter": maxiter}}
    okw["options"]["ftol"] = opt_float(options, "fit_ftol", ftol) or ftol
    if timeout is not None and timeout > 0:
        okw["timeout_sec"] = timeout
    try:
        fit_gpytorch_mll(
            mll,
            closure=closure,
            optimizer=fit_gpytorch_mll_scipy,
            optimizer_kwargs=okw,
            max_attempts=max_attempts,
            warning_handler=lambda w: True,  # accept maxiter / timeout terminations as-is
        )
    except Exception as exc:  # robustness: keep the initial / warm parameters (rolled back by BoTorch)
        log.debug("model fit failed, keeping initial parameters: %s: %s", type(exc).__name__, exc)
    mll.eval()


def _warm_usable(warm_state: ModelState | None, kind: str) -> bool:
    return warm_state is not None and warm_state.kind == kind and bool(warm_state.hyperparameters)


def _extend_variational(model: SingleTaskVariationalGP, warm_state: ModelState, Z: Tensor) -> bool:
    r"""Start ``q(v)`` from the previous fit's, when its inducing points are a prefix of ``Z``.

    In the whitened parameterisation with the warm hyper-parameters loaded, the Cholesky
    factor of the enlarged ``K_ZZ`` keeps the old one as its leading block, so extending the
    old ``q(v)`` by ``N(0, 1)`` for each new inducing point leaves the old ``q(u)`` exactly as
    it was and gives the new points their prior conditional: the optimiser starts one
    observation away from its optimum instead of at the prior.
    """
    hypers = warm_state.hyperparameters
    try:
        Z_old = torch.as_tensor(hypers[INDUCING_KEY], dtype=DTYPE).reshape(-1, Z.shape[-1])
        mean_old = torch.as_tensor(hypers[_VMEAN], dtype=DTYPE).reshape(-1)
        chol_old = torch.as_tensor(hypers[_VCHOL], dtype=DTYPE)
    except (KeyError, TypeError, ValueError, RuntimeError):
        return False
    k = Z_old.shape[0]
    if not (0 < k <= Z.shape[0] and mean_old.shape[0] == k and chol_old.shape == (k, k)):
        return False
    if not torch.equal(Z_old, Z[:k]) or not (torch.all(torch.isfinite(mean_old)) and torch.all(torch.isfinite(chol_old))):
        return False
    vd = model.model.variational_strategy._variational_distribution
    with torch.no_grad():
        vd.variational_mean.zero_()
        vd.variational_mean[:k] = mean_old
        chol = torch.eye(Z.shape[0], dtype=DTYPE)
        chol[:k, :k] = chol_old.tril()
        vd.chol_variational_covar.copy_(chol)
    return True


def _variational_gp(
    spec: ModelSpec,
    X: np.ndarray,
    y: np.ndarray,
    Z: Tensor,
    likelihood: Any,
    covar: Any,
    mean: Any,
    warm_state: ModelState | None,
    refit: bool,
    outcome_transform: Any = None,
) -> tuple[SingleTaskVariationalGP, str, bool, bool]:
    """The whitened variational GP over inducing points ``Z`` shared by the classification, ordinal and
    variational models, with the last fit's hyper-parameters loaded when usable (``outcome_transform``:
    the Gaussian variational model's ``Standardize``). Returns the model, the data digest, whether the warm
    state was usable, and whether its variational parameters were reused as they are (same data, no
    refit asked): then no fit is needed."""
    n = X.shape[0]
    Xt = torch.as_tensor(X, dtype=DTYPE)
    yt = torch.as_tensor(y, dtype=DTYPE)
    with warnings.catch_warnings():  # BoTorch warns of outcome transforms for minibatch training, which is not done here
        warnings.simplefilter("ignore", UserInputWarning)
        model = SingleTaskVariationalGP(
            train_X=Xt if n else Z,
            train_Y=yt.unsqueeze(-1) if n else None,
            likelihood=likelihood,
            covar_module=covar,
            mean_module=mean,
            inducing_points=Z,
            learn_inducing_points=False,
            outcome_transform=outcome_transform if n else None,
        ).to(DTYPE)
    digest = data_digest(spec.kind, spec.options, X, y)
    warm = _warm_usable(warm_state, spec.kind)
    if warm:
        assert warm_state is not None
        _load(model, warm_state.hyperparameters, include_variational=False)
    vs = model.model.variational_strategy
    reuse = bool(
        n
        and warm
        and not refit
        and warm_state is not None
        and warm_state.hyperparameters.get(DIGEST_KEY) == [digest]
        and _load(vs, {k.removeprefix("model.variational_strategy."): v for k, v in warm_state.hyperparameters.items()}, True) >= 2
    )
    return model, digest, warm, reuse


def _variational_result(
    model: SingleTaskVariationalGP, mean_fn: Any, Xt: Tensor, digest: str, scale: float = 1.0, offset: float = 0.0
) -> tuple[LatentGP, Tensor, dict[str, list]]:
    """After a variational fit: the latent posterior (``offset + scale * f``: a standardized outcome's
    units), the unique training inputs, and the state kept for the next warm start (variational
    parameters, data digest and inducing points only when there is data)."""
    n = Xt.shape[0]
    model.eval()
    latent, Zv = _variational_latent(model, mean_fn, scale, offset)
    hypers = _collect(model, include_variational=bool(n))
    if n:
        hypers[DIGEST_KEY] = [digest]
        hypers[INDUCING_KEY] = Zv.tolist()
    return latent, (unique_rows(Xt) if n else Xt), hypers


def _default_mean_covar(d: int, opts: Mapping[str, Any]) -> tuple[Kernel, Mean]:
    """The kernel and mean of the classification and variational models: AEPsych's factory options when
    set (config.py), else psyserve's own kernel with AEPsych 0.8's default (dimension-scaled LogNormal)
    length-scale prior and a constant mean with a Normal(0, 2) prior."""
    if uses_factory(opts):
        return build_covar(d, opts, OUTPUTSCALE_BOUNDS), build_mean(opts)
    covar = make_kernel(d, str(opts.get("kernel", "rbf") or "rbf"), prior=DEFAULT_LENGTHSCALE_PRIOR)
    return covar, ConstantMean(constant_prior=NormalPrior(0.0, 2.0)).to(DTYPE)


def _inducing_points(spec: ModelSpec, Xt: Tensor, covar: Kernel, warm_state: ModelState | None) -> Tensor:
    """A variational model's inducing points from its `inducing_point_method` (psyserve's default
    allocator without one) and `inducing_size` (100); GreedyVarianceReduction allocates with the last
    fit's kernel, as AEPsych does."""
    opts = spec.options
    method = opt_str(opts, "inducing_point_method", DEFAULT_INDUCING) or DEFAULT_INDUCING
    if method == "GreedyVarianceReduction" and _warm_usable(warm_state, spec.kind):
        assert warm_state is not None
        prefix = "model.covar_module."
        _load(covar, {k.removeprefix(prefix): v for k, v in warm_state.hyperparameters.items() if k.startswith(prefix)}, False)
    return allocate_inducing_points(method, Xt, max(1, opt_int(opts, "inducing_size", 100)), covar, opts)


@contextmanager
def _hypers_held(model: torch.nn.Module, hold: bool, variational: bool = False) -> Iterator[None]:
    """Hold the hyper-parameters (everything but the variational parameters; with ``variational``, those
    instead) fixed inside the block."""
    held = (
        [p for name, p in model.named_parameters() if ("variational" in name) == variational and p.requires_grad] if hold else []
    )
    for p in held:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in held:
            p.requires_grad_(True)


def _warm_fit(
    model: SingleTaskVariationalGP,
    warm_state: ModelState | None,
    Z: Tensor,
    warm: bool,
    refit: bool,
    run: Callable[[int, bool], None],
) -> None:
    """A variational fit's schedule, ``run(max_attempts, hold_hypers)`` doing one fit: from the last fit's
    ``q`` extended to the new inducing points when it can be (one observation away: one fit), else
    conditioned on the data with the warm hyper-parameters held and then, if asked, refitted in full;
    without a warm state, a cold fit with a retry."""
    extended = warm and warm_state is not None and _extend_variational(model, warm_state, Z)
    if extended:  # keep the extended q(v): GPyTorch would otherwise start it again from the prior
        model.model.variational_strategy.variational_params_initialized.fill_(1)
    if extended and refit:
        run(1, False)
    elif warm:
        run(1, True)
        if refit:
            run(1, False)
    else:
        run(2, False)


def _classification(
    spec: ModelSpec, X: np.ndarray, y: np.ndarray, warm_state: ModelState | None, refit: bool
) -> tuple[Model | None, LatentGP, Tensor, dict[str, list]]:
    d = int(spec.dim)
    opts = spec.options
    link = link_of(opts)
    n = X.shape[0]
    Xt = torch.as_tensor(X, dtype=DTYPE)
    yt = torch.as_tensor(y, dtype=DTYPE)
    covar, mean = _default_mean_covar(d, opts)
    Z = _inducing_points(spec, Xt, covar, warm_state)
    likelihood = BernoulliLikelihood() if link.is_plain_probit else LinkBernoulliLikelihood(link)
    model, digest, warm, reuse = _variational_gp(spec, X, y, Z, likelihood, covar, mean, warm_state, refit)
    vs = model.model.variational_strategy
    if n:
        if reuse:
            vs.variational_params_initialized.fill_(1)
        else:
            mll = VariationalELBO(model.likelihood, model.model, num_data=n)
            fast = opt_str(opts, "elbo", "fast") == "fast"

            def run(attempts: int, freeze: bool) -> None:
                if fast and PackedElbo.supports(model, mll):
                    packed = PackedElbo(model, mll, Xt, yt, link)
                    maxiter = opt_int(opts, "max_fit_iter", 200)
                    if packed.fit(maxiter, opt_float(opts, "fit_ftol", FIT_FTOL) or FIT_FTOL, opt_float(opts, "max_fit_time", None), freeze):
                        return
                closure = variational_elbo_closure(model, mll, Xt, yt, link) if fast else None
                with _hypers_held(model, freeze):
                    _fit_mll(mll, opts, max_attempts=attempts, closure=closure)
                vs.variational_params_initialized.fill_(1)

            _warm_fit(model, warm_state, Z, warm, refit, run)
    latent, train_X, hypers = _variational_result(model, prior_mean_fn(model.model.mean_module), Xt, digest)
    return (model if n else None), latent, train_X, hypers


def _variational_latent(
    model: SingleTaskVariationalGP, mean_fn: Any, scale: float = 1.0, offset: float = 0.0
) -> tuple[LatentGP, Tensor]:
    r"""The whitened variational posterior of ``model`` as a ``LatentGP`` (``M = S - I``; ``offset + scale * f``),
    and its inducing points."""
    vs = model.model.variational_strategy
    with torch.no_grad():
        kernel = KernelFn(model.model.covar_module)
        jitter = float(vs.jitter_val)
        Zv = vs.inducing_points.detach().to(DTYPE)
        Kzz = kernel(Zv, Zv) + jitter * torch.eye(Zv.shape[0], dtype=DTYPE)
        L = psd_safe_cholesky(Kzz)
        vd = vs.variational_distribution
        w = vd.mean.detach().reshape(-1)
        S = vd.covariance_matrix.detach()
        M = S - torch.eye(S.shape[-1], dtype=DTYPE)
    return LatentGP(kernel, mean_fn, Zv, L, w, M, scale=scale, offset=offset, jitter=jitter), Zv


def _ordinal(
    spec: ModelSpec, X: np.ndarray, y: np.ndarray, warm_state: ModelState | None, refit: bool
) -> tuple[Model | None, LatentGP, Tensor, dict[str, list], Tensor]:
    r"""OrdinalGPModel: a whitened variational GP (zero mean, ARD RBF without output scale: the
    cut-points set the scale, as AEPsych's ordinal factory does) under ``OrdinalLikelihood``; fitted with
    BoTorch's L-BFGS on the variational ELBO. Same inducing points and warm starts as classification.
    A VariationalGPModel with the ordinal likelihood has AEPsych's default factory's mean and kernel
    instead (``_default_mean_covar``). Returns the fitted pieces and the ``K - 1`` cut-points."""
    d = int(spec.dim)
    opts = spec.options
    levels = n_levels(opts)
    n = X.shape[0]
    Xt = torch.as_tensor(X, dtype=DTYPE)
    yt = torch.as_tensor(y, dtype=DTYPE)
    mean: Mean
    if spec.kind == VARIATIONAL:
        covar, mean = _default_mean_covar(d, opts)
    else:
        conc, rate = 1.5, 3.0  # AEPsych's length-scale prior for ordinal models
        covar = RBFKernel(
            ard_num_dims=d,
            lengthscale_prior=GammaPrior(conc, rate),
            lengthscale_constraint=GreaterThan(1e-4, transform=None, initial_value=(conc - 1.0) / rate),
        ).to(DTYPE)
        mean = ZeroMean().to(DTYPE)
    Z = _inducing_points(spec, Xt, covar, warm_state)
    likelihood = OrdinalLikelihood(levels)
    model, digest, warm, reuse = _variational_gp(spec, X, y, Z, likelihood, covar, mean, warm_state, refit)
    vs = model.model.variational_strategy
    if n:
        if reuse:
            vs.variational_params_initialized.fill_(1)
        else:
            if warm and warm_state is not None and _extend_variational(model, warm_state, Z):
                vs.variational_params_initialized.fill_(1)
            mll = VariationalELBO(likelihood, model.model, num_data=n)
            closure = None
            if opt_str(opts, "elbo", "fast") == "fast":  # the fused closure, ~5x faster per evaluation than GPyTorch's
                observed = yt.round().long().unsqueeze(-1)
                closure = variational_elbo_closure(
                    model, mll, Xt, yt, log_lik=lambda f: level_log_prob(f, observed, likelihood.cutpoints)
                )
            # condition on the new data with the warm hyper-parameters held, unless a refit is asked
            with _hypers_held(model, warm and not refit):
                _fit_mll(mll, opts, max_attempts=1 if warm else 2, closure=closure)
            vs.variational_params_initialized.fill_(1)
    latent, train_X, hypers = _variational_result(model, prior_mean_fn(mean if spec.kind == VARIATIONAL else None), Xt, digest)
    return (model if n else None), latent, train_X, hypers, likelihood.cutpoints.detach().clone()


def _variational_gaussian(
    spec: ModelSpec, X: np.ndarray, y: np.ndarray, warm_state: ModelState | None, refit: bool
) -> tuple[Model | None, LatentGP, Tensor, dict[str, list], float]:
    r"""VariationalGPModel with its default Gaussian likelihood (continuous outcomes): the whitened variational
    GP of the classification model (same kernel, mean, inducing points and warm starts) on standardized
    outcomes. ``elbo = fast`` (default) fits the hyper-parameters by L-BFGS on the collapsed bound (the
    ELBO at its optimal ``q``) and sets ``q`` in closed form (a warm state's hyper-parameters held: ``q``
    alone); otherwise BoTorch's L-BFGS on GPyTorch's ``VariationalELBO``, hyper-parameters and ``q``
    together. Returns the fitted pieces and the observation noise in the outcome's units."""
    d = int(spec.dim)
    opts = spec.options
    n = X.shape[0]
    Xt = torch.as_tensor(X, dtype=DTYPE)
    covar, mean = _default_mean_covar(d, opts)
    Z = _inducing_points(spec, Xt, covar, warm_state)
    likelihood = GaussianLikelihood(noise_constraint=GreaterThan(1e-6)).to(DTYPE)
    model, digest, warm, reuse = _variational_gp(spec, X, y, Z, likelihood, covar, mean, warm_state, refit, Standardize(m=1))
    vs = model.model.variational_strategy
    if n:
        if reuse:
            vs.variational_params_initialized.fill_(1)
        else:
            mll = VariationalELBO(likelihood, model.model, num_data=n)
            if opt_str(opts, "elbo", "fast") == "fast":
                if refit or not warm:
                    with _hypers_held(model, True, variational=True):
                        _fit_mll(mll, opts, max_attempts=1 if warm else 2, closure=collapsed_gaussian_closure(model, mll))
                set_optimal_gaussian_q(model)
            else:

                def run(attempts: int, hold: bool) -> None:
                    with _hypers_held(model, hold):
                        _fit_mll(mll, opts, max_attempts=attempts)
                    vs.variational_params_initialized.fill_(1)

                _warm_fit(model, warm_state, Z, warm, refit, run)
    scale, offset = 1.0, 0.0
    if n:
        ot: Any = model.outcome_transform  # Standardize: the model's f is in standard units
        offset, scale = float(ot.means.reshape(-1)[0]), float(ot.stdvs.reshape(-1)[0])
    latent, train_X, hypers = _variational_result(model, prior_mean_fn(mean), Xt, digest, scale, offset)
    noise = float(likelihood.noise.detach().reshape(-1)[0]) * scale**2
    return (model if n else None), latent, train_X, hypers, noise


def _regression(
    spec: ModelSpec, X: np.ndarray, y: np.ndarray, warm_state: ModelState | None, refit: bool
) -> tuple[Model | None, LatentGP, Tensor, dict[str, list], float]:
    d = int(spec.dim)
    opts = spec.options
    n = X.shape[0]
    Xt = torch.as_tensor(X, dtype=DTYPE)
    yt = torch.as_tensor(y, dtype=DTYPE).unsqueeze(-1)
    kern = opts.get("kernel", None)
    covar = None
    mean: Mean | None = None
    if uses_factory(opts):  # AEPsych's mean/covariance factory options (config.py)
        covar = build_covar(d, opts, REGRESSION_OUTPUTSCALE_BOUNDS)
        mean = build_mean(opts) if "mean" in opts else None
    elif kern:
        covar = make_kernel(d, str(kern), lengthscale_prior=(3.0, 6.0), outputscale_bounds=REGRESSION_OUTPUTSCALE_BOUNDS)
    if n == 0:  # prior only: build the modules on a dummy point
        Xt, yt = torch.full((1, d), 0.5, dtype=DTYPE), torch.zeros(1, 1, dtype=DTYPE)
    model = SingleTaskGP(Xt, yt, covar_module=covar, mean_module=mean, outcome_transform=Standardize(m=1)).to(DTYPE)
    warm = _warm_usable(warm_state, spec.kind)
    if warm:
        assert warm_state is not None
        _load(model, warm_state.hyperparameters, include_variational=False)
    if n and (refit or not warm):
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        _fit_mll(mll, opts, max_attempts=1 if warm else 2)
    model.eval()
    with torch.no_grad():
        kernel = KernelFn(model.covar_module)
        mean_fn = prior_mean_fn(model.mean_module)
        noise = float(model.likelihood.noise.detach().reshape(-1)[0])
        if n:
            Xtr = model.train_inputs[0].detach()
            ys = model.train_targets.detach().reshape(-1)
            K = kernel(Xtr, Xtr) + noise * torch.eye(n, dtype=DTYPE)
            L = psd_safe_cholesky(K)
            w = torch.linalg.solve_triangular(L, (ys - mean_fn(Xtr)).unsqueeze(-1), upper=False).squeeze(-1)
            M = -torch.eye(n, dtype=DTYPE)
            ot: Any = model.outcome_transform  # Standardize
            offset = float(ot.means.reshape(-1)[0])
            scale = float(ot.stdvs.reshape(-1)[0])
        else:
            Xtr = torch.zeros(0, d, dtype=DTYPE)
            L = w = M = torch.zeros(0, dtype=DTYPE)
            offset, scale = 0.0, 1.0
    latent = LatentGP(kernel, mean_fn, Xtr, L, w, M, scale=scale, offset=offset)
    return (model if n else None), latent, Xtr, _collect(model, False), noise * scale**2


def _pairwise(
    spec: ModelSpec, X: np.ndarray, y: np.ndarray, warm_state: ModelState | None, refit: bool
) -> tuple[Model | None, LatentGP, Tensor, dict[str, list]]:
    d = int(spec.dim)
    opts = spec.options
    # AEPsych's default factory's kernel options (config.py), else PairwiseGP's own priors
    covar = build_covar(d, opts, PAIRWISE_OUTPUTSCALE_BOUNDS) if uses_factory(opts) else pairwise_kernel(d)
    warm = _warm_usable(warm_state, spec.kind)
    if warm:
        assert warm_state is not None
        _load(covar, {k.removeprefix("covar_module."): v for k, v in warm_state.hyperparameters.items()}, False)
    datapoints, comps = pairwise_to_comparisons(X, y) if X.shape[0] else (None, None)
    if comps is None or comps.shape[0] == 0:
        kernel = KernelFn(covar)
        empty = torch.zeros(0, dtype=DTYPE)
        latent = LatentGP(kernel, prior_mean_fn(None), torch.zeros(0, d, dtype=DTYPE), empty, empty, empty)
        hypers = {f"covar_module.{k}": v for k, v in _collect(covar, False).items()}
        return None, latent, torch.zeros(0, d, dtype=DTYPE), hypers
    # data without BoTorch's initial mode search (fsolve from a randomised start): the fit below,
    # or the final update, finds the mode
    model = PairwiseGP(None, None, covar_module=covar).to(dtype=DTYPE)
    model.set_train_data(datapoints, comps, update_model=False)
    packed = None
    mll = PairwiseLaplaceMarginalLogLikelihood(model.likelihood, model)
    fast = opt_str(opts, "laplace", "fast") == "fast" and PackedPairwiseLaplace.supports(model, mll)
    if refit or not warm:
        ftol = opt_float(opts, "fit_ftol", PAIRWISE_FIT_FTOL) or PAIRWISE_FIT_FTOL
        if fast:
            packed = PackedPairwiseLaplace(model, mll)
            maxiter = opt_int(opts, "max_fit_iter", 200)
            if not packed.fit(maxiter, ftol, opt_float(opts, "max_fit_time", None)):
                packed = None
        if packed is None:
            _fit_mll(mll, opts, max_attempts=1 if warm else 2, ftol=ftol)
    elif fast:
        # hyper-parameters kept: only the mode for the new data, by the same Newton solve. Left to
        # BoTorch's set_train_data below, SciPy's fsolve starts from a randomised win-count guess and
        # keeps wherever it stops: on quality.py's pairwise seed 59 (40 comparisons) utilities from
        # -37 to 20 instead of -2 to 4, 65 % of pairs ranked the wrong way. BoTorch's solve if Newton fails.
        packed = PackedPairwiseLaplace(model, mll)
        if not packed.settle():
            packed = None
    with torch.no_grad():  # Laplace mode / Hessian at the final hyper-parameters
        if packed is not None:  # fsolve starts at the mode found already
            model._x0 = packed.f.copy()  # type: ignore[assignment]  # BoTorch declares it None
        model.set_train_data(datapoints, comps, update_model=True)
    model.eval()
    with torch.no_grad():
        model.posterior(model.datapoints[:1])  # derived predictive factors are current
        kernel = KernelFn(model.covar_module)
        Xd = model.datapoints.detach()
        K = model.covar.detach()
        L = psd_safe_cholesky(0.5 * (K + K.mT))
        mean_fn = prior_mean_fn(model.mean_module)
        utility: Any = model.utility
        w = torch.linalg.solve_triangular(L, (utility.detach() - mean_fn(Xd)).unsqueeze(-1), upper=False).squeeze(-1)
        B = L.mT @ model.likelihood_hess.detach() @ L
        B = 0.5 * (B + B.mT)
        Xs = torch.linalg.solve(torch.eye(B.shape[0], dtype=DTYPE) + B, B)
        M = -0.5 * (Xs + Xs.mT)
    latent = LatentGP(kernel, mean_fn, Xd, L, w, M)
    return model, latent, Xd, _collect(model, False)


def fit_model(
    spec: ModelSpec,
    X: np.ndarray,
    y: np.ndarray,
    warm_state: ModelState | None = None,
    refit: bool = True,
) -> FittedModel:
    r"""Build and fit the model named by ``spec.kind`` on unit-cube data.

    Args:
        spec: model kind, dim and options.
        X: ``n x d`` (pairwise ``n x 2 x d``) validated inputs in ``[0, 1]``.
        y: ``n`` outcomes.
        warm_state: hyper-parameters of an earlier fit of the same kind. With
            ``refit=True`` they initialise the optimiser; with ``refit=False`` they are
            kept as they are and only the data are conditioned on (variational
            parameters for classification; nothing to optimise for regression / pairwise).
        refit: see ``warm_state``; ignored (full fit) without a usable ``warm_state``.

    Returns:
        A ``FittedModel`` (``model`` is ``None`` when there are no data: prior only).
    """
    if spec.kind not in KNOWN_MODELS:
        raise ValueError(f"unknown model {spec.kind!r}")
    t0 = time.perf_counter()
    n = int(X.shape[0])
    cutpoints = None
    family = model_family(spec.kind, spec.options)
    if spec.kind == CLASSIFICATION:
        model, latent, train_X, hypers = _classification(spec, X, y, warm_state, refit)
        noise = PROBIT_PENDING_NOISE
    elif spec.kind == REGRESSION:
        model, latent, train_X, hypers, noise = _regression(spec, X, y, warm_state, refit)
    elif spec.kind == PAIRWISE:
        model, latent, train_X, hypers = _pairwise(spec, X, y, warm_state, refit)
        noise = PROBIT_PENDING_NOISE
    elif spec.kind == MONOTONIC:  # GP classification, its posterior projected monotone (compute/monotonic.py)
        from psyserve.compute.monotonic import ProjectedLatent, monotonic_options

        dims, grid_size, min_f = monotonic_options(spec.options, int(spec.dim))
        model, base, train_X, hypers = _classification(spec, X, y, warm_state, refit)
        latent = ProjectedLatent(base, dims, grid_size, min_f)  # type: ignore[assignment]  # duck-typed LatentGP
        noise = PROBIT_PENDING_NOISE
    elif spec.kind in SEMIP_MODELS:
        from psyserve.compute.semip import fit_semip

        fit = fit_semip(spec, X, y, warm_state, refit)
        # a placeholder module: the acquisitions read the posterior from ``latent`` (ProductLatent)
        model, latent, train_X, hypers = (torch.nn.Module() if n else None), fit.latent, fit.train_X, fit.hypers  # type: ignore[assignment]
        noise = PROBIT_PENDING_NOISE
    elif spec.kind == ORDINAL or family == ORDINAL:  # VariationalGPModel with the ordinal likelihood
        model, latent, train_X, hypers, cutpoints = _ordinal(spec, X, y, warm_state, refit)
        noise = PROBIT_PENDING_NOISE  # one observation's information about f: probit-like
    elif family == CLASSIFICATION:  # VariationalGPModel with a Bernoulli likelihood: the classification fit
        model, latent, train_X, hypers = _classification(spec, X, y, warm_state, refit)
        noise = PROBIT_PENDING_NOISE
    elif spec.kind == VARIATIONAL:  # its default, Gaussian likelihood
        model, latent, train_X, hypers, noise = _variational_gaussian(spec, X, y, warm_state, refit)
    else:  # pragma: no cover - guarded above
        raise ValueError(f"unknown model {spec.kind!r}")
    state = ModelState(kind=spec.kind, hyperparameters=hypers, n_train=n)
    return FittedModel(
        kind=spec.kind,
        dim=int(spec.dim),
        model=model,
        latent=latent,
        train_X=train_X,
        pending_noise=float(noise),
        state=state,
        fit_seconds=time.perf_counter() - t0,
        link=link_of(spec.options) if family in BINARY_MODELS else PROBIT,
        cutpoints=cutpoints,
        family=family,
    )
