"""The variational ELBOs: for classification a fused torch closure and the packed numpy objective with
hand-derived gradients; for a Gaussian likelihood the collapsed bound and its optimal q in closed form.

Owns the variational objectives of the models models.py builds (GPClassificationModel, OrdinalGPModel,
VariationalGPModel); must not build models, choose fitting strategies or know about acquisitions or jobs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
import torch
from botorch.models import SingleTaskVariationalGP
from botorch.optim.closures import ForwardBackwardClosure
from botorch.optim.utils import get_parameters_and_bounds
from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
from gpytorch.means import ConstantMean
from gpytorch.mlls import VariationalELBO
from gpytorch.priors import GammaPrior, LogNormalPrior, NormalPrior
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from psyserve.compute.kernels import kernel_lengthscale_grad_np, plain_kernel, stationary_kernel
from psyserve.compute.lbfgs import minimize_packed
from psyserve.compute.links import PROBIT, Link
from psyserve.compute.numerics import (
    DTYPE,
    GH20_W,
    GH20_W_T,
    GH20_X,
    GH20_X_T,
    LOG_SQRT_2PI,
    gamma_log_prior,
    lognormal_log_prior,
)


def variational_elbo_closure(
    model: SingleTaskVariationalGP,
    mll: VariationalELBO,
    X: Tensor,
    y: Tensor,
    link: Link = PROBIT,
    log_lik: Callable[[Tensor], Tensor] | None = None,
) -> ForwardBackwardClosure:
    r"""A fused, plain-torch forward/backward closure for ``mll`` (a ``VariationalELBO``).

    Computes the same objective as GPyTorch's ``VariationalELBO`` for the whitened
    ``VariationalStrategy`` + ``CholeskyVariationalDistribution`` + ``BernoulliLikelihood``
    model built here (20-point Gauss-Hermite expected log-likelihood, KL to ``N(0, I)``,
    hyper-parameter log-priors, all divided by ``n``), but without the lazy-tensor
    overhead (about 5x faster per evaluation for ``n <= 100``). ``log Phi`` uses
    ``log_ndtr`` (no clamping). Handed to ``fit_gpytorch_mll(mll, closure=...)`` when
    ``PackedElbo`` (the same objective in numpy) does not apply or fails, and the
    autograd reference ``PackedElbo``'s gradients are tested against.

    Args:
        X: ``n x d`` training inputs; y: ``n`` 0/1 outcomes; link: the response link (floor
            objectives; ``log Phi`` for the default probit).
        log_lik: another likelihood instead of the link's: latent values ``n x 20`` (the quadrature
            nodes of each observation) -> ``log p(y_i | f)``, differentiable in the likelihood's own
            parameters (the ordinal model's cut-points), which are fitted with the rest.
    """
    gp = model.model
    vs = gp.variational_strategy
    vd = vs._variational_distribution
    cm = gp.covar_module
    base = cm.base_kernel if isinstance(cm, ScaleKernel) else cm
    kind = "rbf" if isinstance(base, RBFKernel) else "matern"
    nu = float(getattr(base, "nu", 2.5))
    # other kernels (AEPsych's song / pairwise factories: compute.mean_covar) through GPyTorch's own
    # evaluation; the rest of the objective is the same
    stationary = isinstance(base, (RBFKernel, MaternKernel)) and base.active_dims is None
    plain = None if stationary else plain_kernel(cm, live=True)
    Z = vs.inducing_points.detach()
    m = Z.shape[-2]
    n = X.shape[-2]
    jitter = float(vs.jitter_val)
    sign = (2.0 * y - 1.0).unsqueeze(-1)
    tril = torch.ones(m, m, dtype=DTYPE).tril()
    eye = torch.eye(m, dtype=DTYPE)
    priors = list(mll.named_priors())
    # GPyTorch would (re)initialise q(v) to N(0 + 1e-3 noise, I) on its first training call;
    # the construction values (mean 0, Cholesky factor I) are already that prior.
    vs.variational_params_initialized.fill_(1)

    def forward() -> Tensor:
        if stationary:
            ls = base.lengthscale.reshape(-1)
            scale: Tensor = cm.outputscale.reshape(()) if isinstance(cm, ScaleKernel) else torch.ones((), dtype=DTYPE)
            Kzz, Kzx = stationary_kernel(Z, Z, ls, scale, kind, nu), stationary_kernel(Z, X, ls, scale, kind, nu)
        elif plain is not None:
            Kzz, Kzx, scale = plain(Z, Z, False), plain(Z, X, False), plain(X, X, True)
        else:
            Kzz, Kzx, scale = cm(Z, Z).to_dense(), cm(Z, X).to_dense(), cm(X, X, diag=True).to_dense()
        L = psd_safe_cholesky(Kzz + jitter * eye)
        A = torch.linalg.solve_triangular(L, Kzx, upper=False)
        mvec = vd.variational_mean
        Ls = vd.chol_variational_covar * tril
        mu = gp.mean_module(X) + A.mT @ mvec
        var = (scale + jitter + (Ls.mT @ A).pow(2).sum(-2) - A.pow(2).sum(-2)).clamp_min(1e-10)
        f = mu.unsqueeze(-1) + torch.sqrt(2.0 * var).unsqueeze(-1) * GH20_X_T
        if log_lik is not None:
            ell = (log_lik(f) * GH20_W_T).sum(-1) / math.sqrt(math.pi)
        elif link.is_plain_probit:
            ell = (torch.special.log_ndtr(sign * f) * GH20_W_T).sum(-1) / math.sqrt(math.pi)
        else:
            ell = (link.loglik(f, y.unsqueeze(-1)) * GH20_W_T).sum(-1) / math.sqrt(math.pi)
        kl = 0.5 * (Ls.pow(2).sum() + mvec.pow(2).sum() - m - 2.0 * torch.log(torch.diagonal(Ls).abs()).sum())
        log_prior = sum(
            (prior.log_prob(closure(module)).sum() for _, module, prior, closure, _ in priors),
            torch.zeros((), dtype=DTYPE),
        )
        return -(ell.sum() - kl + log_prior) / n

    parameters = {k: p for k, p in get_parameters_and_bounds(mll)[0].items() if p.requires_grad}
    return ForwardBackwardClosure(forward=forward, parameters=parameters)


def _gaussian_terms(model: SingleTaskVariationalGP) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    r"""For the whitened variational GP under a Gaussian likelihood, on its (transformed) training data:
    the features ``A = L^{-1} K_ZX`` (``m x n``), residuals ``r = y - mean(X)``, the noise, the prior
    variances ``k(x, x)`` (plus the strategy's jitter, as GPyTorch's marginals have it) and the
    Cholesky factor ``L_B`` of ``B = I + A A^T / noise``."""
    gp = model.model
    vs = gp.variational_strategy
    X, y = gp.train_inputs[0], gp.train_targets.reshape(-1)
    Z = vs.inducing_points.detach()
    jitter = float(vs.jitter_val)
    eye = torch.eye(Z.shape[-2], dtype=DTYPE)
    cm = gp.covar_module
    L = psd_safe_cholesky(cm(Z, Z).to_dense() + jitter * eye)
    A = torch.linalg.solve_triangular(L, cm(Z, X).to_dense(), upper=False)
    kxx = cm(X, X, diag=True).to_dense() + jitter
    noise = model.likelihood.noise.reshape(())
    LB = psd_safe_cholesky(eye + (A @ A.mT) / noise)
    return A, y - gp.mean_module(X), noise, kxx, LB


def collapsed_gaussian_closure(model: SingleTaskVariationalGP, mll: VariationalELBO) -> ForwardBackwardClosure:
    r"""The ELBO of a Gaussian-likelihood variational GP at its optimal ``q(v)`` (Titsias' collapsed bound),
    as a closure over the hyper-parameters only: ``log N(r | 0, A^T A + noise I) - tr(K_XX - A^T A) /
    (2 noise)`` plus the hyper-parameters' log-priors, over ``n`` (GPyTorch's scaling). Maximising it
    finds the same optimum as GPyTorch's ``VariationalELBO`` over hyper-parameters and ``q`` together,
    with a handful of parameters instead of ``m (m + 3) / 2`` more; ``set_optimal_gaussian_q`` then
    sets ``q`` to the optimum."""
    priors = list(mll.named_priors())

    def forward() -> Tensor:
        A, r, noise, kxx, LB = _gaussian_terms(model)
        n = r.shape[-1]
        c = torch.linalg.solve_triangular(LB, (A @ r).unsqueeze(-1), upper=False).squeeze(-1) / noise
        log_marginal = (
            -n * LOG_SQRT_2PI
            - 0.5 * n * torch.log(noise)
            - torch.log(torch.diagonal(LB)).sum()
            - 0.5 * (r @ r) / noise
            + 0.5 * (c @ c)
        )
        trace = 0.5 * (kxx.sum() - A.pow(2).sum()) / noise
        log_prior = sum(
            (prior.log_prob(closure(module)).sum() for _, module, prior, closure, _ in priors),
            torch.zeros((), dtype=DTYPE),
        )
        return -(log_marginal - trace + log_prior) / n

    parameters = {k: p for k, p in get_parameters_and_bounds(mll)[0].items() if p.requires_grad and "variational" not in k}
    return ForwardBackwardClosure(forward=forward, parameters=parameters)


def set_optimal_gaussian_q(model: SingleTaskVariationalGP) -> None:
    r"""Set the whitened ``q(v) = N(mu, S)`` of a Gaussian-likelihood variational GP to its optimum at the
    current hyper-parameters: ``S = B^{-1}``, ``mu = S A r / noise`` (``_gaussian_terms``)."""
    with torch.no_grad():
        A, r, noise, _, LB = _gaussian_terms(model)
        eye = torch.eye(LB.shape[-1], dtype=DTYPE)
        LB_inv = torch.linalg.solve_triangular(LB, eye, upper=False)
        S = LB_inv.mT @ LB_inv
        vd = model.model.variational_strategy._variational_distribution
        vd.variational_mean.copy_(S @ (A @ r) / noise)
        vd.chol_variational_covar.copy_(psd_safe_cholesky(0.5 * (S + S.mT)))
        model.model.variational_strategy.variational_params_initialized.fill_(1)


class PackedElbo:
    r"""The objective of ``variational_elbo_closure`` in numpy, with hand-derived gradients, on one packed vector.

    ``x = [length-scales (d), output scale, constant mean, v (m), tril(L_s) (m(m+1)/2)]``.
    An evaluation is a few dozen small numpy / LAPACK calls (about 5x faster than the
    autograd closure: a warm fit's time here is per-op overhead, not FLOPs), and L-BFGS-B
    sees m(m+1)/2 instead of m^2 covariance entries. Gradients, with ``A = L^{-1} K_ZX``,
    ``S = L_s L_s^T`` and ``g``/``h`` the derivatives of the expected log-likelihood with
    respect to the marginal means/variances (Gauss-Hermite): ``d/dv = A g - v``,
    ``d/dL_s = 2 A diag(h) A^T L_s - L_s + diag(1 / diag L_s)``,
    ``d/dA = v g^T + 2 (S - I) A diag(h)``, then back through ``A = L^{-1} K_ZX``, the
    Cholesky factor (Murray 2016) and the kernel to the output scale and length-scales.
    Handles the model ``_classification`` builds (ARD RBF or Matern-5/2, identity-transformed
    bounded hyper-parameters, Gamma or LogNormal length-scale and Normal constant priors);
    ``PackedElbo.supports`` says when it applies. Checked against autograd in the tests.
    """

    def __init__(
        self, model: SingleTaskVariationalGP, mll: VariationalELBO, X: Tensor, y: Tensor, link: Link = PROBIT
    ) -> None:
        self.link = link
        self.y = y.detach().numpy()
        gp = model.model
        vs = gp.variational_strategy
        self.vd = vs._variational_distribution
        self.cm = gp.covar_module
        self.base = self.cm.base_kernel
        self.mean = gp.mean_module
        self.kind = "rbf" if isinstance(self.base, RBFKernel) else "matern"
        Z = vs.inducing_points.detach().numpy()
        Xn = X.detach().numpy()
        self.m, self.n, self.d = Z.shape[0], Xn.shape[0], Z.shape[1]
        self.jitter = float(vs.jitter_val)
        self.sign = 2.0 * y.detach().numpy() - 1.0
        self.Dzz2 = (Z[:, None, :] - Z[None, :, :]) ** 2  # m x m x d
        self.Dzx2 = (Z[:, None, :] - Xn[None, :, :]) ** 2  # m x n x d
        self.eye = np.eye(self.m)
        self.tril = np.tril_indices(self.m)
        self.diag_pos = np.flatnonzero(self.tril[0] == self.tril[1])  # diagonal entries in the packed tril
        priors = {type(prior): prior for _, _, prior, _, _ in mll.named_priors()}
        normal = priors[NormalPrior]
        if GammaPrior in priors:
            gamma = priors[GammaPrior]
            self.ls_prior: tuple[str, float, float] = ("gamma", float(gamma.concentration), float(gamma.rate))
        else:
            lognormal = priors[LogNormalPrior]
            self.ls_prior = ("lognormal", float(lognormal.base_dist.loc), float(lognormal.base_dist.scale))
        self.normal = (float(normal.loc), float(normal.scale))
        vs.variational_params_initialized.fill_(1)

    @staticmethod
    def supports(model: SingleTaskVariationalGP, mll: VariationalELBO) -> bool:
        r"""Whether the model is the one this objective differentiates by hand."""
        gp = model.model
        cm, mean = gp.covar_module, gp.mean_module
        base = cm.base_kernel if isinstance(cm, ScaleKernel) else None
        if base is None or not (isinstance(base, RBFKernel) or (isinstance(base, MaternKernel) and float(base.nu) == 2.5)):
            return False
        if base.active_dims is not None or not isinstance(mean, ConstantMean):
            return False
        identity = all(c is not None and not c.enforced for c in (base.raw_lengthscale_constraint, cm.raw_outputscale_constraint))
        priors = [(module, type(prior)) for _, module, prior, _, _ in mll.named_priors()]
        ordered = sorted(priors, key=lambda mp: mp[1].__name__)
        return identity and ordered in ([(base, GammaPrior), (mean, NormalPrior)], [(base, LogNormalPrior), (mean, NormalPrior)])

    # ------------------------------------------------------------ packing
    def get(self) -> np.ndarray:
        r"""The model's current parameters as one packed vector."""
        with torch.no_grad():
            Ls = self.vd.chol_variational_covar.detach().numpy()
            return np.concatenate(
                [
                    self.base.raw_lengthscale.detach().numpy().reshape(-1),
                    self.cm.raw_outputscale.detach().numpy().reshape(-1),
                    self.mean.raw_constant.detach().numpy().reshape(-1),
                    self.vd.variational_mean.detach().numpy().reshape(-1),
                    Ls[self.tril],
                ]
            )

    def set(self, x: np.ndarray) -> None:
        r"""Write a packed vector back into the model's parameters."""
        d, m = self.d, self.m
        Ls = np.zeros((m, m))
        Ls[self.tril] = x[d + 2 + m :]
        with torch.no_grad():
            self.base.raw_lengthscale.copy_(torch.as_tensor(x[:d], dtype=DTYPE).reshape(self.base.raw_lengthscale.shape))
            self.cm.raw_outputscale.copy_(torch.as_tensor(x[d], dtype=DTYPE).reshape(self.cm.raw_outputscale.shape))
            self.mean.raw_constant.copy_(torch.as_tensor(x[d + 1], dtype=DTYPE).reshape(self.mean.raw_constant.shape))
            self.vd.variational_mean.copy_(torch.as_tensor(x[d + 2 : d + 2 + m], dtype=DTYPE))
            self.vd.chol_variational_covar.copy_(torch.as_tensor(Ls, dtype=DTYPE))

    def bounds(self, freeze_hyperparameters: bool) -> tuple[np.ndarray, np.ndarray]:
        r"""Box bounds (length-scale / output-scale constraints; frozen entries pinned to their values)."""
        size = self.d + 2 + self.m + len(self.tril[0])
        lo, hi = np.full(size, -np.inf), np.full(size, np.inf)
        lc, oc = self.base.raw_lengthscale_constraint, self.cm.raw_outputscale_constraint
        lo[: self.d], hi[: self.d] = float(lc.lower_bound), float(lc.upper_bound)
        lo[self.d], hi[self.d] = float(oc.lower_bound), float(oc.upper_bound)
        if freeze_hyperparameters:
            x = self.get()
            lo[: self.d + 2] = hi[: self.d + 2] = x[: self.d + 2]
        return lo, hi

    # ------------------------------------------------------------ objective
    def _kernel(self, D2: np.ndarray, ls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""Unit-scale kernel values and ``d k / d l_d`` (``... x d``) from squared differences."""
        return kernel_lengthscale_grad_np(D2, ls, self.kind)

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        r"""Loss ``-(ELBO + log prior) / n`` and its gradient at packed ``x``."""
        d, m, n = self.d, self.m, self.n
        ls, s, c = x[:d], float(x[d]), float(x[d + 1])
        v = x[d + 2 : d + 2 + m]
        Ls = np.zeros((m, m))
        Ls[self.tril] = x[d + 2 + m :]
        Rzz, dRzz = self._kernel(self.Dzz2, ls)
        Rzx, dRzx = self._kernel(self.Dzx2, ls)
        L = scipy.linalg.cholesky(s * Rzz + self.jitter * self.eye, lower=True, check_finite=False)
        A = scipy.linalg.solve_triangular(L, s * Rzx, lower=True, check_finite=False)
        B = Ls.T @ A
        mu = c + A.T @ v
        var_raw = s + self.jitter + (B * B).sum(0) - (A * A).sum(0)
        clamped = var_raw < 1e-10
        sd = np.sqrt(np.maximum(var_raw, 1e-10))
        if self.link.is_plain_probit:
            u = self.sign[:, None] * (mu[:, None] + math.sqrt(2.0) * sd[:, None] * GH20_X)
            log_cdf = scipy.special.log_ndtr(u)
            ell = float((log_cdf @ GH20_W).sum()) / math.sqrt(math.pi)
        else:  # a floor objective's link: log p(y | f) and its derivative at the nodes
            f_nodes = mu[:, None] + math.sqrt(2.0) * sd[:, None] * GH20_X
            ll, dll = self.link.loglik_np(f_nodes, self.y[:, None])
            ell = float((ll @ GH20_W).sum()) / math.sqrt(math.pi)
        diag = np.diagonal(Ls)
        kl = 0.5 * ((Ls * Ls).sum() + v @ v - m - 2.0 * np.log(np.abs(diag)).sum())
        kind, a, b = self.ls_prior
        loc, scale = self.normal
        if kind == "gamma":
            gamma_value, gamma_grad = gamma_log_prior(ls, a, b)
        else:
            gamma_value, gamma_grad = lognormal_log_prior(ls, a, b)
        log_prior = gamma_value - 0.5 * ((c - loc) / scale) ** 2 - math.log(scale) - LOG_SQRT_2PI
        loss = -(ell - kl + log_prior) / n
        # gradients of J = ell - kl + log_prior
        if self.link.is_plain_probit:
            ratio = np.exp(-0.5 * u * u - LOG_SQRT_2PI - log_cdf) * GH20_W  # pdf / cdf, weighted
            g = self.sign * ratio.sum(-1) / math.sqrt(math.pi)
            h = np.where(clamped, 0.0, self.sign * (ratio @ GH20_X) / (math.sqrt(2.0 * math.pi) * sd))
        else:
            weighted = dll * GH20_W
            g = weighted.sum(-1) / math.sqrt(math.pi)
            h = np.where(clamped, 0.0, (weighted @ GH20_X) / (math.sqrt(2.0 * math.pi) * sd))
        AH = A * h
        d_v = A @ g - v
        d_Ls = 2.0 * (AH @ A.T) @ Ls - Ls
        d_Ls[np.diag_indices(m)] += 1.0 / diag
        d_c = g.sum() - (c - loc) / scale**2
        d_A = v[:, None] * g[None, :] + 2.0 * (Ls @ Ls.T - self.eye) @ AH
        d_Kzx = scipy.linalg.solve_triangular(L, d_A, lower=True, trans="T", check_finite=False)
        P = np.tril(L.T @ np.tril(-(d_Kzx @ A.T)))
        P[np.diag_indices(m)] *= 0.5
        Y = scipy.linalg.solve_triangular(L, P, lower=True, trans="T", check_finite=False)
        Xc = scipy.linalg.solve_triangular(L, Y.T, lower=True, trans="T", check_finite=False).T
        d_Kzz = 0.5 * (Xc + Xc.T)
        d_s = h.sum() + (d_Kzz * Rzz).sum() + (d_Kzx * Rzx).sum()
        d_l = s * (np.einsum("jk,jkd->d", d_Kzz, dRzz) + np.einsum("jk,jkd->d", d_Kzx, dRzx)) + gamma_grad
        grad = np.concatenate([d_l, [d_s, d_c], d_v, d_Ls[self.tril]])
        return loss, -grad / n

    # ------------------------------------------------------------ fitting
    def fit(self, maxiter: int, ftol: float, timeout: float | None, freeze_hyperparameters: bool = False) -> bool:
        r"""L-BFGS-B from the model's current parameters; writes the result back.

        Returns ``False`` (parameters untouched) when the optimisation fails or ends
        somewhere non-finite, so that the caller can fall back to BoTorch's fitting.
        """
        lo, hi = self.bounds(freeze_hyperparameters)
        x = minimize_packed(self, self.get(), lo, hi, maxiter, ftol, timeout, "packed ELBO")
        if x is None:
            return False
        self.set(x)
        return True
