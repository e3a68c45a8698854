"""Semi-parametric psychometric models: AEPsych's SemiParametricGPModel and HadamardSemiPModel.

Along the stimulus-intensity dimension ``s = x[stim_dim]`` the latent is linear,
``f(x) = k(c) * (s - o(c))``, with the slope ``k`` and the offset ``o`` (where ``f = 0``) Gaussian
processes over the other, context, dimensions ``c`` (slope prior mean ``slope_mean``, offset prior mean
0, scaled RBF kernels with AEPsych's Gamma(3, 6) length-scale and Gamma(1.5, 1) output-scale priors);
the response probability is the link's ``floor + (1 - floor) F(f)`` (compute/links.py).

Both are fitted jointly by variational inference: whitened inducing variables over the context
dimensions, one set per GP (``q(v_o) q(v_k)``, full covariances), hyper-parameters by MAP, all at
once by L-BFGS-B on a torch autograd objective. SemiParametricGPModel takes the expected
log-likelihood of the product exactly (2-D Gauss-Hermite over ``o`` and ``k``); HadamardSemiPModel
replaces the product by its moment-matched normal (AEPsych's Hadamard MVN approximation, a 1-D
quadrature), which is cheaper per evaluation.

Owns these fits, the product posterior (``ProductLatent``: the LatentGP interface the acquisitions and
predictions use, moments of the product), the threshold and probability read-outs (AEPsych's
SemiPThresholdObjective / SemiPProbabilityObjective) and the threshold-variance acquisition. Must not
touch server state, I/O or job orchestration.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.optimize
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.utils.transforms import t_batch_mode_transform
from gpytorch.kernels import RBFKernel
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from psyserve.compute.contract import HADAMARD, ModelSpec, ModelState, data_digest, opt_float, opt_int, opt_str
from psyserve.compute.inducing import allocate_inducing_points
from psyserve.compute.kernels import stationary_kernel
from psyserve.compute.latent import PROBIT_PENDING_NOISE, ConditionedLatentGP
from psyserve.compute.lbfgs import FIT_FTOL
from psyserve.compute.links import Link, link_of
from psyserve.compute.numerics import DTYPE, unique_rows

__all__ = ["ProductLatent", "SemiPFit", "ThresholdVariance", "fit_semip", "semip_options"]

#: AEPsych's priors: length scales Gamma(3, 6), output scales Gamma(1.5, 1)
_LS_PRIOR = (3.0, 6.0)
_OS_PRIOR = (1.5, 1.0)
_JITTER = 1e-6
_LOG_BOUNDS_LS = (math.log(0.02), math.log(10.0))
_LOG_BOUNDS_OS = (math.log(0.01), math.log(25.0))
_GH2 = np.polynomial.hermite.hermgauss(12)  # SemiP: 12 x 12 nodes over (o, k)
_GH1 = np.polynomial.hermite.hermgauss(20)  # Hadamard: 20 nodes over f
_DIGEST = "__digest__"
#: inducing-context selection: reference length scale (below the prior's mode, 1/3) and residual-variance stop
_REF_LS = 0.2
_PIVOT_TOL = 1e-3


def semip_options(spec: ModelSpec) -> tuple[int, float]:
    r"""``stim_dim`` (default 0, must index a dimension) and ``slope_mean`` (default 2) of a SemiP spec."""
    d = int(spec.dim)
    stim = opt_int(spec.options, "stim_dim", 0)
    if stim < 0:
        stim += d
    if not 0 <= stim < d:
        raise ValueError(f"stim_dim {opt_int(spec.options, 'stim_dim', 0)} is not a dimension of a {d}-dimensional model")
    slope_mean = opt_float(spec.options, "slope_mean", 2.0)
    assert slope_mean is not None
    if not math.isfinite(slope_mean):
        raise ValueError("slope_mean must be finite")
    return stim, float(slope_mean)


class _Part:
    r"""One fitted GP of the pair (offset or slope) over the context dimensions, whitened:
    ``g(c) = mean + phi(c)^T w`` with ``phi(c) = L^{-1} k(Z, c)``, ``q(w) = N(w, C C^T)``."""

    def __init__(self, Z: Tensor, ls: Tensor, scale: Tensor, mean: float, w: Tensor, C: Tensor) -> None:
        self.Z, self.ls, self.scale, self.mean = Z, ls, scale, float(mean)
        self.w, self.C = w, C
        self.m = int(Z.shape[0])
        if self.m:
            K = stationary_kernel(Z, Z, ls, scale, "rbf") + _JITTER * scale * torch.eye(self.m, dtype=DTYPE)
            self.L = psd_safe_cholesky(K)
        else:
            self.L = torch.zeros(0, 0, dtype=DTYPE)

    def _phi(self, Xc: Tensor) -> Tensor:
        K = stationary_kernel(self.Z, Xc, self.ls, self.scale, "rbf")  # ... x m x q
        return torch.linalg.solve_triangular(self.L, K, upper=False)

    def mean_var(self, Xc: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        r"""Mean, variance (``... x q``) and the features (``... x m x q``, ``None`` without inducing points)."""
        var = self.scale.expand(Xc.shape[:-1])
        if not self.m:
            return torch.full(Xc.shape[:-1], self.mean, dtype=DTYPE), var, None
        phi = self._phi(Xc)
        mu = self.mean + torch.einsum("...mq,m->...q", phi, self.w)
        Ct_phi = torch.einsum("mk,...mq->...kq", self.C, phi)
        var = var - phi.pow(2).sum(-2) + Ct_phi.pow(2).sum(-2)
        return mu, var.clamp_min(1e-12), phi

    def cov(self, X1c: Tensor, X2c: Tensor) -> Tensor:
        r"""Posterior cross-covariance ``... x q1 x q2``."""
        K = stationary_kernel(X1c, X2c, self.ls, self.scale, "rbf")
        if not self.m:
            return K
        p1, p2 = self._phi(X1c), self._phi(X2c)
        S_minus_I = self.C @ self.C.mT - torch.eye(self.m, dtype=DTYPE)
        return K + p1.mT @ (S_minus_I @ p2)


class ProductLatent:
    r"""The latent ``f(x) = k(c) (s - o(c))`` under ``q``, summarised by its exact first two moments
    (``o`` and ``k`` independent under ``q``):

        mean(x)     = mk (s - mo)
        cov(x, x')  = mk mk' Co + (s - mo)(s' - mo') Ck + Ck Co

    the interface of ``LatentGP`` that acquisitions, batches (``condition``) and predictions use, so a
    Gaussian with these moments stands in for ``f`` (AEPsych's Hadamard approximation). The threshold
    and the exact response probability use ``o`` and ``k`` themselves.
    """

    analytic_grad = False
    scale = 1.0
    offset = 0.0
    jitter = _JITTER

    def __init__(self, dim: int, stim_dim: int, offset: _Part, slope: _Part, link: Link, exact: bool) -> None:
        self.dim, self.stim_dim = int(dim), int(stim_dim)
        self.ctx = [i for i in range(self.dim) if i != self.stim_dim]
        self.o, self.k = offset, slope
        self.link = link
        #: SemiParametricGPModel: response probabilities by quadrature over (o, k), not the moment-matched normal
        self.exact = bool(exact)
        self.Z = torch.zeros(0, self.dim, dtype=DTYPE)  # only its width is read (the input dimension)
        self.m = 0

    def context(self, X: Tensor) -> Tensor:
        if not self.ctx:
            return torch.zeros(*X.shape[:-1], 1, dtype=X.dtype)
        return X[..., self.ctx]

    def parts(self, X: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        r"""``s``, offset mean / variance, slope mean / variance at ``X`` (``... x q x d`` -> ``... x q``)."""
        Xc = self.context(X)
        mo, vo, _ = self.o.mean_var(Xc)
        mk, vk, _ = self.k.mean_var(Xc)
        return X[..., self.stim_dim], mo, vo, mk, vk

    def mean_variance(self, X: Tensor) -> tuple[Tensor, Tensor]:
        s, mo, vo, mk, vk = self.parts(X)
        u = s - mo
        return mk * u, (mk * mk * vo + u * u * vk + vk * vo).clamp_min(1e-12)

    def mean(self, X: Tensor) -> Tensor:
        return self.mean_variance(X)[0]

    def variance(self, X: Tensor) -> Tensor:
        return self.mean_variance(X)[1]

    def covariance(self, X1: Tensor, X2: Tensor) -> Tensor:
        s1, mo1, _, mk1, _ = self.parts(X1)
        s2, mo2, _, mk2, _ = self.parts(X2)
        c1, c2 = self.context(X1), self.context(X2)
        Co, Ck = self.o.cov(c1, c2), self.k.cov(c1, c2)
        u1, u2 = (s1 - mo1).unsqueeze(-1), (s2 - mo2).unsqueeze(-2)
        return mk1.unsqueeze(-1) * mk2.unsqueeze(-2) * Co + u1 * u2 * Ck + Ck * Co

    def condition(self, P: Tensor, A: Tensor | None = None, noise: float | Tensor = PROBIT_PENDING_NOISE) -> ConditionedLatentGP:
        return ConditionedLatentGP(self, P, A, noise)  # type: ignore[arg-type]  # duck-typed LatentGP

    # ------------------------------------------------------------------ read-outs
    def probability(self, X: Tensor) -> Tensor:
        r"""``E[p(f)]`` at ``X`` (``... x q x d``): quadrature over ``(o, k)`` for the exact model, the
        moment-matched normal for the Hadamard one (what each was fitted with)."""
        if not self.exact:
            mu, var = self.mean_variance(X)
            return self.link.expected_prob(mu, var)
        s, mo, vo, mk, vk = self.parts(X)
        t, wts = (torch.as_tensor(a, dtype=DTYPE) for a in _GH2)
        o = mo.unsqueeze(-1).unsqueeze(-1) + math.sqrt(2.0) * vo.sqrt().unsqueeze(-1).unsqueeze(-1) * t.reshape(-1, 1)
        k = mk.unsqueeze(-1).unsqueeze(-1) + math.sqrt(2.0) * vk.sqrt().unsqueeze(-1).unsqueeze(-1) * t.reshape(1, -1)
        p = self.link.prob(k * (s.unsqueeze(-1).unsqueeze(-1) - o))
        W = (wts.reshape(-1, 1) * wts.reshape(1, -1)) / math.pi
        return (p * W).sum((-1, -2))

    def threshold(self, Xc_full: Tensor, target: float) -> tuple[Tensor, Tensor]:
        r"""The intensity where the response probability reaches ``target`` at the contexts of
        ``Xc_full`` (``... x d``; its ``stim_dim`` column is ignored): ``o + F^-1(target) / k`` at the
        posterior means (AEPsych's SemiPThresholdObjective on the mean), and its delta-method variance
        ``Var o + a^2 Var k / k^4``."""
        a = self.link.latent_level(target)
        Xc = self.context(Xc_full.unsqueeze(-2)).squeeze(-2).unsqueeze(-2)
        mo, vo, _ = self.o.mean_var(Xc)
        mk, vk, _ = self.k.mean_var(Xc)
        mk_safe = torch.where(mk.abs() < 1e-3, torch.full_like(mk, 1e-3), mk)
        thr = mo + a / mk_safe
        return thr.squeeze(-1), (vo + a * a * vk / mk_safe.pow(4)).squeeze(-1)


class ThresholdVariance(AcquisitionFunction):
    r"""AEPsych's MCPosteriorVariance with a SemiPThresholdObjective ("ThresholdBALV"): the posterior
    variance of the threshold at the candidate's context (delta method); independent of the intensity.
    Pending points are ignored (a batch's points then share the best context; AEPsych's IntensityAware
    generator behaves the same way)."""

    def __init__(self, latent: ProductLatent, target: float) -> None:
        super().__init__(model=torch.nn.Module())  # type: ignore[arg-type]  # the posterior is ``latent``
        self.latent = latent
        self.target = float(target)
        self.latent.link.latent_level(self.target)  # validates the target against the floor

    def set_X_pending(self, X_pending: Tensor | None = None) -> None:
        self.X_pending = X_pending  # type: ignore[assignment]

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]
    def forward(self, X: Tensor) -> Tensor:
        return self.latent.threshold(X.squeeze(-2), self.target)[1]


# ---------------------------------------------------------------------------- the fit


class SemiPFit:
    r"""What ``fit_semip`` gives back: the posterior, the state to keep, the training inputs."""

    def __init__(self, latent: ProductLatent, hypers: dict[str, list], train_X: Tensor, fitted: bool) -> None:
        self.latent, self.hypers, self.train_X, self.fitted = latent, hypers, train_X, fitted


def select_contexts(Xc: Tensor, k: int, lengthscale: float = _REF_LS, tol: float = _PIVOT_TOL) -> Tensor:
    r"""Inducing contexts: greedy variance reduction (pivoted Cholesky) over the unique training contexts
    under a reference RBF kernel (unit variance, length scale ``lengthscale``), stopping at ``k`` points
    or when every context's residual prior variance is below ``tol`` (BoTorch's GreedyVarianceReduction,
    which AEPsych uses, with a stopping tolerance): the slope and offset vary slowly over the context,
    so a handful of points carry them and the fit's cost does not grow with the number of trials."""
    U = unique_rows(Xc.detach())
    n = U.shape[0]
    if n == 0:
        return U
    ls = torch.full((U.shape[1],), float(lengthscale), dtype=DTYPE)
    resid = torch.ones(n, dtype=DTYPE)
    rows: list[Tensor] = []
    idx: list[int] = []
    for _ in range(min(k, n)):
        j = int(torch.argmax(resid))
        if float(resid[j]) < tol:
            break
        kj = stationary_kernel(U, U[j : j + 1], ls, torch.ones((), dtype=DTYPE), "rbf").squeeze(-1)
        for r in rows:
            kj = kj - r * r[j]
        r_new = kj / math.sqrt(float(resid[j]))
        rows.append(r_new)
        resid = (resid - r_new * r_new).clamp_min(0.0)
        resid[j] = 0.0
        idx.append(j)
    return U[sorted(idx)]


def _inducing_contexts(spec: ModelSpec, Xt: Tensor, Xc: Tensor, ctx: list[int], k: int) -> Tensor:
    r"""The inducing contexts: ``select_contexts`` without an ``inducing_point_method``; with one, AEPsych's
    allocator over the full inputs (its kernel sees the context dimensions only: the reference RBF of
    ``select_contexts``) and the chosen points' contexts, as AEPsych's semi-parametric models allocate.
    With no context dimension there is one context whatever the allocator."""
    method = opt_str(spec.options, "inducing_point_method", "")
    if not method or not ctx:
        return select_contexts(Xc, k)
    kernel = RBFKernel(ard_num_dims=len(ctx), active_dims=ctx).to(DTYPE)
    with torch.no_grad():
        kernel.lengthscale = torch.full((len(ctx),), _REF_LS, dtype=DTYPE)
    return unique_rows(allocate_inducing_points(method, Xt, k, kernel, spec.options)[:, ctx])


def _tril(m: int) -> tuple[Tensor, Tensor]:
    idx = torch.tril_indices(m, m)
    return idx[0], idx[1]


class _Objective:
    r"""The negative (ELBO + log hyper-priors) / n as a function of one flat parameter vector:
    ``[log ls_o, log os_o, log ls_k, log os_k, w_o, tril(C_o), w_k, tril(C_k)]`` (C's diagonal as its log)."""

    def __init__(self, Xc: Tensor, s: Tensor, y: Tensor, Z: Tensor, slope_mean: float, link: Link, exact: bool) -> None:
        self.Xc, self.s, self.y, self.Z = Xc, s, y, Z
        self.slope_mean, self.link, self.exact = slope_mean, link, exact
        self.dc, self.m, self.n = Xc.shape[-1], Z.shape[0], Xc.shape[0]
        self.rows, self.cols = _tril(self.m)
        self.diag = self.rows == self.cols
        self.nt = self.rows.shape[0]
        self.size = 2 * (self.dc + 1 + self.m + self.nt)
        if exact:
            t, w = (torch.as_tensor(a, dtype=DTYPE) for a in _GH2)
            self.to, self.tk = math.sqrt(2.0) * t.reshape(-1, 1), math.sqrt(2.0) * t.reshape(1, -1)
            self.W = (w.reshape(-1, 1) * w.reshape(1, -1) / math.pi)
        else:
            t, w = (torch.as_tensor(a, dtype=DTYPE) for a in _GH1)
            self.t1, self.w1 = math.sqrt(2.0) * t, w / math.sqrt(math.pi)

    def split(self, theta: Tensor) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]:
        parts = []
        i = 0
        for _ in range(2):
            lls = theta[i : i + self.dc]
            i += self.dc
            los = theta[i]
            i += 1
            w = theta[i : i + self.m]
            i += self.m
            raw = theta[i : i + self.nt]
            i += self.nt
            vals = torch.where(self.diag, torch.exp(raw), raw)
            C = torch.zeros(self.m, self.m, dtype=DTYPE).index_put((self.rows, self.cols), vals)
            parts.append((lls, los, w, C))
        return parts[0], parts[1]

    def initial(self, warm: Mapping[str, list] | None) -> np.ndarray:
        r"""The starting point: the prior (``q = p``) at AEPsych-like hyper-parameters, or a warm state's
        hyper-parameters with its posterior of each GP carried over to this fit's inducing contexts
        (exact when they are the same points; a projection otherwise)."""
        vec: list[np.ndarray] = []
        Z_old = None
        if warm is not None:
            try:
                Z_old = torch.as_tensor(warm["__inducing__"], dtype=DTYPE).reshape(-1, self.dc)
            except (KeyError, TypeError, ValueError, RuntimeError):
                Z_old = None
        for name, mean in (("offset", 0.0), ("slope", self.slope_mean)):
            lls = np.full(self.dc, math.log(0.5))
            los = np.array([0.0])
            w = np.zeros(self.m)
            C = np.eye(self.m)
            if warm is not None:
                try:
                    lls = np.log(np.asarray(warm[f"{name}.lengthscale"], dtype=float).reshape(self.dc))
                    los = np.log(np.asarray(warm[f"{name}.outputscale"], dtype=float).reshape(1))
                    if Z_old is not None and Z_old.shape == self.Z.shape and torch.equal(Z_old, self.Z):
                        w = np.asarray(warm[f"{name}.w"], dtype=float).reshape(self.m)
                        C = np.tril(np.asarray(warm[f"{name}.C"], dtype=float).reshape(self.m, self.m))
                    elif Z_old is not None and Z_old.shape[0] and self.m:
                        w, C = _carry_over(warm, name, Z_old, self.Z, lls, los, mean)
                except (KeyError, TypeError, ValueError, RuntimeError):
                    w, C = np.zeros(self.m), np.eye(self.m)
            lls = np.clip(lls, *_LOG_BOUNDS_LS)
            los = np.clip(los, *_LOG_BOUNDS_OS)
            tri = C[self.rows.numpy(), self.cols.numpy()]
            tri = np.where(self.diag.numpy(), np.log(np.clip(np.abs(tri), 1e-4, 10.0)), tri)
            vec += [lls, los, w, tri]
        return np.concatenate(vec)

    def bounds(self, freeze_hypers: np.ndarray | None) -> list[tuple[float | None, float | None]]:
        out: list[tuple[float | None, float | None]] = []
        for _ in range(2):
            out += [_LOG_BOUNDS_LS] * self.dc + [_LOG_BOUNDS_OS]
            out += [(None, None)] * self.m + [(math.log(1e-4), math.log(10.0)) if bool(dg) else (None, None) for dg in self.diag]
        if freeze_hypers is not None:  # hyper-parameters pinned to their warm values
            i = 0
            for _ in range(2):
                for j in range(self.dc + 1):
                    v = float(freeze_hypers[i + j])
                    out[i + j] = (v, v)
                i += self.dc + 1 + self.m + self.nt
        return out

    def parts(self, theta: Tensor) -> tuple[_Part, _Part]:
        (llo, loo, wo, Co), (llk, lok, wk, Ck) = self.split(theta)
        po = _Part(self.Z, torch.exp(llo), torch.exp(loo), 0.0, wo, Co)
        pk = _Part(self.Z, torch.exp(llk), torch.exp(lok), self.slope_mean, wk, Ck)
        return po, pk

    def loss(self, theta: Tensor) -> Tensor:
        po, pk = self.parts(theta)
        mo, vo, _ = po.mean_var(self.Xc)
        mk, vk, _ = pk.mean_var(self.Xc)
        y = self.y
        if self.exact:  # E_q log p(y | k (s - o)) over independent o, k: 2-D Gauss-Hermite
            o = mo[:, None, None] + vo.sqrt()[:, None, None] * self.to
            k = mk[:, None, None] + vk.sqrt()[:, None, None] * self.tk
            ll = self.link.loglik(k * (self.s[:, None, None] - o), y[:, None, None])
            ell = (ll * self.W).sum((-1, -2))
        else:  # the product's moment-matched normal
            u = self.s - mo
            mu = mk * u
            var = (mk * mk * vo + u * u * vk + vk * vo).clamp_min(1e-12)
            f = mu[:, None] + var.sqrt()[:, None] * self.t1
            ell = (self.link.loglik(f, y[:, None]) * self.w1).sum(-1)
        kl = torch.zeros((), dtype=DTYPE)
        logp = torch.zeros((), dtype=DTYPE)
        for part in (po, pk):
            C = part.C
            kl = kl + 0.5 * (C.pow(2).sum() + part.w.pow(2).sum() - self.m - 2.0 * torch.log(torch.diagonal(C).abs()).sum())
            a, b = _LS_PRIOR
            logp = logp + ((a - 1.0) * torch.log(part.ls) - b * part.ls).sum()
            a, b = _OS_PRIOR
            logp = logp + (a - 1.0) * torch.log(part.scale) - b * part.scale
        return -(ell.sum() - kl + logp) / max(self.n, 1)


def _carry_over(
    warm: Mapping[str, list], name: str, Z_old: Tensor, Z: Tensor, lls: np.ndarray, los: np.ndarray, mean: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""The warm posterior of one GP at the new inducing contexts ``Z``, whitened under the (warm) prior:
    ``w = L^{-1} (mu - mean)``, ``C = chol(L^{-1} Sigma L^{-T})``."""
    ls = torch.as_tensor(np.exp(lls), dtype=DTYPE)
    scale = torch.as_tensor(float(np.exp(los[0])), dtype=DTYPE)
    m_old = Z_old.shape[0]
    w_old = torch.as_tensor(warm[f"{name}.w"], dtype=DTYPE).reshape(m_old)
    C_old = torch.as_tensor(warm[f"{name}.C"], dtype=DTYPE).reshape(m_old, m_old).tril()
    old = _Part(Z_old, ls, scale, mean, w_old, C_old)
    new_prior = _Part(Z, ls, scale, mean, torch.zeros(Z.shape[0], dtype=DTYPE), torch.eye(Z.shape[0], dtype=DTYPE))
    with torch.no_grad():
        mu, _, _ = old.mean_var(Z)
        Sigma = old.cov(Z, Z)
        Linv_S = torch.linalg.solve_triangular(new_prior.L, Sigma, upper=False)
        S_white = torch.linalg.solve_triangular(new_prior.L, Linv_S.mT, upper=False)
        S_white = 0.5 * (S_white + S_white.mT) + 1e-8 * torch.eye(Z.shape[0], dtype=DTYPE)
        w = torch.linalg.solve_triangular(new_prior.L, (mu - mean).unsqueeze(-1), upper=False).squeeze(-1)
        C = psd_safe_cholesky(S_white)
    if not (torch.all(torch.isfinite(w)) and torch.all(torch.isfinite(C))):
        raise ValueError("warm posterior could not be carried over")
    return w.numpy().copy(), C.numpy().copy()


def _hypers(obj: _Objective, theta: Tensor, Z: Tensor) -> dict[str, list]:
    po, pk = obj.parts(theta)
    out: dict[str, list] = {"__inducing__": Z.tolist()}
    for name, p in (("offset", po), ("slope", pk)):
        out[f"{name}.lengthscale"] = p.ls.detach().tolist()
        out[f"{name}.outputscale"] = [float(p.scale)]
        out[f"{name}.w"] = p.w.detach().tolist()
        out[f"{name}.C"] = p.C.detach().tolist()
    return out


def fit_semip(spec: ModelSpec, X: np.ndarray, y: np.ndarray, warm_state: ModelState | None, refit: bool) -> SemiPFit:
    r"""Fit a SemiParametricGPModel / HadamardSemiPModel on unit-cube data (``n x d``, binary ``y``).

    Options: ``stim_dim``, ``slope_mean``, ``inducing_size`` (most inducing contexts, default 100;
    the unique training contexts when fewer, else a greedy-variance subset), ``inducing_point_method``
    (AEPsych's allocators: ``_inducing_contexts``), ``max_fit_iter``
    (L-BFGS iterations, 200), ``max_fit_time`` (seconds), ``link`` / ``floor``. A warm state of the
    same kind whose inducing points are a prefix of this fit's starts the optimiser from its solution;
    with ``refit=False`` its hyper-parameters are kept (only ``q`` moves), and on the very same data
    its solution is reused as it is.
    """
    d = int(spec.dim)
    stim, slope_mean = semip_options(spec)
    link = link_of(spec.options)
    exact = spec.kind != HADAMARD
    ctx = [i for i in range(d) if i != stim]
    Xt = torch.as_tensor(X, dtype=DTYPE).reshape(-1, d)
    yt = torch.as_tensor(y, dtype=DTYPE).reshape(-1)
    n = Xt.shape[0]
    Xc = Xt[:, ctx] if ctx else torch.zeros(n, 1, dtype=DTYPE)
    k = max(1, opt_int(spec.options, "inducing_size", 100))
    Z = _inducing_contexts(spec, Xt, Xc, ctx, k) if n else torch.zeros(0, Xc.shape[1], dtype=DTYPE)
    obj = _Objective(Xc, Xt[:, stim], yt, Z, slope_mean, link, exact)
    digest = data_digest(spec.kind, spec.options, X, y)
    warm = warm_state.hyperparameters if warm_state is not None and warm_state.kind == spec.kind and warm_state.hyperparameters else None
    theta0 = obj.initial(warm)
    fitted = False
    if n and not (warm is not None and not refit and warm.get(_DIGEST) == [digest]):
        freeze = theta0 if (warm is not None and not refit) else None
        maxiter = opt_int(spec.options, "max_fit_iter", 200)
        ftol = opt_float(spec.options, "fit_ftol", FIT_FTOL) or FIT_FTOL
        timeout = opt_float(spec.options, "max_fit_time", None)
        deadline = None if timeout is None or timeout <= 0 else time.monotonic() + timeout

        def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
            if deadline is not None and time.monotonic() > deadline:
                raise _Timeout(v)
            th = torch.as_tensor(v, dtype=DTYPE).requires_grad_(True)
            value = obj.loss(th)
            if not torch.isfinite(value):
                return 1e10, np.zeros_like(v)
            (g,) = torch.autograd.grad(value, th)
            return float(value.detach()), g.numpy().astype(np.float64)

        best = theta0
        try:
            res = scipy.optimize.minimize(
                fun, theta0, jac=True, method="L-BFGS-B", bounds=obj.bounds(freeze), options={"maxiter": int(maxiter), "ftol": ftol, "gtol": 1e-6}
            )
            best = res.x
        except _Timeout as t:
            best = t.theta
        theta0 = best
        fitted = True
    theta = torch.as_tensor(theta0, dtype=DTYPE)
    with torch.no_grad():
        po, pk = obj.parts(theta)
        hypers = _hypers(obj, theta, Z)
    if n:
        hypers[_DIGEST] = [digest]
    latent = ProductLatent(d, stim, po, pk, link, exact)
    return SemiPFit(latent, hypers, unique_rows(Xt) if n else Xt, fitted)


class _Timeout(Exception):
    def __init__(self, theta: np.ndarray) -> None:
        super().__init__("max_fit_time")
        self.theta = np.array(theta, copy=True)


def threshold_readout(latent: Any, context: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Thresholds (and variances) along the intensity at ``context`` rows (``m x d``), clipped to ``[0, 1]``."""
    Xq = torch.as_tensor(np.asarray(context, dtype=np.float64), dtype=DTYPE).reshape(-1, latent.dim)
    with torch.no_grad():
        thr, var = latent.threshold(Xq, target)
    return thr.clamp(0.0, 1.0).numpy().copy(), var.numpy().copy()
