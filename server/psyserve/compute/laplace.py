"""The pairwise probit Laplace evidence in numpy with hand-derived gradients (PackedPairwiseLaplace).

Owns the objective BoTorch's PairwiseGP fit minimises, for the model models.py builds; must not build
models or know about acquisitions or jobs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
import torch
from botorch.models import PairwiseGP
from botorch.models.likelihoods.pairwise import PairwiseProbitLikelihood
from botorch.models.pairwise_gp import PairwiseLaplaceMarginalLogLikelihood
from gpytorch.constraints import GreaterThan, Interval
from gpytorch.kernels import RBFKernel, ScaleKernel
from gpytorch.means import ConstantMean

from psyserve.compute.kernels import stationary_np
from psyserve.compute.lbfgs import minimize_packed
from psyserve.compute.numerics import DTYPE, LOG_SQRT_2PI, SQRT2, gamma_log_prior


class PackedPairwiseLaplace:
    r"""BoTorch's ``PairwiseLaplaceMarginalLogLikelihood`` for ``_pairwise``'s model, in numpy.

    ``x = [length-scales (d), raw output scale]``. Per evaluation: the posterior mode ``f``
    by Newton's method warm-started from the previous evaluation's (BoTorch: SciPy ``fsolve``
    with a Python/torch callback per function and Jacobian evaluation, then two autograd
    Newton steps), and the loss

        S(f) + 1/2 log|I + K W| - log priors,  S(f) = -sum_k log Phi(z_k) + 1/2 f^T K^{-1} f,

    with ``z = D f / sqrt 2`` clamped to +-3 and ``W = D^T diag(h (h + z) / 2) D`` as in
    ``PairwiseProbitLikelihood``. Gradient in the hyper-parameters, ``alpha = K^{-1} f``,
    ``A = (I + K W)^{-1}``: explicit ``-1/2 alpha^T dK alpha + 1/2 tr(A dK W)`` plus the
    implicit ``(dloss/df)^T A dK alpha`` (``df/dtheta`` at the mode), where ``dloss/df`` is
    ``S``'s gradient (0 at the mode unless some ``z`` is clamped) and ``log|I + K W|``'s
    through ``W``. That is what BoTorch's autograd graph through its two Newton steps
    differentiates; the tests check loss and gradient against it, clamped comparisons included.
    """

    def __init__(self, model: PairwiseGP, mll: PairwiseLaplaceMarginalLogLikelihood) -> None:
        self.model = model
        cm = model.covar_module
        base = cm.base_kernel
        Xd = model.datapoints.detach().numpy()
        self.D = model.D.detach().numpy()
        self.n, self.d = Xd.shape
        self.Dx2 = (Xd[:, None, :] - Xd[None, :, :]) ** 2  # n x n x d
        lp = base.lengthscale_prior
        self.gamma = (float(lp.concentration), float(lp.rate))
        op = cm.outputscale_prior
        self.box = (float(op.a), float(op.b), float(op.sigma))
        oc = cm.raw_outputscale_constraint
        self.os_bounds = (float(oc.lower_bound), float(oc.upper_bound))
        self.ls_lower = float(base.raw_lengthscale_constraint.lower_bound)
        self.f = np.zeros(self.n)  # Newton warm start: the last mode

    @staticmethod
    def supports(model: PairwiseGP, mll: Any) -> bool:
        r"""Whether the model is the one ``_pairwise`` builds (the one differentiated here)."""
        cm = model.covar_module
        base = cm.base_kernel if isinstance(cm, ScaleKernel) else None
        if base is None or type(base) is not RBFKernel or base.active_dims is not None:
            return False
        lc, oc = base.raw_lengthscale_constraint, cm.raw_outputscale_constraint
        if not (isinstance(lc, GreaterThan) and not lc.enforced and type(oc) is Interval and oc.enforced):
            return False
        if getattr(oc, "_transform", None) is not torch.sigmoid or getattr(model, "input_transform", None) is not None:
            return False
        if not isinstance(model.likelihood, PairwiseProbitLikelihood) or not isinstance(model.mean_module, ConstantMean):
            return False
        if float(model.mean_module.constant.detach()) != 0.0:
            return False
        priors = sorted((type(p).__name__, id(m)) for _, m, p, _, _ in mll.named_priors())
        return priors == sorted([("GammaPrior", id(base)), ("SmoothedBoxPrior", id(cm))])

    def get(self) -> np.ndarray:
        cm = self.model.covar_module
        return np.concatenate(
            [cm.base_kernel.raw_lengthscale.detach().numpy().reshape(-1), cm.raw_outputscale.detach().numpy().reshape(-1)]
        )

    def set(self, x: np.ndarray) -> None:
        cm = self.model.covar_module
        with torch.no_grad():
            cm.base_kernel.raw_lengthscale.copy_(
                torch.as_tensor(x[: self.d], dtype=DTYPE).reshape(cm.base_kernel.raw_lengthscale.shape)
            )
            cm.raw_outputscale.copy_(torch.as_tensor(x[self.d], dtype=DTYPE).reshape(cm.raw_outputscale.shape))

    def _likelihood_terms(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r"""``z`` (clamped), ``log Phi(z)``, ``b = d(-log lik)/df``, ``w`` and the mask of unclamped ``z``."""
        raw = self.D @ f / SQRT2
        z = np.clip(raw, -3.0, 3.0)
        log_cdf = scipy.special.log_ndtr(z)
        h = np.exp(-0.5 * z * z - LOG_SQRT_2PI - log_cdf)
        b = -(h / SQRT2) @ self.D
        return z, log_cdf, b, h, np.abs(raw) <= 3.0

    def _mode(self, K: np.ndarray) -> np.ndarray:
        r"""Solve ``K^{-1} f + b(f) = 0`` by Newton from the last mode."""
        f = self.f.copy()
        eye = np.eye(self.n)
        for _ in range(100):
            z, _, b, h, _ = self._likelihood_terms(f)
            W = (self.D.T * (h * (h + z) / 2.0)) @ self.D
            step = np.linalg.solve(eye + K @ W, f + K @ b)
            f = f - step
            if np.max(np.abs(step)) < 1e-10:
                return f
        raise np.linalg.LinAlgError("pairwise Laplace mode: Newton did not converge")

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        d = self.d
        ls = x[:d]
        lo, hi = self.os_bounds
        sig = 1.0 / (1.0 + np.exp(-x[d]))
        s = lo + (hi - lo) * sig
        ds_draw = (hi - lo) * sig * (1.0 - sig)
        K0, K0_prime = stationary_np((self.Dx2 / ls**2).sum(-1), "rbf")
        eye = np.eye(self.n)
        for jitter in (0.0, 1e-6, 1e-5):  # BoTorch's _ensure_psd_with_jitter on K / outputscale
            try:
                L = scipy.linalg.cholesky(K0 + jitter * eye, lower=True) * math.sqrt(s)
                break
            except np.linalg.LinAlgError:
                continue
        else:
            raise np.linalg.LinAlgError("pairwise covariance not positive definite with jitter up to 1e-5")
        K0 = K0 + jitter * eye  # the jitter is a constant: dK/dls is unchanged
        K = s * K0
        f = self._mode(K)
        self.f = f
        z, log_cdf, _, h, inside = self._likelihood_terms(f)
        w = h * (h + z) / 2.0
        W = (self.D.T * w) @ self.D
        alpha = scipy.linalg.cho_solve((L, True), f)
        B = eye + K @ W
        S = -log_cdf.sum() + 0.5 * f @ alpha
        _, logdet = np.linalg.slogdet(B)
        # log priors: Gamma on the length-scales, smoothed box on the output scale
        c, r = self.gamma
        a_box, b_box, sigma = self.box
        centre, half = 0.5 * (a_box + b_box), 0.5 * (b_box - a_box)
        dist = max(abs(s - centre) - half, 0.0)
        log_prior, gamma_grad = gamma_log_prior(ls, c, r)
        log_prior += -(dist**2) / (2.0 * sigma**2) - math.log(sigma) - LOG_SQRT_2PI
        log_prior -= math.log(1.0 + (b_box - a_box) / (math.sqrt(2.0 * math.pi) * sigma))
        loss = float(S + 0.5 * logdet - log_prior)
        # gradient
        Binv = np.linalg.inv(B)  # A = (I + K W)^{-1}
        BinvK = Binv @ K  # (K^{-1} + W)^{-1}, symmetric
        # d w / d z (zero where z is clamped), h' = -h (z + h)
        dh = -h * (z + h)
        dw = np.where(inside, 0.5 * (dh * (2.0 * h + z) + h), 0.0)
        q = np.einsum("kn,nm,km->k", self.D, BinvK, self.D)
        # S's gradient in f (log Phi of a clamped z is flat: only unclamped comparisons count;
        # zero at the mode unless some z is clamped) reaches the hyper-parameters through the
        # mode's derivative A dK alpha, which BoTorch's second Newton step carries with the
        # clamped comparisons' share of W, W_c, as (I + A K W_c) A dK alpha
        g_S = alpha - ((h * inside) / SQRT2) @ self.D
        W_c = (self.D.T * np.where(inside, 0.0, w)) @ self.D
        g_f = g_S + W_c @ (K @ (Binv.T @ g_S)) + 0.5 * (dw * q / SQRT2) @ self.D  # d loss / d (A dK alpha)
        u = Binv.T @ g_f
        G = 0.5 * (W @ Binv).T - 0.5 * np.outer(alpha, alpha) + np.outer(u, alpha)
        G = 0.5 * (G + G.T)
        d_ls = np.einsum("ij,ijk->k", (s * K0_prime) * G, self.Dx2) / ls**3 - gamma_grad  # dK/dl = s k' D2 / l^3
        d_box = dist / sigma**2 * np.sign(s - centre) if dist > 0 else 0.0
        d_raw = ds_draw * ((K0 * G).sum() + d_box)
        return loss, np.concatenate([d_ls, [d_raw]])

    def fit(self, maxiter: int, ftol: float, timeout: float | None) -> bool:
        r"""L-BFGS-B from the model's current hyper-parameters; writes the result back and
        leaves the last mode in ``self.f``. ``False`` (model untouched) on failure."""
        lo = np.array([self.ls_lower] * self.d + [-np.inf])
        hi = np.full(self.d + 1, np.inf)
        x = minimize_packed(self, self.get(), lo, hi, maxiter, ftol, timeout, "packed pairwise Laplace")
        if x is None or not self.settle(x):
            return False
        self.set(x)
        return True

    def settle(self, x: np.ndarray | None = None) -> bool:
        r"""The Laplace mode at hyper-parameters ``x`` (default: the model's own), left in
        ``self.f`` by Newton's method; ``False`` when it fails (the model is not touched)."""
        try:
            with np.errstate(all="ignore"):
                self(self.get() if x is None else x)
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            return False
        return True
