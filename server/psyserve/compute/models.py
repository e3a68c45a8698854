"""Model construction, fitting, warm starts and a closed-form latent posterior (LatentGP) for psyserve's compute workers.
Owns the BoTorch/GPyTorch model code only; must not touch server state, I/O, job orchestration or acquisition logic."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
import torch
from botorch.fit import fit_gpytorch_mll
from botorch.models import PairwiseGP, SingleTaskGP, SingleTaskVariationalGP
from botorch.models.likelihoods.pairwise import PairwiseProbitLikelihood
from botorch.models.model import Model
from botorch.models.pairwise_gp import PairwiseLaplaceMarginalLogLikelihood
from botorch.models.transforms.outcome import Standardize
from botorch.optim.closures import ForwardBackwardClosure
from botorch.optim.fit import fit_gpytorch_mll_scipy
from botorch.optim.utils import get_parameters_and_bounds
from gpytorch.constraints import GreaterThan, Interval
from gpytorch.kernels import Kernel, MaternKernel, RBFKernel, ScaleKernel
from gpytorch.likelihoods import BernoulliLikelihood
from gpytorch.means import ConstantMean, Mean
from gpytorch.mlls import ExactMarginalLogLikelihood, VariationalELBO
from gpytorch.priors import GammaPrior, NormalPrior, SmoothedBoxPrior
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from psyserve.compute.jobs import (
    CLASSIFICATION,
    KNOWN_MODELS,
    PAIRWISE,
    REGRESSION,
    ModelSpec,
    ModelState,
    data_digest,
)

__all__ = [
    "DTYPE",
    "KNOWN_MODELS",
    "PROBIT_PENDING_NOISE",
    "ConditionedLatentGP",
    "ConstantMeanFn",
    "FittedModel",
    "KernelFn",
    "LatentGP",
    "PackedElbo",
    "PackedPairwiseLaplace",
    "fit_model",
    "pairwise_to_comparisons",
    "select_inducing_points",
    "unique_rows",
]

log = logging.getLogger(__name__)

DTYPE = torch.float64
#: Latent-space noise variance equivalent to one probit observation at f = 0
#: (inverse Fisher information: Phi(0)(1 - Phi(0)) / phi(0)^2 = pi / 2). Used to
#: condition on pending points during sequential greedy batch generation.
PROBIT_PENDING_NOISE = math.pi / 2
#: Output-scale bounds of the classification kernel (latent variance).
OUTPUTSCALE_BOUNDS = (1.0, 4.0)
#: L-BFGS relative-decrease tolerance of model fits (scipy's default is 2.2e-9). The losses are
#: per-observation (ELBO / n, MLL / n); a fit that stops at 1e-6 gives the same predictions to
#: well within their posterior uncertainty, with 3-4x fewer evaluations.
FIT_FTOL = 1e-6
SQRT2_F = math.sqrt(2.0)
DIGEST_KEY = "__digest__"
INDUCING_KEY = "__inducing__"
_VMEAN = "model.variational_strategy._variational_distribution.variational_mean"
_VCHOL = "model.variational_strategy._variational_distribution.chol_variational_covar"


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


# --------------------------------------------------------------------------- kernels


def make_kernel(
    d: int,
    kind: str = "rbf",
    lengthscale_prior: tuple[float, float] = (3.0, 6.0),
    outputscale_bounds: tuple[float, float] = OUTPUTSCALE_BOUNDS,
) -> ScaleKernel:
    r"""ARD RBF / Matern-5/2 kernel for ``d``-dim unit-cube inputs.

    Gamma(a, b) length-scale prior (default Gamma(3, 6): mean 0.5, mode 1/3) and a
    ScaleKernel whose output scale is constrained to ``outputscale_bounds``.
    """
    conc, rate = lengthscale_prior
    mode = (conc - 1.0) / rate
    ls_kw: dict[str, Any] = dict(
        ard_num_dims=d,
        lengthscale_prior=GammaPrior(conc, rate),
        lengthscale_constraint=GreaterThan(1e-3, transform=None, initial_value=mode),
    )
    k = kind.lower().replace("-", "").replace("_", "")
    if k in ("rbf", "se", "squaredexponential"):
        base: Kernel = RBFKernel(**ls_kw)
    elif k in ("matern52", "matern"):
        base = MaternKernel(nu=2.5, **ls_kw)
    else:
        raise ValueError(f"unknown kernel {kind!r} (use 'rbf' or 'matern52')")
    lo, hi = outputscale_bounds
    init = min(max(2.0, lo), hi)
    sk = ScaleKernel(
        base,
        # transform=None: a box constraint handed to L-BFGS-B (a sigmoid transform lets the
        # raw value run off towards infinity when the ELBO pushes against the bound).
        outputscale_constraint=Interval(lo, hi, transform=None, initial_value=init),
    )
    return sk.to(DTYPE)


def stationary_kernel(X1: Tensor, X2: Tensor, lengthscale: Tensor, scale: Tensor, kind: str, nu: float = 2.5) -> Tensor:
    r"""Scaled ARD RBF (``kind="rbf"``) or Matern-``nu`` kernel, broadcasting.

    ``X1``: ``... x q1 x d``, ``X2``: ``... x q2 x d``, ``lengthscale``: ``d`` (or 1) ->
    ``... x q1 x q2``. Differentiable in the inputs and the hyper-parameters.
    """
    diff = (X1 / lengthscale).unsqueeze(-2) - (X2 / lengthscale).unsqueeze(-3)
    d2 = diff.pow(2).sum(-1)
    if kind == "rbf":
        return scale * torch.exp(-0.5 * d2)
    r = d2.clamp_min(1e-30).sqrt()
    if nu == 0.5:
        k = torch.exp(-r)
    elif nu == 1.5:
        s = math.sqrt(3.0) * r
        k = (1.0 + s) * torch.exp(-s)
    else:
        s = math.sqrt(5.0) * r
        k = (1.0 + s + s.pow(2) / 3.0) * torch.exp(-s)
    return scale * k


class KernelFn:
    r"""Detached, broadcasting evaluation of a fitted GPyTorch kernel.

    ``k(X1, X2)``: ``... x q1 x d`` and ``... x q2 x d`` -> ``... x q1 x q2``, with the
    batch dims broadcast. Differentiable w.r.t. the inputs. Fast paths for
    (Scale)RBF / (Scale)Matern kernels; other kernels go through GPyTorch.
    """

    def __init__(self, covar_module: Kernel) -> None:
        self.module = covar_module
        scale: Tensor | None = None
        base = covar_module
        if isinstance(base, ScaleKernel):
            scale = base.outputscale.detach().reshape(())
            base = base.base_kernel
        self.scale = torch.ones((), dtype=DTYPE) if scale is None else scale.to(DTYPE)
        self.kind: str = "generic"
        self.nu = 0.0
        if isinstance(base, RBFKernel) and base.active_dims is None:
            self.kind = "rbf"
        elif isinstance(base, MaternKernel) and base.active_dims is None:
            self.kind = "matern"
            self.nu = float(base.nu)
        self.lengthscale = (
            base.lengthscale.detach().reshape(-1).to(DTYPE) if self.kind != "generic" else torch.ones(1, dtype=DTYPE)
        )

    def __call__(self, X1: Tensor, X2: Tensor) -> Tensor:
        if self.kind == "generic":
            shape = torch.broadcast_shapes(X1.shape[:-2], X2.shape[:-2])
            X1b = X1.expand(*shape, *X1.shape[-2:])
            X2b = X2.expand(*shape, *X2.shape[-2:])
            return self.module(X1b, X2b).to_dense()
        return stationary_kernel(X1, X2, self.lengthscale, self.scale, self.kind, self.nu)

    def diag(self, X: Tensor) -> Tensor:
        r"""Prior variance ``k(x, x)``: ``... x q x d`` -> ``... x q``."""
        if self.kind == "generic":
            return self.module(X, X, diag=True).to_dense()
        return self.scale.expand(X.shape[:-1])


class ConstantMeanFn:
    r"""A constant prior mean ``c``: ``... x q x d`` -> ``... x q`` (no dependence on ``x``)."""

    def __init__(self, c: Tensor) -> None:
        self.c = c.detach().reshape(()).to(DTYPE)

    def __call__(self, X: Tensor) -> Tensor:
        return self.c.expand(X.shape[:-1])


def _mean_fn(mean_module: Mean | None) -> Callable[[Tensor], Tensor]:
    r"""Detached prior mean ``... x q x d`` -> ``... x q``."""
    if mean_module is None:
        return ConstantMeanFn(torch.zeros((), dtype=DTYPE))
    if isinstance(mean_module, ConstantMean):
        return ConstantMeanFn(mean_module.constant)
    return lambda X: mean_module(X).detach()


# --------------------------------------------------------------------------- latent posterior


#: ``lookahead_np``: mean, variance, their input gradients (``None`` without ``grad``), the
#: cross-covariance with the reference set and its input gradient (``None`` without ``grad``).
LookaheadNp = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray | None]


class LatentGP:
    r"""Closed-form Gaussian posterior of the latent function ``f`` in feature form.

    With ``phi(x) = L^{-1} k(Z, x)`` (``m`` features, ``L`` lower Cholesky factor):

        mean(x)    = offset + scale * (m0(x) + phi(x)^T w)
        cov(x, x') = scale^2 * (k(x, x') + phi(x)^T M phi(x'))  (+ jitter on the diagonal)

    which covers the whitened variational GP (``M = S - I``, ``w`` = variational mean),
    the exact GP (``M = -I``) and the Laplace-approximated pairwise GP. Gives cheap
    mean / variance / cross-covariances for batched candidates (``b x q x d``) against
    fixed reference sets (``r x d``), which is what the look-ahead acquisitions need.
    """

    def __init__(
        self,
        kernel: KernelFn,
        mean_fn: Callable[[Tensor], Tensor],
        Z: Tensor,
        L: Tensor,
        w: Tensor,
        M: Tensor,
        scale: float = 1.0,
        offset: float = 0.0,
        jitter: float = 0.0,
    ) -> None:
        self.kernel = kernel
        self.mean_fn = mean_fn
        self.Z = Z.detach()
        self.L = L.detach()
        self.w = w.detach()
        self.M = M.detach()
        self.scale = float(scale)
        self.offset = float(offset)
        self.jitter = float(jitter)
        self.m = int(Z.shape[-2])
        # closed-form input gradients (one autograd node instead of ~30) for stationary kernels
        # with a constant mean: what acquisition optimisation spends its time on
        self.analytic_grad = (
            self.m > 0
            and isinstance(mean_fn, ConstantMeanFn)
            and (kernel.kind == "rbf" or (kernel.kind == "matern" and kernel.nu in (1.5, 2.5)))
        )
        if self.analytic_grad:  # d mean / d k(Z, x) = L^{-T} w
            self.alpha = torch.linalg.solve_triangular(self.L.mT, self.w.unsqueeze(-1), upper=True).squeeze(-1)
            assert isinstance(mean_fn, ConstantMeanFn)
            self._np = {
                "Z": self.Z.numpy(),
                "L": self.L.numpy(),
                "w": self.w.numpy(),
                "M": self.M.numpy(),
                "alpha": self.alpha.numpy(),
                "ls": kernel.lengthscale.numpy(),
                "c": float(mean_fn.c),
            }

    def _kernel_np(self, A: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""``k(A, X)`` (``a x b``), ``A - X`` (``a x b x d``) and ``k'(A, X)``: ``d k(a_j, x_b) / d x_b
        = k'(a_j, x_b) (a_j - x_b) / ls^2``."""
        ls = self._np["ls"]
        kern = self.kernel
        diff = A[:, None, :] - X[None, :, :]
        q = ((diff / ls) ** 2).sum(-1)
        s = float(kern.scale)
        if kern.kind == "rbf":
            K = s * np.exp(-0.5 * q)
            return K, diff, K
        r = np.sqrt(np.maximum(q, 1e-30))
        if kern.nu == 2.5:
            s5 = math.sqrt(5.0) * r
            e = np.exp(-s5)
            return s * (1.0 + s5 + s5**2 / 3.0) * e, diff, s * (5.0 / 3.0) * (1.0 + s5) * e
        s3 = math.sqrt(3.0) * r
        e = np.exp(-s3)
        return s * (1.0 + s3) * e, diff, s * 3.0 * e

    def moments_np(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r"""Mean, variance and their input gradients at ``X`` (``b x d``), in numpy.

        Only when ``analytic_grad``. Returns ``mean`` (``b``), ``var`` (``b``, clamped at
        1e-12, zero gradient where clamped), ``d mean / dx`` and ``d var / dx`` (``b x d``).
        Same maths as ``_MeanVariance`` without torch's per-call overhead: what the
        acquisition optimiser calls a few hundred times per generated point.
        """
        mean, var, d_mean, d_var, _, _ = self._moments_parts(X, True)
        assert d_mean is not None and d_var is not None
        return mean, var, d_mean, d_var

    def mean_var_np(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""Mean and variance at ``X`` (``b x d``), numpy, no gradients (``analytic_grad`` only)."""
        mean, var = self._moments_parts(X, False)[:2]
        return mean, var

    def _moments_parts(
        self, X: np.ndarray, grad: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray | None]:
        r"""``moments_np`` plus ``M phi(X)`` (``m x b``) and ``d k(Z, x) / dx`` (``m x b x d``)."""
        np_state = self._np
        L, w, M, alpha = np_state["L"], np_state["w"], np_state["M"], np_state["alpha"]
        ls = np_state["ls"]
        s = float(self.kernel.scale)
        K, diff, dK = self._kernel_np(np_state["Z"], X)
        phi = scipy.linalg.solve_triangular(L, K, lower=True, check_finite=False)
        Mphi = M @ phi
        mean = self.offset + self.scale * (np_state["c"] + w @ phi)
        var_raw = self.scale**2 * (s + self.jitter + (phi * Mphi).sum(0))
        if not grad:
            return mean, np.maximum(var_raw, 1e-12), None, None, Mphi, None
        G = scipy.linalg.solve_triangular(L, Mphi, lower=True, trans="T", check_finite=False)
        dKd = dK[..., None] * diff / ls**2  # m x b x d: d k(z_j, x_b) / d x_b
        d_mean = self.scale * np.einsum("j,jbd->bd", alpha, dKd)
        d_var = 2.0 * self.scale**2 * np.einsum("jb,jbd->bd", G, dKd)
        d_var[var_raw < 1e-12] = 0.0
        return mean, np.maximum(var_raw, 1e-12), d_mean, d_var, Mphi, dKd

    def reference_np(self, R: np.ndarray) -> dict[str, Any]:
        r"""Precomputed terms for cross-covariances with a fixed reference set ``R`` (``r x d``)."""
        K = self._kernel_np(self._np["Z"], R)[0]
        phi_R = scipy.linalg.solve_triangular(self._np["L"], K, lower=True, check_finite=False)
        H = scipy.linalg.solve_triangular(self._np["L"], self._np["M"] @ phi_R, lower=True, trans="T", check_finite=False)
        return {"R": R, "phi": phi_R, "H": H}

    def lookahead_np(self, X: np.ndarray, ref: dict[str, Any], grad: bool = True) -> LookaheadNp:
        r"""``moments_np`` plus the cross-covariance ``c = cov(x, r)`` with the reference set of
        ``ref`` (``reference_np``), ``b x r``, and (``grad``) ``dc / dx`` (``b x r x d``).

        Returns ``mean, var, d_mean, d_var, c, d_c`` (the gradients ``None`` without ``grad``).
        """
        mean, var, d_mean, d_var, Mphi, dKd = self._moments_parts(X, grad)
        K_RX, diff_RX, dK_RX = self._kernel_np(ref["R"], X)
        s2 = self.scale**2
        c = s2 * (K_RX.T + Mphi.T @ ref["phi"])
        if not grad:
            return mean, var, None, None, c, None
        assert dKd is not None
        dc = dK_RX[..., None] * diff_RX / self._np["ls"] ** 2  # r x b x d
        dc = s2 * (dc.transpose(1, 0, 2) + np.einsum("jbd,jr->brd", dKd, ref["H"]))
        return mean, var, d_mean, d_var, c, dc

    def _phi(self, X: Tensor) -> Tensor:
        r"""Features ``... x q x d`` -> ``... x m x q``."""
        K = self.kernel(self.Z, X)
        return torch.linalg.solve_triangular(self.L, K, upper=False)

    def mean(self, X: Tensor) -> Tensor:
        r"""Posterior mean ``... x q x d`` -> ``... x q``."""
        mu = self.mean_fn(X)
        if self.m:
            mu = mu + torch.einsum("...mq,m->...q", self._phi(X), self.w)
        return self.offset + self.scale * mu

    def variance(self, X: Tensor) -> Tensor:
        r"""Posterior variance ``... x q x d`` -> ``... x q`` (clamped >= 1e-12)."""
        v = self.kernel.diag(X) + self.jitter
        if self.m:
            phi = self._phi(X)
            v = v + (phi * (self.M @ phi)).sum(-2)
        return (self.scale**2 * v).clamp_min(1e-12)

    def mean_variance(self, X: Tensor) -> tuple[Tensor, Tensor]:
        r"""Mean and variance, ``... x q x d`` -> two ``... x q``, sharing the features."""
        if self.analytic_grad and X.requires_grad and torch.is_grad_enabled():
            mu_v: tuple[Tensor, Tensor] = _MeanVariance.apply(X, self)  # type: ignore[no-untyped-call]
            return mu_v
        return self._mean_variance(X)

    def _mean_variance(self, X: Tensor) -> tuple[Tensor, Tensor]:
        mu = self.mean_fn(X)
        v = self.kernel.diag(X) + self.jitter
        if self.m:
            phi = self._phi(X)
            mu = mu + torch.einsum("...mq,m->...q", phi, self.w)
            v = v + (phi * (self.M @ phi)).sum(-2)
        return self.offset + self.scale * mu, (self.scale**2 * v).clamp_min(1e-12)

    def covariance(self, X1: Tensor, X2: Tensor) -> Tensor:
        r"""Posterior cross-covariance ``... x q1 x d``, ``... x q2 x d`` -> ``... x q1 x q2``.

        No jitter is added (use ``variance`` for the diagonal).
        """
        C = self.kernel(X1, X2)
        if self.m:
            C = C + self._phi(X1).mT @ (self.M @ self._phi(X2))
        return self.scale**2 * C

    def condition(self, P: Tensor, A: Tensor | None = None, noise: float | Tensor = PROBIT_PENDING_NOISE) -> ConditionedLatentGP:
        r"""Condition on pseudo-observations ``A f(P) + eps`` (kriging believer: means unchanged).

        Args:
            P: ``p x d`` pending points.
            A: ``k x p`` linear functionals (default identity).
            noise: observation noise variance (scalar or ``k``).
        """
        return ConditionedLatentGP(self, P, A, noise)


class _MeanVariance(torch.autograd.Function):
    r"""``LatentGP.mean_variance`` as one autograd node: values and closed-form input gradients
    come from ``LatentGP.moments_np`` (the maths the acquisition optimiser uses), so there is one
    implementation of the derivative. Checked against autograd in the tests.
    """

    @staticmethod
    def forward(ctx: Any, X: Tensor, gp: LatentGP) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        batch = X.shape[:-1]
        mu, var, d_mu, d_var = gp.moments_np(X.detach().reshape(-1, X.shape[-1]).numpy())
        ctx.save_for_backward(torch.as_tensor(d_mu, dtype=DTYPE).reshape(X.shape), torch.as_tensor(d_var, dtype=DTYPE).reshape(X.shape))
        return torch.as_tensor(mu, dtype=DTYPE).reshape(batch), torch.as_tensor(var, dtype=DTYPE).reshape(batch)

    @staticmethod
    def backward(ctx: Any, g_mu: Tensor, g_var: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        d_mu, d_var = ctx.saved_tensors
        return g_mu.unsqueeze(-1) * d_mu + g_var.unsqueeze(-1) * d_var, None


class ConditionedLatentGP:
    r"""A ``LatentGP`` whose covariance is reduced by pseudo-observations ``y = A f(P) + eps``.

    Used for sequential greedy batches: the mean stays as it is, the uncertainty near
    pending points shrinks. Same interface as ``LatentGP``.
    """

    def __init__(self, base: LatentGP, P: Tensor, A: Tensor | None, noise: float | Tensor) -> None:
        self.base = base
        self.P = P.detach().to(DTYPE)
        p = self.P.shape[-2]
        self.A = torch.eye(p, dtype=DTYPE) if A is None else A.detach().to(DTYPE)
        k = self.A.shape[-2]
        nz = torch.as_tensor(noise, dtype=DTYPE).expand(k)
        S = base.covariance(self.P, self.P)
        S = 0.5 * (S + S.mT) + torch.diag(base.jitter * base.scale**2 * torch.ones(p, dtype=DTYPE))
        C = self.A @ S @ self.A.mT + torch.diag(nz)
        self.Lc = psd_safe_cholesky(C)
        self.scale = base.scale
        self.offset = base.offset
        self.jitter = base.jitter
        self.analytic_grad = base.analytic_grad
        if self.analytic_grad:
            self._refP = base.reference_np(self.P.numpy())
            self._Lc_np = self.Lc.numpy()
            self._A_np = self.A.numpy()

    # numpy with input gradients (``analytic_grad``): the base's, less the pending points' share
    # g(x) = Lc^{-1} A cov(P, x): var - |g|^2 and cov(x, r) - g(x)^T g(r)

    def _g_np(self, cP: np.ndarray, dcP: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        r"""``g`` (``k x b``) and ``dg/dx`` (``k x b x d``) from ``cov(x, P)`` (``b x p``) and its gradient."""
        g = scipy.linalg.solve_triangular(self._Lc_np, self._A_np @ cP.T, lower=True, check_finite=False)
        if dcP is None:
            return g, None
        b, _, d = dcP.shape
        dg = np.einsum("kp,bpd->kbd", self._A_np, dcP).reshape(self._A_np.shape[0], b * d)
        dg = scipy.linalg.solve_triangular(self._Lc_np, dg, lower=True, check_finite=False)
        return g, dg.reshape(-1, b, d)

    @staticmethod
    def _reduce_var(var: np.ndarray, d_var: np.ndarray | None, g: np.ndarray, dg: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        raw = var - (g * g).sum(0)
        if d_var is not None and dg is not None:
            d_var = d_var - 2.0 * np.einsum("kb,kbd->bd", g, dg)
            d_var[raw < 1e-12] = 0.0
        return np.maximum(raw, 1e-12), d_var

    def moments_np(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r"""``LatentGP.moments_np`` of the conditioned posterior."""
        mean, var, d_mean, d_var, cP, dcP = self.base.lookahead_np(X, self._refP, True)
        var, d_var = self._reduce_var(var, d_var, *self._g_np(cP, dcP))
        assert d_mean is not None and d_var is not None
        return mean, var, d_mean, d_var

    def mean_var_np(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, var, _, _, cP, _ = self.base.lookahead_np(X, self._refP, False)
        return mean, self._reduce_var(var, None, *self._g_np(cP, None))[0]

    def reference_np(self, R: np.ndarray) -> dict[str, Any]:
        r"""``LatentGP.reference_np``: the base's terms for ``R`` and ``P`` together, and ``g(R)``."""
        cPR = self.base.covariance(self.P, torch.as_tensor(R, dtype=DTYPE)).numpy()
        gR = scipy.linalg.solve_triangular(self._Lc_np, self._A_np @ cPR, lower=True, check_finite=False)
        return {"base": self.base.reference_np(np.vstack([R, self.P.numpy()])), "gR": gR, "r": R.shape[0]}

    def lookahead_np(self, X: np.ndarray, ref: dict[str, Any], grad: bool = True) -> LookaheadNp:
        r"""``LatentGP.lookahead_np`` of the conditioned posterior."""
        mean, var, d_mean, d_var, c_all, dc_all = self.base.lookahead_np(X, ref["base"], grad)
        r = int(ref["r"])
        g, dg = self._g_np(c_all[:, r:], None if dc_all is None else dc_all[:, r:])
        var, d_var = self._reduce_var(var, d_var, g, dg)
        c = c_all[:, :r] - g.T @ ref["gR"]
        if dc_all is None or dg is None:
            return mean, var, None, None, c, None
        dc = dc_all[:, :r] - np.einsum("kbd,kr->brd", dg, ref["gR"])
        return mean, var, d_mean, d_var, c, dc

    def _g(self, X: Tensor) -> Tensor:
        r"""``Lc^{-1} A cov(P, X)``: ``... x q x d`` -> ``... x k x q``."""
        c = self.base.covariance(self.P, X)
        return torch.linalg.solve_triangular(self.Lc, self.A @ c, upper=False)

    def mean(self, X: Tensor) -> Tensor:
        return self.base.mean(X)

    def variance(self, X: Tensor) -> Tensor:
        return (self.base.variance(X) - self._g(X).pow(2).sum(-2)).clamp_min(1e-12)

    def mean_variance(self, X: Tensor) -> tuple[Tensor, Tensor]:
        mu, v = self.base.mean_variance(X)
        return mu, (v - self._g(X).pow(2).sum(-2)).clamp_min(1e-12)

    def covariance(self, X1: Tensor, X2: Tensor) -> Tensor:
        return self.base.covariance(X1, X2) - self._g(X1).mT @ self._g(X2)

    def condition(self, P: Tensor, A: Tensor | None = None, noise: float | Tensor = PROBIT_PENDING_NOISE) -> ConditionedLatentGP:
        raise NotImplementedError("condition the base LatentGP on all pending points at once")


# --------------------------------------------------------------------------- data helpers


def unique_rows(X: Tensor) -> Tensor:
    r"""Unique rows of ``X`` (``n x d``) in order of first occurrence."""
    if X.shape[0] == 0:
        return X
    _, inverse = torch.unique(X, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), X.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(X.shape[0]), reduce="amin")
    return X[torch.sort(first).values]


def select_inducing_points(X: Tensor, k: int) -> Tensor:
    r"""Deterministic inducing points from training inputs.

    Args:
        X: ``n x d`` training inputs (duplicates allowed).
        k: maximum number of inducing points.

    Returns:
        ``min(k, n_unique) x d``: all unique rows in order of first occurrence if there
        are at most ``k`` of them (so that one more trial appends one inducing point,
        which is what makes the variational warm start exact), else a greedy
        farthest-point (max-min distance) subset started at the row nearest the centroid.
    """
    U = unique_rows(X.detach())
    n = U.shape[0]
    if n <= k:
        return U
    idx = [int(torch.argmin((U - U.mean(0)).pow(2).sum(-1)))]
    dmin = (U - U[idx[0]]).pow(2).sum(-1)
    for _ in range(1, k):
        j = int(torch.argmax(dmin))
        idx.append(j)
        dmin = torch.minimum(dmin, (U - U[j]).pow(2).sum(-1))
    return U[sorted(idx)]


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
    latent: LatentGP
    train_X: Tensor
    pending_noise: float
    state: ModelState
    fit_seconds: float

    @property
    def n_train(self) -> int:
        return int(self.state.n_train)


def _fit_mll(mll: Any, options: Mapping[str, Any], max_attempts: int, closure: Any = None) -> None:
    r"""``fit_gpytorch_mll`` with an iteration cap, optional timeout and no warning-driven retries."""
    maxiter = opt_int(options, "max_fit_iter", 200)
    timeout = opt_float(options, "max_fit_time", None)
    okw: dict[str, Any] = {"options": {"maxiter": maxiter}}
    okw["options"]["ftol"] = opt_float(options, "fit_ftol", FIT_FTOL)
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


_GH20_X, _GH20_W = (torch.as_tensor(a, dtype=DTYPE) for a in np.polynomial.hermite.hermgauss(20))


def variational_elbo_closure(
    model: SingleTaskVariationalGP, mll: VariationalELBO, X: Tensor, y: Tensor
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
        X: ``n x d`` training inputs; y: ``n`` 0/1 outcomes.
    """
    gp = model.model
    vs = gp.variational_strategy
    vd = vs._variational_distribution
    cm = gp.covar_module
    base = cm.base_kernel if isinstance(cm, ScaleKernel) else cm
    kind = "rbf" if isinstance(base, RBFKernel) else "matern"
    nu = float(getattr(base, "nu", 2.5))
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
        ls = base.lengthscale.reshape(-1)
        scale = cm.outputscale.reshape(()) if isinstance(cm, ScaleKernel) else torch.ones((), dtype=DTYPE)
        Kzz = stationary_kernel(Z, Z, ls, scale, kind, nu) + jitter * eye
        L = psd_safe_cholesky(Kzz)
        A = torch.linalg.solve_triangular(L, stationary_kernel(Z, X, ls, scale, kind, nu), upper=False)
        mvec = vd.variational_mean
        Ls = vd.chol_variational_covar * tril
        mu = gp.mean_module(X) + A.mT @ mvec
        var = (scale + jitter + (Ls.mT @ A).pow(2).sum(-2) - A.pow(2).sum(-2)).clamp_min(1e-10)
        f = mu.unsqueeze(-1) + torch.sqrt(2.0 * var).unsqueeze(-1) * _GH20_X
        ell = (torch.special.log_ndtr(sign * f) * _GH20_W).sum(-1) / math.sqrt(math.pi)
        kl = 0.5 * (Ls.pow(2).sum() + mvec.pow(2).sum() - m - 2.0 * torch.log(torch.diagonal(Ls).abs()).sum())
        log_prior = sum(
            (prior.log_prob(closure(module)).sum() for _, module, prior, closure, _ in priors),
            torch.zeros((), dtype=DTYPE),
        )
        return -(ell.sum() - kl + log_prior) / n

    parameters = {k: p for k, p in get_parameters_and_bounds(mll)[0].items() if p.requires_grad}
    return ForwardBackwardClosure(forward=forward, parameters=parameters)


_GH20_NP_X, _GH20_NP_W = np.polynomial.hermite.hermgauss(20)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


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
    bounded hyper-parameters, Gamma length-scale and Normal constant priors);
    ``PackedElbo.supports`` says when it applies. Checked against autograd in the tests.
    """

    def __init__(self, model: SingleTaskVariationalGP, mll: VariationalELBO, X: Tensor, y: Tensor) -> None:
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
        gamma, normal = priors[GammaPrior], priors[NormalPrior]
        self.gamma = (float(gamma.concentration), float(gamma.rate))
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
        return identity and sorted(priors, key=lambda mp: mp[1].__name__) == [(base, GammaPrior), (mean, NormalPrior)]

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
        q = (D2 / ls**2).sum(-1)
        if self.kind == "rbf":
            k = np.exp(-0.5 * q)
            dk = k
        else:
            r5 = math.sqrt(5.0) * np.sqrt(np.maximum(q, 1e-30))
            e = np.exp(-r5)
            k = (1.0 + r5 + r5**2 / 3.0) * e
            dk = (5.0 / 3.0) * (1.0 + r5) * e
        return k, dk[..., None] * D2 / ls**3

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
        u = self.sign[:, None] * (mu[:, None] + math.sqrt(2.0) * sd[:, None] * _GH20_NP_X)
        log_cdf = scipy.special.log_ndtr(u)
        ell = float((log_cdf @ _GH20_NP_W).sum()) / math.sqrt(math.pi)
        diag = np.diagonal(Ls)
        kl = 0.5 * ((Ls * Ls).sum() + v @ v - m - 2.0 * np.log(np.abs(diag)).sum())
        a, b = self.gamma
        loc, scale = self.normal
        log_prior = (
            float((a * math.log(b) - math.lgamma(a) + (a - 1.0) * np.log(ls) - b * ls).sum())
            - 0.5 * ((c - loc) / scale) ** 2
            - math.log(scale)
            - _LOG_SQRT_2PI
        )
        loss = -(ell - kl + log_prior) / n
        # gradients of J = ell - kl + log_prior
        ratio = np.exp(-0.5 * u * u - _LOG_SQRT_2PI - log_cdf) * _GH20_NP_W  # pdf / cdf, weighted
        g = self.sign * ratio.sum(-1) / math.sqrt(math.pi)
        h = np.where(clamped, 0.0, self.sign * (ratio @ _GH20_NP_X) / (math.sqrt(2.0 * math.pi) * sd))
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
        d_l = s * (np.einsum("jk,jkd->d", d_Kzz, dRzz) + np.einsum("jk,jkd->d", d_Kzx, dRzx)) + (a - 1.0) / ls - b
        grad = np.concatenate([d_l, [d_s, d_c], d_v, d_Ls[self.tril]])
        return loss, -grad / n

    # ------------------------------------------------------------ fitting
    def fit(self, maxiter: int, ftol: float, timeout: float | None, freeze_hyperparameters: bool = False) -> bool:
        r"""L-BFGS-B from the model's current parameters; writes the result back.

        Returns ``False`` (parameters untouched) when the optimisation fails or ends
        somewhere non-finite, so that the caller can fall back to BoTorch's fitting.
        """
        lo, hi = self.bounds(freeze_hyperparameters)
        x = _minimize_packed(self, self.get(), lo, hi, maxiter, ftol, timeout, "packed ELBO")
        if x is None:
            return False
        self.set(x)
        return True


def _minimize_packed(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    maxiter: int,
    ftol: float,
    timeout: float | None,
    what: str,
) -> np.ndarray | None:
    r"""SciPy L-BFGS-B on a packed objective returning ``(loss, gradient)``, stopped at ``timeout``
    seconds; the minimiser, or ``None`` when it fails or ends somewhere non-finite."""
    deadline = None if timeout is None or timeout <= 0 else time.monotonic() + timeout

    def callback(intermediate_result: Any) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise StopIteration

    try:
        with np.errstate(all="ignore"):
            result = scipy.optimize.minimize(
                objective,
                np.clip(x0, lo, hi),
                jac=True,
                method="L-BFGS-B",
                bounds=scipy.optimize.Bounds(lo, hi),
                options={"maxiter": int(maxiter), "ftol": float(ftol)},
                callback=callback,
            )
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
        log.debug("%s fit failed: %s: %s", what, type(exc).__name__, exc)
        return None
    if not (np.all(np.isfinite(result.x)) and np.isfinite(result.fun)):
        return None
    return np.asarray(result.x)


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
        return np.concatenate([cm.base_kernel.raw_lengthscale.detach().numpy().reshape(-1), cm.raw_outputscale.detach().numpy().reshape(-1)])

    def set(self, x: np.ndarray) -> None:
        cm = self.model.covar_module
        with torch.no_grad():
            cm.base_kernel.raw_lengthscale.copy_(torch.as_tensor(x[: self.d], dtype=DTYPE).reshape(cm.base_kernel.raw_lengthscale.shape))
            cm.raw_outputscale.copy_(torch.as_tensor(x[self.d], dtype=DTYPE).reshape(cm.raw_outputscale.shape))

    def _likelihood_terms(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r"""``z`` (clamped), ``log Phi(z)``, ``b = d(-log lik)/df``, ``w`` and the mask of unclamped ``z``."""
        raw = self.D @ f / SQRT2_F
        z = np.clip(raw, -3.0, 3.0)
        log_cdf = scipy.special.log_ndtr(z)
        h = np.exp(-0.5 * z * z - 0.5 * math.log(2.0 * math.pi) - log_cdf)
        b = -(h / SQRT2_F) @ self.D
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
        K0 = np.exp(-0.5 * (self.Dx2 / ls**2).sum(-1))
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
        log_prior = (c * math.log(r) - math.lgamma(c) + (c - 1.0) * np.log(ls) - r * ls).sum()
        log_prior += -(dist**2) / (2.0 * sigma**2) - math.log(sigma) - 0.5 * math.log(2.0 * math.pi)
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
        g_S = alpha - ((h * inside) / SQRT2_F) @ self.D
        W_c = (self.D.T * np.where(inside, 0.0, w)) @ self.D
        g_f = g_S + W_c @ (K @ (Binv.T @ g_S)) + 0.5 * (dw * q / SQRT2_F) @ self.D  # d loss / d (A dK alpha)
        u = Binv.T @ g_f
        G = 0.5 * (W @ Binv).T - 0.5 * np.outer(alpha, alpha) + np.outer(u, alpha)
        G = 0.5 * (G + G.T)
        KG = K * G
        d_ls = np.einsum("ij,ijk->k", KG, self.Dx2) / ls**3 - ((c - 1.0) / ls - r)
        d_box = dist / sigma**2 * np.sign(s - centre) if dist > 0 else 0.0
        d_raw = ds_draw * ((K0 * G).sum() + d_box)
        return loss, np.concatenate([d_ls, [d_raw]])

    def fit(self, maxiter: int, ftol: float, timeout: float | None) -> bool:
        r"""L-BFGS-B from the model's current hyper-parameters; writes the result back and
        leaves the last mode in ``self.f``. ``False`` (model untouched) on failure."""
        lo = np.array([self.ls_lower] * self.d + [-np.inf])
        hi = np.full(self.d + 1, np.inf)
        x = _minimize_packed(self, self.get(), lo, hi, maxiter, ftol, timeout, "packed pairwise Laplace")
        if x is None:
            return False
        try:
            with np.errstate(all="ignore"):
                self(x)  # the mode at the final hyper-parameters
        except (np.linalg.LinAlgError, ValueError, FloatingPointError):
            return False
        self.set(x)
        return True


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


def _classification(
    spec: ModelSpec, X: np.ndarray, y: np.ndarray, warm_state: ModelState | None, refit: bool
) -> tuple[Model | None, LatentGP, Tensor, dict[str, list]]:
    d = int(spec.dim)
    opts = spec.options
    n = X.shape[0]
    Xt = torch.as_tensor(X, dtype=DTYPE)
    yt = torch.as_tensor(y, dtype=DTYPE)
    inducing_size = max(1, opt_int(opts, "inducing_size", 100))
    Z = select_inducing_points(Xt, inducing_size) if n else torch.full((1, d), 0.5, dtype=DTYPE)
    covar = make_kernel(d, str(opts.get("kernel", "rbf") or "rbf"))
    mean = ConstantMean(constant_prior=NormalPrior(0.0, 2.0)).to(DTYPE)
    model = SingleTaskVariationalGP(
        train_X=Xt if n else Z,
        train_Y=yt.unsqueeze(-1) if n else None,
        likelihood=BernoulliLikelihood(),
        covar_module=covar,
        mean_module=mean,
        inducing_points=Z,
        learn_inducing_points=False,
    ).to(DTYPE)
    digest = data_digest(spec.kind, opts, X, y)
    warm = _warm_usable(warm_state, spec.kind)
    if warm:
        assert warm_state is not None
        _load(model, warm_state.hyperparameters, include_variational=False)
    vs = model.model.variational_strategy
    if n:
        reuse = (
            warm
            and not refit
            and warm_state is not None
            and warm_state.hyperparameters.get(DIGEST_KEY) == [digest]
            and _load(vs, {k.removeprefix("model.variational_strategy."): v for k, v in warm_state.hyperparameters.items()}, True)
            >= 2
        )
        if reuse:
            vs.variational_params_initialized.fill_(1)
        else:
            mll = VariationalELBO(model.likelihood, model.model, num_data=n)
            fast = opt_str(opts, "elbo", "fast") == "fast"

            def run(attempts: int, freeze: bool = False) -> None:
                if fast and PackedElbo.supports(model, mll):
                    packed = PackedElbo(model, mll, Xt, yt)
                    maxiter = opt_int(opts, "max_fit_iter", 200)
                    if packed.fit(maxiter, opt_float(opts, "fit_ftol", FIT_FTOL) or FIT_FTOL, opt_float(opts, "max_fit_time", None), freeze):
                        return
                frozen = [p for name, p in model.named_parameters() if "variational" not in name and p.requires_grad] if freeze else []
                for p in frozen:
                    p.requires_grad_(False)
                closure = variational_elbo_closure(model, mll, Xt, yt) if fast else None
                _fit_mll(mll, opts, max_attempts=attempts, closure=closure)
                for p in frozen:
                    p.requires_grad_(True)
                vs.variational_params_initialized.fill_(1)

            extended = warm and warm_state is not None and _extend_variational(model, warm_state, Z)
            if extended and refit:
                run(1)  # everything at once, from one observation away
            elif warm:
                # condition on the data with the warm hyper-parameters held fixed (cheap:
                # only the variational parameters move) ...
                run(1, freeze=True)
                if refit:  # ... then refit everything from that good starting point
                    run(1)
            else:
                run(2)
    model.eval()
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
    latent = LatentGP(kernel, _mean_fn(model.model.mean_module), Zv, L, w, M, jitter=jitter)
    hypers = _collect(model, include_variational=True) if n else _collect(model, include_variational=False)
    if n:
        hypers[DIGEST_KEY] = [digest]
        hypers[INDUCING_KEY] = Zv.tolist()
    train_X = unique_rows(Xt) if n else Xt
    return (model if n else None), latent, train_X, hypers


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
    if kern:
        covar = make_kernel(d, str(kern), lengthscale_prior=(3.0, 6.0), outputscale_bounds=(0.05, 20.0))
    if n == 0:  # prior only: build the modules on a dummy point
        Xt, yt = torch.full((1, d), 0.5, dtype=DTYPE), torch.zeros(1, 1, dtype=DTYPE)
    model = SingleTaskGP(Xt, yt, covar_module=covar, outcome_transform=Standardize(m=1)).to(DTYPE)
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
        mean_fn = _mean_fn(model.mean_module)
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


def _pairwise_kernel(d: int) -> ScaleKernel:
    r"""PairwiseGP's default priors (Gamma(2.4, 2.7) length scales, boxed output scale), with ARD over ``d``."""
    conc, rate = 2.4, 2.7
    return ScaleKernel(
        RBFKernel(
            ard_num_dims=d,
            lengthscale_prior=GammaPrior(conc, rate),
            lengthscale_constraint=GreaterThan(1e-4, transform=None, initial_value=(conc - 1) / rate),
        ),
        outputscale_prior=SmoothedBoxPrior(a=1e-2, b=1e2),
        outputscale_constraint=Interval(5e-3, 2e2, initial_value=1.0),
    ).to(DTYPE)


def _pairwise(
    spec: ModelSpec, X: np.ndarray, y: np.ndarray, warm_state: ModelState | None, refit: bool
) -> tuple[Model | None, LatentGP, Tensor, dict[str, list]]:
    d = int(spec.dim)
    opts = spec.options
    covar = _pairwise_kernel(d)
    warm = _warm_usable(warm_state, spec.kind)
    if warm:
        assert warm_state is not None
        _load(covar, {k.removeprefix("covar_module."): v for k, v in warm_state.hyperparameters.items()}, False)
    datapoints, comps = pairwise_to_comparisons(X, y) if X.shape[0] else (None, None)
    if comps is None or comps.shape[0] == 0:
        kernel = KernelFn(covar)
        empty = torch.zeros(0, dtype=DTYPE)
        latent = LatentGP(kernel, _mean_fn(None), torch.zeros(0, d, dtype=DTYPE), empty, empty, empty)
        hypers = {f"covar_module.{k}": v for k, v in _collect(covar, False).items()}
        return None, latent, torch.zeros(0, d, dtype=DTYPE), hypers
    # data without BoTorch's initial mode search (fsolve from a randomised start): the fit below,
    # or the final update, finds the mode
    model = PairwiseGP(None, None, covar_module=covar).to(dtype=DTYPE)
    model.set_train_data(datapoints, comps, update_model=False)
    packed = None
    if refit or not warm:
        mll = PairwiseLaplaceMarginalLogLikelihood(model.likelihood, model)
        if opt_str(opts, "laplace", "fast") == "fast" and PackedPairwiseLaplace.supports(model, mll):
            packed = PackedPairwiseLaplace(model, mll)
            maxiter = opt_int(opts, "max_fit_iter", 200)
            if not packed.fit(maxiter, opt_float(opts, "fit_ftol", FIT_FTOL) or FIT_FTOL, opt_float(opts, "max_fit_time", None)):
                packed = None
        if packed is None:
            _fit_mll(mll, opts, max_attempts=1 if warm else 2)
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
        mean_fn = _mean_fn(model.mean_module)
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
    if spec.kind == CLASSIFICATION:
        model, latent, train_X, hypers = _classification(spec, X, y, warm_state, refit)
        noise = PROBIT_PENDING_NOISE
    elif spec.kind == REGRESSION:
        model, latent, train_X, hypers, noise = _regression(spec, X, y, warm_state, refit)
    elif spec.kind == PAIRWISE:
        model, latent, train_X, hypers = _pairwise(spec, X, y, warm_state, refit)
        noise = PROBIT_PENDING_NOISE
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
    )
