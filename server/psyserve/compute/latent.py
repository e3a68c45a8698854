"""The latent Gaussian posterior in closed form (LatentGP, ConditionedLatentGP), torch and numpy.

Owns posterior means, variances, cross-covariances and their input gradients for every model
kind; must not fit models or know about acquisitions or jobs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
import torch
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from psyserve.compute.kernels import ConstantMeanFn, KernelFn, kernel_input_grad_np
from psyserve.compute.numerics import DTYPE

#: Latent-space noise variance equivalent to one probit observation at f = 0
#: (inverse Fisher information: Phi(0)(1 - Phi(0)) / phi(0)^2 = pi / 2). Used to
#: condition on pending points during sequential greedy batch generation.
PROBIT_PENDING_NOISE = math.pi / 2


class Lookahead(NamedTuple):
    r"""What ``lookahead_np`` gives for ``b`` candidates and ``r`` reference points (the gradients are
    ``None`` without ``grad``)."""

    mean: np.ndarray  # b
    var: np.ndarray  # b
    d_mean: np.ndarray | None  # b x d
    d_var: np.ndarray | None  # b x d
    cov: np.ndarray  # b x r: cov(x, reference point)
    d_cov: np.ndarray | None  # b x r x d


class MomentParts(NamedTuple):
    r"""``LatentGP._moments_parts``: the moments, their input gradients (``None`` without ``grad``) and the
    intermediate terms the cross-covariances reuse."""

    mean: np.ndarray  # b
    var: np.ndarray  # b
    d_mean: np.ndarray | None  # b x d
    d_var: np.ndarray | None  # b x d
    M_phi: np.ndarray  # m x b: M phi(X)
    dK: np.ndarray | None  # m x b x d: d k(Z, x) / dx


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
        = k'(a_j, x_b) (a_j - x_b) / ls^2`` (``kernels.kernel_input_grad_np``)."""
        kern = self.kernel
        return kernel_input_grad_np(A, X, self._np["ls"], float(kern.scale), kern.kind, kern.nu)

    def moments_np(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r"""Mean, variance and their input gradients at ``X`` (``b x d``), in numpy.

        Only when ``analytic_grad``. Returns ``mean`` (``b``), ``var`` (``b``, clamped at
        1e-12, zero gradient where clamped), ``d mean / dx`` and ``d var / dx`` (``b x d``).
        Same maths as ``_MeanVariance`` without torch's per-call overhead: what the
        acquisition optimiser calls a few hundred times per generated point.
        """
        parts = self._moments_parts(X, True)
        assert parts.d_mean is not None and parts.d_var is not None
        return parts.mean, parts.var, parts.d_mean, parts.d_var

    def mean_var_np(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""Mean and variance at ``X`` (``b x d``), numpy, no gradients (``analytic_grad`` only)."""
        parts = self._moments_parts(X, False)
        return parts.mean, parts.var

    def _moments_parts(self, X: np.ndarray, grad: bool) -> MomentParts:
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
            return MomentParts(mean, np.maximum(var_raw, 1e-12), None, None, Mphi, None)
        G = scipy.linalg.solve_triangular(L, Mphi, lower=True, trans="T", check_finite=False)
        dKd = dK[..., None] * diff / ls**2  # m x b x d: d k(z_j, x_b) / d x_b
        d_mean = self.scale * np.einsum("j,jbd->bd", alpha, dKd)
        d_var = 2.0 * self.scale**2 * np.einsum("jb,jbd->bd", G, dKd)
        d_var[var_raw < 1e-12] = 0.0
        return MomentParts(mean, np.maximum(var_raw, 1e-12), d_mean, d_var, Mphi, dKd)

    def reference_np(self, R: np.ndarray) -> dict[str, Any]:
        r"""Precomputed terms for cross-covariances with a fixed reference set ``R`` (``r x d``)."""
        K = self._kernel_np(self._np["Z"], R)[0]
        phi_R = scipy.linalg.solve_triangular(self._np["L"], K, lower=True, check_finite=False)
        H = scipy.linalg.solve_triangular(self._np["L"], self._np["M"] @ phi_R, lower=True, trans="T", check_finite=False)
        return {"R": R, "phi": phi_R, "H": H}

    def lookahead_np(self, X: np.ndarray, ref: dict[str, Any], grad: bool = True) -> Lookahead:
        r"""``moments_np`` plus the cross-covariance ``c = cov(x, r)`` with the reference set of
        ``ref`` (``reference_np``), ``b x r``, and (``grad``) ``dc / dx`` (``b x r x d``).

        Returns ``mean, var, d_mean, d_var, c, d_c`` (the gradients ``None`` without ``grad``).
        """
        mean, var, d_mean, d_var, Mphi, dKd = self._moments_parts(X, grad)
        K_RX, diff_RX, dK_RX = self._kernel_np(ref["R"], X)
        s2 = self.scale**2
        c = s2 * (K_RX.T + Mphi.T @ ref["phi"])
        if not grad:
            return Lookahead(mean, var, None, None, c, None)
        assert dKd is not None
        dc = dK_RX[..., None] * diff_RX / self._np["ls"] ** 2  # r x b x d
        dc = s2 * (dc.transpose(1, 0, 2) + np.einsum("jbd,jr->brd", dKd, ref["H"]))
        return Lookahead(mean, var, d_mean, d_var, c, dc)

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
        ctx.save_for_backward(
            torch.as_tensor(d_mu, dtype=DTYPE).reshape(X.shape), torch.as_tensor(d_var, dtype=DTYPE).reshape(X.shape)
        )
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
    def _reduce_var(
        var: np.ndarray, d_var: np.ndarray | None, g: np.ndarray, dg: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        raw = var - (g * g).sum(0)
        if d_var is not None and dg is not None:
            d_var = d_var - 2.0 * np.einsum("kb,kbd->bd", g, dg)
            d_var[raw < 1e-12] = 0.0
        return np.maximum(raw, 1e-12), d_var

    def moments_np(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        r"""``LatentGP.moments_np`` of the conditioned posterior."""
        base = self.base.lookahead_np(X, self._refP, True)
        var, d_var = self._reduce_var(base.var, base.d_var, *self._g_np(base.cov, base.d_cov))
        assert base.d_mean is not None and d_var is not None
        return base.mean, var, base.d_mean, d_var

    def mean_var_np(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        base = self.base.lookahead_np(X, self._refP, False)
        return base.mean, self._reduce_var(base.var, None, *self._g_np(base.cov, None))[0]

    def reference_np(self, R: np.ndarray) -> dict[str, Any]:
        r"""``LatentGP.reference_np``: the base's terms for ``R`` and ``P`` together, and ``g(R)``."""
        cPR = self.base.covariance(self.P, torch.as_tensor(R, dtype=DTYPE)).numpy()
        gR = scipy.linalg.solve_triangular(self._Lc_np, self._A_np @ cPR, lower=True, check_finite=False)
        return {"base": self.base.reference_np(np.vstack([R, self.P.numpy()])), "gR": gR, "r": R.shape[0]}

    def lookahead_np(self, X: np.ndarray, ref: dict[str, Any], grad: bool = True) -> Lookahead:
        r"""``LatentGP.lookahead_np`` of the conditioned posterior."""
        base = self.base.lookahead_np(X, ref["base"], grad)
        c_all, dc_all = base.cov, base.d_cov
        r = int(ref["r"])
        g, dg = self._g_np(c_all[:, r:], None if dc_all is None else dc_all[:, r:])
        var, d_var = self._reduce_var(base.var, base.d_var, g, dg)
        c = c_all[:, :r] - g.T @ ref["gR"]
        if dc_all is None or dg is None:
            return Lookahead(base.mean, var, None, None, c, None)
        dc = dc_all[:, :r] - np.einsum("kbd,kr->brd", dg, ref["gR"])
        return Lookahead(base.mean, var, base.d_mean, d_var, c, dc)

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
