"""The hyper-parameter fit of the Ax-style optimisation's GPs in plain tensor algebra.

BoTorch's default SingleTaskGP (constant mean, ARD RBF kernel with the dimension-scaled LogNormal
length-scale prior bounded below by 0.025, fixed noise or a LogNormal(-4, 1) noise prior bounded
below by 1e-4, outcomes standardised) is fitted by maximising GPyTorch's ExactMarginalLogLikelihood
(log density of the standardised targets plus the log priors, over n) with L-BFGS-B. GPyTorch
evaluates that through its lazy-tensor machinery at several ms per evaluation; the same function
written directly (one Cholesky factor of an n x n matrix) costs a fraction of it, so this module
can afford two starts per fit: the warm start (the last fit's values) and the cold start BoTorch
itself uses (the priors' modes), keeping the better. A warm start alone can stay in a poor mode
that a refit from the default would leave.

Imports torch/BoTorch/GPyTorch/SciPy only; no server state or I/O, no other compute module. The
fitted values are written into the model, which the caller keeps using as any BoTorch model.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["fast_fit", "fits_fast"]


def _priors(model: Any) -> tuple[Any, Any | None]:
    """(length-scale prior, noise prior or None) when `model` is the GP this module mirrors, else raise."""
    from botorch.models import SingleTaskGP
    from gpytorch.constraints import GreaterThan
    from gpytorch.kernels import RBFKernel
    from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood
    from gpytorch.means import ConstantMean
    from gpytorch.priors import LogNormalPrior

    if type(model) is not SingleTaskGP or getattr(model, "input_transform", None) is not None:
        raise TypeError("not a plain SingleTaskGP")
    kernel, mean = model.covar_module, model.mean_module
    if type(kernel) is not RBFKernel or type(mean) is not ConstantMean or kernel.active_dims is not None:
        raise TypeError("not an RBF kernel with a constant mean")
    if model.train_inputs[0].dim() != 2 or model.train_targets.dim() != 1:
        raise TypeError("batched model")
    ls_prior = getattr(kernel, "lengthscale_prior", None)
    constraint = kernel.raw_lengthscale_constraint
    if not isinstance(ls_prior, LogNormalPrior) or type(constraint) is not GreaterThan or constraint.enforced:
        raise TypeError("length scales not as BoTorch's default")
    if any(True for name, *_ in mean.named_priors()) or getattr(mean, "constant_prior", None) is not None:
        raise TypeError("a prior on the mean")
    likelihood = model.likelihood
    if type(likelihood) is FixedNoiseGaussianLikelihood:
        if likelihood.second_noise_covar is not None:
            raise TypeError("learned noise on top of fixed noise")
        return ls_prior, None
    if type(likelihood) is GaussianLikelihood:
        noise_covar = likelihood.noise_covar
        noise_prior = getattr(noise_covar, "noise_prior", None)
        noise_constraint = noise_covar.raw_noise_constraint
        if not isinstance(noise_prior, LogNormalPrior) or type(noise_constraint) is not GreaterThan or noise_constraint.enforced:
            raise TypeError("noise not as BoTorch's default")
        return ls_prior, noise_prior
    raise TypeError("unknown likelihood")


def fits_fast(model: Any) -> bool:
    """Whether `fast_fit` mirrors this model's marginal likelihood exactly."""
    try:
        _priors(model)
    except TypeError:
        return False
    return True


def _lognormal_log_prob_np(x: np.ndarray, loc: float, scale: float) -> tuple[float, np.ndarray]:
    """Sum of LogNormal(loc, scale) log densities at x, and its gradient."""
    log_x = np.log(x)
    value = float(np.sum(-((log_x - loc) ** 2) / (2 * scale**2) - log_x - math.log(scale) - 0.5 * math.log(2 * math.pi)))
    return value, (-(log_x - loc) / scale**2 - 1.0) / x


def _cholesky(K: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor; on failure GPyTorch's jitter schedule (1e-8, 1e-7, 1e-6 on the diagonal)."""
    try:
        return np.linalg.cholesky(K)
    except np.linalg.LinAlgError:
        pass
    for jitter in (1e-8, 1e-7, 1e-6):
        try:
            return np.linalg.cholesky(K + jitter * np.eye(len(K)))
        except np.linalg.LinAlgError:
            continue
    raise np.linalg.LinAlgError("not positive definite after jitter")


class _Objective:
    """Minus GPyTorch's ExactMarginalLogLikelihood of the model, as a function of
    (constant mean, length scales[, noise]) packed in one vector, with its gradient by hand
    (alpha = K^-1 r, W = K^-1 - alpha alpha^T: d/d theta = tr(W dK/d theta) / 2)."""

    def __init__(self, model: Any) -> None:
        self.ls_prior, self.noise_prior = _priors(model)
        X = model.train_inputs[0].detach().numpy().astype(float)
        self.y = model.train_targets.detach().numpy().astype(float)
        self.n, self.d = X.shape
        self.diff2 = (X[:, None, :] - X[None, :, :]) ** 2  # n x n x d
        self.fixed_noise = (
            None
            if self.noise_prior is not None
            else np.broadcast_to(model.likelihood.noise.detach().numpy().reshape(-1), (self.n,)).astype(float)
        )
        self.ls_lower = float(model.covar_module.raw_lengthscale_constraint.lower_bound)
        self.noise_lower = (
            float(model.likelihood.noise_covar.raw_noise_constraint.lower_bound) if self.noise_prior is not None else 0.0
        )
        self.ls_loc, self.ls_scale = float(self.ls_prior.loc), float(self.ls_prior.scale)
        if self.noise_prior is not None:
            self.noise_loc, self.noise_scale = float(self.noise_prior.loc), float(self.noise_prior.scale)

    @property
    def size(self) -> int:
        return 1 + self.d + (1 if self.noise_prior is not None else 0)

    def bounds(self) -> list[tuple[float | None, float | None]]:
        b: list[tuple[float | None, float | None]] = [(None, None)] + [(self.ls_lower, None)] * self.d
        if self.noise_prior is not None:
            b.append((self.noise_lower, None))
        return b

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        n, d = self.n, self.d
        constant, ls = float(x[0]), np.asarray(x[1 : 1 + d], dtype=float)
        if np.any(ls <= 0) or (self.noise_prior is not None and x[1 + d] <= 0):
            return math.inf, np.zeros_like(x)
        Kf = np.exp(-0.5 * (self.diff2 / ls**2).sum(-1))
        noise = np.full(n, float(x[1 + d])) if self.fixed_noise is None else self.fixed_noise
        try:
            L = _cholesky(Kf + np.diag(noise))
        except np.linalg.LinAlgError:  # a matrix that jitter cannot save: tell L-BFGS-B this is no place to go
            return math.inf, np.zeros_like(x)
        r = self.y - constant
        Linv = np.linalg.inv(L)  # n x n lower-triangular
        Kinv = Linv.T @ Linv
        alpha = Kinv @ r
        log_density = -0.5 * float(r @ alpha) - float(np.log(np.diagonal(L)).sum()) - 0.5 * n * math.log(2 * math.pi)
        prior, prior_ls = _lognormal_log_prob_np(ls, self.ls_loc, self.ls_scale)
        W = Kinv - np.outer(alpha, alpha)
        grad = np.empty(self.size)
        grad[0] = float(alpha.sum())  # d log_density / d constant
        grad[1 : 1 + d] = 0.5 * np.einsum("ij,ijk->k", -W * Kf, self.diff2) / ls**3 + prior_ls
        if self.noise_prior is not None:
            noise_prior, noise_grad = _lognormal_log_prob_np(np.array([x[1 + d]], dtype=float), self.noise_loc, self.noise_scale)
            prior += noise_prior
            grad[1 + d] = -0.5 * float(np.trace(W)) + float(noise_grad[0])
        value = -(log_density + prior) / n
        if not math.isfinite(value):
            return math.inf, np.zeros_like(x)
        return value, -grad / n

    def current(self, model: Any) -> np.ndarray:
        parts = [model.mean_module.constant.detach().reshape(1), model.covar_module.lengthscale.detach().reshape(-1)]
        if self.noise_prior is not None:
            parts.append(model.likelihood.noise.detach().reshape(1))
        return torch.cat(parts).numpy().astype(float)

    def default(self, model: Any) -> np.ndarray:
        """Where BoTorch's own fit starts: mean 0, every length scale (and the noise) at its prior's mode."""
        ls_mode = float(torch.exp(self.ls_prior.loc - self.ls_prior.scale**2))
        parts = [0.0] + [max(ls_mode, self.ls_lower)] * self.d
        if self.noise_prior is not None:
            parts.append(max(float(torch.exp(self.noise_prior.loc - self.noise_prior.scale**2)), self.noise_lower))
        return np.asarray(parts, dtype=float)

    def write(self, model: Any, x: np.ndarray) -> None:
        with torch.no_grad():
            model.mean_module.constant = torch.tensor(x[0], dtype=torch.double)
            model.covar_module.lengthscale = torch.tensor(x[1 : 1 + self.d], dtype=torch.double).reshape(
                model.covar_module.lengthscale.shape
            )
            if self.noise_prior is not None:
                model.likelihood.noise = torch.tensor([x[1 + self.d]], dtype=torch.double)


def fast_fit(model: Any, maxiter: int, warm: bool) -> float:
    """Fit `model` (see `fits_fast`) in place by L-BFGS-B from its current values (when `warm`)
    and from BoTorch's default start, keeping the lower loss. Returns that loss (minus the
    marginal log likelihood per observation, priors included)."""
    from scipy.optimize import minimize

    objective = _Objective(model)
    starts = [objective.default(model)]
    if warm:
        starts.insert(
            0, np.clip(objective.current(model), [b[0] if b[0] is not None else -np.inf for b in objective.bounds()], None)
        )
    best_x, best_value = starts[0], math.inf
    for x0 in starts:
        result = minimize(
            objective.value_and_grad,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=objective.bounds(),
            options={"maxiter": int(maxiter)},
        )
        value = float(result.fun)
        if math.isfinite(value) and value < best_value:
            best_x, best_value = np.asarray(result.x, dtype=float), value
    if not math.isfinite(best_value):
        raise RuntimeError("the marginal likelihood could not be evaluated at any start")
    objective.write(model, best_x)
    return best_value
