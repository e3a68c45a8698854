"""Acquisition functions by AEPsych name, their optimisation over the unit cube, and posterior-based query answers.
Owns candidate generation and prediction maths only; must not touch server state, I/O, model fitting or job orchestration."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.special
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.monte_carlo import qNoisyExpectedImprovement, qUpperConfidenceBound
from botorch.acquisition.objective import GenericMCObjective, MCAcquisitionObjective
from botorch.optim import optimize_acqf
from botorch.optim.batched_lbfgs_b import fmin_l_bfgs_b_batched
from botorch.optim.initializers import initialize_q_batch
from botorch.sampling.normal import SobolQMCNormalSampler
from botorch.utils.transforms import t_batch_mode_transform
from torch import Tensor

from psyserve.compute.jobs import (
    CLASSIFICATION,
    KNOWN_ACQFS,
    PAIRWISE,
    GeneratorSpec,
    acqf_supports,
    canonical_acqf,
)
from psyserve.compute.models import DTYPE, ConditionedLatentGP, FittedModel, LatentGP, opt_float, opt_int

__all__ = [
    "EAVC",
    "KNOWN_ACQFS",
    "BernoulliBALD",
    "GlobalMI",
    "LevelSetStraddle",
    "PairwisePosteriorVariance",
    "PosteriorVariance",
    "PredictionObjective",
    "acqf_supports",
    "build_acquisition",
    "bvn_excess",
    "bvn_excess_np",
    "generate_points",
    "optimize_prediction",
    "predict",
]

SQRT2 = math.sqrt(2.0)
#: Gauss-Legendre rules for ``bvn_excess`` and the ``|rho|`` up to which each is used (Genz 2004)
_GL = {n: tuple(torch.as_tensor(v, dtype=DTYPE) for v in np.polynomial.legendre.leggauss(n)) for n in (6, 12, 20)}
_GL_BANDS = ((0.3, 6), (0.75, 12), (math.inf, 20))
_GH_X, _GH_W = (torch.as_tensor(a, dtype=DTYPE) for a in np.polynomial.hermite.hermgauss(32))
_GH_X_NP, _GH_W_NP = np.polynomial.hermite.hermgauss(32)
_EPS = 1e-12
_RHO_MAX = 0.9995
#: Half-width (latent units) of the smoothed ``|mean - target|`` in the straddle: the maximum
#: usually sits on the level set itself, where the plain absolute value has a kink that
#: L-BFGS zig-zags on until its iteration cap (3x the evaluations). Shifts values by < 0.01.
STRADDLE_SMOOTHING = 1e-2
#: L-BFGS relative-decrease tolerance for acquisition optimisation (scipy's default is 2.2e-9;
#: acquisition values are O(0.1 - 1) and points are not needed to 1e-9 of the range).
ACQF_FTOL = 1e-6


def norm_cdf(x: Tensor) -> Tensor:
    r"""Standard normal CDF."""
    return 0.5 * torch.erfc(-x / SQRT2)


def norm_icdf(p: float) -> float:
    r"""Standard normal quantile, ``p`` clipped to ``[1e-9, 1 - 1e-9]``."""
    p = min(max(float(p), 1e-9), 1.0 - 1e-9)
    return float(torch.special.ndtri(torch.tensor(p, dtype=DTYPE)))


def _bvn_gl(a: Tensor, b: Tensor, tmax: Tensor, n: int) -> Tensor:
    x, w = _GL[n]
    t = tmax.unsqueeze(-1) * (0.5 * (x + 1.0))
    s = torch.sin(t)
    a_ = a.unsqueeze(-1)
    b_ = b.unsqueeze(-1)
    expo = -(a_ * a_ + b_ * b_ - 2.0 * a_ * b_ * s) / (2.0 * (1.0 - s * s))  # 1 - s^2 = cos^2 t
    return 0.5 * tmax * (torch.exp(expo) * w).sum(-1) / (2.0 * math.pi)


def _bvn_gl_values(a: Tensor, b: Tensor, tmax: Tensor, n: int) -> Tensor:
    r"""``_bvn_gl`` without autograd, ~4x faster on large arrays: node-major, in place, in
    cache-sized chunks (the look-ahead raw-sample screen evaluates ~10^6 pairs)."""
    x, w = _GL[n]
    u = 0.5 * (x + 1.0)
    shape = tmax.shape
    hk, hs, tm = (a * b).reshape(-1), (0.5 * (a * a + b * b)).reshape(-1), tmax.reshape(-1)
    out = torch.empty_like(tm)
    for i in range(0, tm.shape[0], 4096):
        sl = slice(i, i + 4096)
        s = torch.outer(u, tm[sl]).sin_()
        num = (s * hk[sl]).sub_(hs[sl])
        out[sl] = w @ num.div_(s.mul_(s).neg_().add_(1.0)).exp_()
    return (0.25 / math.pi) * tmax * out.reshape(shape)


def bvn_excess(a: Tensor, b: Tensor, rho: Tensor) -> Tensor:
    r"""``Phi2(a, b; rho) - Phi(a) Phi(b)`` for the standard bivariate normal CDF ``Phi2``.

    Uses ``(1 / 2pi) int_0^{asin rho} exp(-(a^2 + b^2 - 2ab sin t) / (2 cos^2 t)) dt`` with
    Gauss-Legendre nodes by ``|rho|`` as in Genz (2004) (6 below 0.3, 12 below 0.75, else
    20: double precision for ``|rho| < 0.925``, error < 1e-7 for ``|rho| <= 0.9``, ``rho``
    clipped to ``+-0.9995``). Most look-ahead pairs are weakly correlated, so this is ~3x
    fewer exponentials than 20 nodes everywhere. Broadcasts ``a``, ``b``, ``rho``;
    differentiable.
    """
    a, b, rho = torch.broadcast_tensors(a, b, rho)
    tmax = torch.asin(rho.clamp(-_RHO_MAX, _RHO_MAX))
    differentiable = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad or rho.requires_grad)
    rule = _bvn_gl if differentiable else _bvn_gl_values
    if tmax.numel() <= 64:  # small batches: one pass beats three masked ones
        return rule(a, b, tmax, 20)
    absr = rho.abs()
    out = torch.zeros(tmax.shape, dtype=tmax.dtype)
    lo = -1.0
    for hi, n in _GL_BANDS:
        m = (absr > lo) & (absr <= hi)
        if bool(m.any()):
            out = out.index_put((m,), rule(a[m], b[m], tmax[m], n))
        lo = hi
    return out


def _norm_pdf(x: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def bvn_excess_np(
    a: np.ndarray, b: np.ndarray, rho: np.ndarray, same: bool = False, grad: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    r"""``bvn_excess`` on numpy arrays (the same quadrature), with its exact partial derivatives.

    Returns ``T = Phi2(a, b; rho) - Phi(a) Phi(b)``, ``dT/da = phi(a) (Phi((b - rho a) /
    sqrt(1 - rho^2)) - Phi(b))`` (with ``same``: ``a`` and ``b`` are one variable and this is
    the total derivative, twice that) and ``dT/drho = phi2(a, b; rho)`` (zero where ``rho`` is
    clipped); the derivatives are ``None`` without ``grad``.
    """
    a, b, rho = np.broadcast_arrays(a, b, rho)
    with torch.no_grad():  # torch's vectorised sin / exp: ~1.5x numpy's on the b x r x nodes array
        T = bvn_excess(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(rho)).numpy()
    if not grad:
        return T, None, None
    r = np.clip(rho, -_RHO_MAX, _RHO_MAX)
    one_m = 1.0 - r * r
    sq = np.sqrt(one_m)
    d_a = _norm_pdf(a) * (scipy.special.ndtr((b - r * a) / sq) - scipy.special.ndtr(b))
    if same:
        d_a = 2.0 * d_a
    d_rho = np.exp(-(a * a + b * b - 2.0 * r * a * b) / (2.0 * one_m)) / (2.0 * math.pi * sq)
    d_rho = np.where(np.abs(rho) > _RHO_MAX, 0.0, d_rho)
    return T, d_a, d_rho


def _entropy_np(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Binary entropy of ``p`` clamped to ``[eps, 1 - eps]`` and its derivative (zero where clamped)."""
    q = np.clip(p, _EPS, 1.0 - _EPS)
    h = -(q * np.log(q) + (1.0 - q) * np.log1p(-q))
    return h, np.where((p >= _EPS) & (p <= 1.0 - _EPS), np.log1p(-q) - np.log(q), 0.0)


def _binary_entropy(p: Tensor) -> Tensor:
    p = p.clamp(_EPS, 1.0 - _EPS)
    return -(p * torch.log(p) + (1.0 - p) * torch.log1p(-p))


def _probit_var(mu: Tensor, var: Tensor) -> Tensor:
    r"""``Var[Phi(f)]`` for ``f ~ N(mu, var)`` (exact via ``bvn_excess``)."""
    a = mu / torch.sqrt(1.0 + var)
    return bvn_excess(a, a, var / (1.0 + var)).clamp_min(0.0)


# --------------------------------------------------------------------------- analytic acquisitions


class LatentAcquisition(AcquisitionFunction):
    r"""Base for analytic acquisitions on a ``LatentGP``.

    Pending points (``set_X_pending``, ``p x d``) are handled by conditioning the latent
    posterior on pseudo-observations with noise ``pending_noise`` (means unchanged,
    uncertainty reduced), which makes sequential greedy batches spread out.
    """

    def __init__(self, model: Any, latent: LatentGP, pending_noise: float) -> None:
        super().__init__(model=model)
        self.latent = latent
        self.pending_noise = float(pending_noise)
        self.post: LatentGP | ConditionedLatentGP = latent
        self.X_pending = None  # type: ignore[assignment]  # BoTorch types it as a Tensor

    def _pending_A(self, X_pending: Tensor) -> Tensor | None:
        return None

    def _on_posterior_change(self) -> None:
        pass

    #: whether ``from_moments`` is implemented: the value is a function of the latent mean and variance
    moment_form = False

    def from_moments(self, mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Value and its derivatives in the latent mean and variance (numpy, ``b`` each)."""
        raise NotImplementedError

    def numpy_ready(self) -> bool:
        r"""Whether ``value_grad_np`` applies: a closed-form acquisition on a posterior with
        closed-form input gradients (pending points included)."""
        return self.moment_form and self.post.analytic_grad

    def value_grad_np(self, X: np.ndarray, grad: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        r"""Acquisition values at ``X`` (``b x d``) and (``grad``) their input gradients (``b x d``),
        in numpy; only when ``numpy_ready``."""
        post = self.post
        if not grad:
            mu, var = post.mean_var_np(X)
            return self.from_moments(mu, var)[0], None
        mu, var, d_mu, d_var = post.moments_np(X)
        a, a_mu, a_var = self.from_moments(mu, var)
        return a, a_mu[:, None] * d_mu + a_var[:, None] * d_var

    def set_X_pending(self, X_pending: Tensor | None = None) -> None:
        if X_pending is None or X_pending.shape[-2] == 0:
            self.X_pending = None  # type: ignore[assignment]  # BoTorch types it as a Tensor
            self.post = self.latent
        else:
            P = X_pending.detach().to(DTYPE).reshape(-1, X_pending.shape[-1])
            self.X_pending = P.clone()
            self.post = self.latent.condition(P, self._pending_A(P), self.pending_noise)
        self._on_posterior_change()


class LevelSetStraddle(LatentAcquisition):
    r"""Straddle (MCLevelSetEstimation): ``sqrt(beta) * sd(x) - |mean(x) - target|`` in latent space.

    ``beta`` is a squared width (AEPsych default 3.84 = 1.96^2). ``|u|`` is smoothed to
    ``sqrt(u^2 + STRADDLE_SMOOTHING^2)`` so that L-BFGS converges on the level set.
    """

    moment_form = True

    def __init__(self, model: Any, latent: LatentGP, pending_noise: float, target: float, beta: float) -> None:
        super().__init__(model, latent, pending_noise)
        self.target = float(target)
        self.beta_sqrt = math.sqrt(max(float(beta), 0.0))

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        r"""``b x 1 x d`` -> ``b``."""
        mu, var = self.post.mean_variance(X)
        return (self.beta_sqrt * var.sqrt() - ((mu - self.target).pow(2) + STRADDLE_SMOOTHING**2).sqrt()).squeeze(-1)

    def from_moments(self, mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Value and its derivatives in the latent mean and variance (numpy, ``b`` each)."""
        sd = np.sqrt(var)
        dist = np.sqrt((mu - self.target) ** 2 + STRADDLE_SMOOTHING**2)
        return self.beta_sqrt * sd - dist, -(mu - self.target) / dist, 0.5 * self.beta_sqrt / sd


class PosteriorVariance(LatentAcquisition):
    r"""MCPosteriorVariance: ``Var[Phi(f(x))]`` (probit objective, exact) or latent ``Var[f(x)]``."""

    moment_form = True

    def __init__(self, model: Any, latent: LatentGP, pending_noise: float, probability_space: bool) -> None:
        super().__init__(model, latent, pending_noise)
        self.probability_space = bool(probability_space)

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        r"""``b x 1 x d`` -> ``b``."""
        mu, var = self.post.mean_variance(X)
        out = _probit_var(mu, var) if self.probability_space else var
        return out.squeeze(-1)

    def from_moments(self, mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Value and its derivatives in the latent mean and variance (numpy, ``b`` each).

        Probit: ``V = Phi2(a, a; rho) - Phi(a)^2`` with ``a = mu / sqrt(1 + v)``,
        ``rho = v / (1 + v)``; ``dV/da = 2 phi(a) (Phi(a sqrt((1 - rho) / (1 + rho))) - Phi(a))``,
        ``dV/drho = phi2(a, a; rho)``.
        """
        if not self.probability_space:
            return var, np.zeros_like(mu), np.ones_like(var)
        s2 = 1.0 + var
        a = mu / np.sqrt(s2)
        rho = var / s2
        value, d_a, d_rho = bvn_excess_np(a, a, rho, same=True)
        assert d_a is not None and d_rho is not None
        clamped = value <= 0.0
        d_mu = np.where(clamped, 0.0, d_a / np.sqrt(s2))
        d_var = np.where(clamped, 0.0, -d_a * a / (2.0 * s2) + d_rho / s2**2)
        return np.maximum(value, 0.0), d_mu, d_var


class BernoulliBALD(LatentAcquisition):
    r"""BernoulliMCMutualInformation (BALD): ``I(y; f) = H[E Phi(f)] - E[H(Phi(f))]``.

    The expectation uses 32-point Gauss-Hermite quadrature (deterministic).
    """

    moment_form = True

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        r"""``b x 1 x d`` -> ``b``."""
        mu, var = self.post.mean_variance(X)
        p = norm_cdf(mu / torch.sqrt(1.0 + var))
        f = mu.unsqueeze(-1) + torch.sqrt(2.0 * var).unsqueeze(-1) * _GH_X
        logp = torch.special.log_ndtr(f)
        logq = torch.special.log_ndtr(-f)
        h = -(torch.exp(logp) * logp + torch.exp(logq) * logq)
        expected = (h * _GH_W).sum(-1) / math.sqrt(math.pi)
        return (_binary_entropy(p) - expected).squeeze(-1)

    def from_moments(self, mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Value and its derivatives in the latent mean and variance (numpy, ``b`` each).

        With ``dh(Phi(f))/df = phi(f) (log Phi(-f) - log Phi(f))`` for the binary entropy ``h``,
        differentiated through ``a = mu / sqrt(1 + v)`` and the quadrature nodes
        ``f_i = mu + sqrt(2 v) x_i``.
        """
        s2 = 1.0 + var
        a = mu / np.sqrt(s2)
        p = np.clip(scipy.special.ndtr(a), _EPS, 1.0 - _EPS)
        h_p = -(p * np.log(p) + (1.0 - p) * np.log1p(-p))
        inside = (p > _EPS) & (p < 1.0 - _EPS)
        dh_da = np.where(inside, np.log1p(-p) - np.log(p), 0.0) * _norm_pdf(a)
        sd2 = np.sqrt(2.0 * var)
        f = mu[:, None] + sd2[:, None] * _GH_X_NP
        logp = scipy.special.log_ndtr(f)
        logq = scipy.special.log_ndtr(-f)
        h = -(np.exp(logp) * logp + np.exp(logq) * logq)
        dh_df = _norm_pdf(f) * (logq - logp)
        norm = _GH_W_NP / math.sqrt(math.pi)
        value = h_p - h @ norm
        d_mu = dh_da / np.sqrt(s2) - dh_df @ norm
        d_var = -dh_da * a / (2.0 * s2) - (dh_df * _GH_X_NP) @ norm / sd2
        return value, d_mu, d_var


class _LookAhead(LatentAcquisition):
    r"""Shared look-ahead terms on a reference set ``R`` (``r x d``) for level ``target`` (latent).

    For a candidate ``x`` with binary outcome ``y`` (``P(y=1) = Phi(a)``,
    ``a = mu / sqrt(1 + v)``) and reference point ``r`` with level-set probability
    ``p_r = Phi(b_r)``, ``b_r = (mu_r - t) / sd_r``, the joint is exactly
    ``P(y=1, f_r > t) = Phi2(a, b_r; rho_r)`` with ``rho_r = cov(x, r) / (sqrt(1 + v) sd_r)``.
    """

    def __init__(self, model: Any, latent: LatentGP, pending_noise: float, reference: Tensor, target: float) -> None:
        super().__init__(model, latent, pending_noise)
        self.reference = reference.to(DTYPE)
        self.target = float(target)
        self._on_posterior_change()

    def _on_posterior_change(self) -> None:
        with torch.no_grad():
            mu_r, var_r = self.post.mean_variance(self.reference)
        self.sd_r = var_r.sqrt()
        self.b_r = (mu_r - self.target) / self.sd_r
        self.p_r = norm_cdf(self.b_r)
        post = self.post
        self._ref_np = post.reference_np(self.reference.numpy()) if post.analytic_grad else None

    def numpy_ready(self) -> bool:
        return self._ref_np is not None

    def _of_terms(self, a: np.ndarray, P1: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""The acquisition from ``a`` (``b``), ``P(y=1) = Phi(a)`` and ``T`` (``b x r``): value and
        its derivatives in ``a`` and ``T``."""
        raise NotImplementedError

    def value_grad_np(self, X: np.ndarray, grad: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        r"""``LatentAcquisition.value_grad_np`` through the look-ahead terms: ``a = mu / sqrt(1 + v)``,
        ``rho_r = c_r / (sqrt(1 + v) sd_r)``, ``T_r = bvn_excess(a, b_r, rho_r)``."""
        assert self._ref_np is not None
        mu, var, d_mu, d_var, c, d_c = self.post.lookahead_np(X, self._ref_np, grad)
        assert mu is not None and var is not None and c is not None
        sd_r, b_r = self.sd_r.numpy(), self.b_r.numpy()
        s2 = 1.0 + var
        s = np.sqrt(s2)
        a = mu / s
        rho = c / (s[:, None] * sd_r)
        T, T_a, T_rho = bvn_excess_np(a[:, None], b_r, rho, grad=grad)
        value, g_a, g_T = self._of_terms(a, scipy.special.ndtr(a), T)
        if not grad:
            return value, None
        assert d_mu is not None and d_var is not None and d_c is not None and T_a is not None and T_rho is not None
        total_a = g_a + (g_T * T_a).sum(-1)  # d value / d a
        gt_rho = g_T * T_rho  # d value / d rho_r
        v_mu = total_a / s
        v_var = -total_a * a / (2.0 * s2) - (gt_rho * rho).sum(-1) / (2.0 * s2)
        v_c = gt_rho / (s[:, None] * sd_r)
        return value, v_mu[:, None] * d_mu + v_var[:, None] * d_var + np.einsum("br,brd->bd", v_c, d_c)

    def _terms(self, X: Tensor) -> tuple[Tensor, Tensor]:
        r"""``X``: ``b x 1 x d`` -> ``P(y=1)`` (``b x 1``) and ``Phi2 - Phi Phi`` (``b x r``)."""
        mu, var = self.post.mean_variance(X)
        s = torch.sqrt(1.0 + var)
        a = mu / s
        c = self.post.covariance(X, self.reference).squeeze(-2)
        rho = c / (s * self.sd_r)
        T = bvn_excess(a, self.b_r, rho)
        return norm_cdf(a), T


class EAVC(_LookAhead):
    r"""Expected absolute volume change of the level set ``{f > t}`` over the reference set.

    ``E_y |V(y) - V|`` with ``V = mean_r P(f_r > t)``; by the martingale property this is
    ``2 |mean_r (Phi2(a, b_r; rho_r) - Phi(a) Phi(b_r))|``.
    """

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        r"""``b x 1 x d`` -> ``b``."""
        _, T = self._terms(X)
        return 2.0 * T.mean(-1).abs()

    def _of_terms(self, a: np.ndarray, P1: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = T.mean(-1)
        return 2.0 * np.abs(m), np.zeros_like(a), np.broadcast_to((2.0 * np.sign(m) / T.shape[-1])[:, None], T.shape)


class GlobalMI(_LookAhead):
    r"""Global mutual information between the outcome at ``x`` and the level-set indicators.

    ``mean_r [h(p_r) - P1 h(p_r|y=1) - (1 - P1) h(p_r|y=0)]`` with binary entropy ``h``.
    """

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        r"""``b x 1 x d`` -> ``b``."""
        P1, T = self._terms(X)
        P1 = P1.clamp(1e-9, 1.0 - 1e-9)
        p1 = self.p_r + T / P1
        p0 = self.p_r - T / (1.0 - P1)
        mi = _binary_entropy(self.p_r) - P1 * _binary_entropy(p1) - (1.0 - P1) * _binary_entropy(p0)
        return mi.mean(-1)

    def _of_terms(self, a: np.ndarray, P1: np.ndarray, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""With ``h'(p) = log((1 - p) / p)`` (zero where ``p`` is clamped)."""
        inside = (P1 > 1e-9) & (P1 < 1.0 - 1e-9)
        P = np.clip(P1, 1e-9, 1.0 - 1e-9)[:, None]
        p_r = self.p_r.numpy()
        p1 = p_r + T / P
        p0 = p_r - T / (1.0 - P)
        h_r = _entropy_np(p_r)[0]
        (h1, dh1), (h0, dh0) = _entropy_np(p1), _entropy_np(p0)
        r = T.shape[-1]
        value = (h_r - P * h1 - (1.0 - P) * h0).mean(-1)
        g_T = (dh0 - dh1) / r
        g_P = (-h1 + dh1 * T / P + h0 + dh0 * T / (1.0 - P)).mean(-1)
        return value, np.where(inside, g_P * _norm_pdf(a), 0.0), g_T


class PairwisePosteriorVariance(LatentAcquisition):
    r"""PairwiseMCPosteriorVariance: ``Var[Phi((f(x1) - f(x2)) / sqrt 2)]`` of the preference probability.

    Candidates are pairs: ``b x 2 x d`` -> ``b``. Exact (no MC) via ``bvn_excess``.
    Pending pairs condition on their utility differences.
    """

    def _pending_A(self, X_pending: Tensor) -> Tensor | None:
        p = X_pending.shape[-2]
        k = p // 2
        A = torch.zeros(k, p, dtype=DTYPE)
        idx = torch.arange(k)
        A[idx, 2 * idx] = 1.0 / SQRT2
        A[idx, 2 * idx + 1] = -1.0 / SQRT2
        return A

    @t_batch_mode_transform(expected_q=2)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        r"""``b x 2 x d`` -> ``b``."""
        mu, var = self.post.mean_variance(X)
        c12 = self.post.covariance(X[..., :1, :], X[..., 1:, :]).reshape(mu.shape[:-1])
        m = (mu[..., 0] - mu[..., 1]) / SQRT2
        s2 = (0.5 * (var[..., 0] + var[..., 1]) - c12).clamp_min(1e-12)
        return _probit_var(m, s2)


class PredictionObjective(AcquisitionFunction):
    r"""Posterior prediction to optimise for queries: ``b x 1 x d`` -> ``b``.

    ``mode`` "max": prediction, "min": -prediction, "inverse": -(prediction - target)^2,
    where the prediction is ``Phi(mu / sqrt(1 + var))`` (classification in probability
    space) or the latent / response mean.
    """

    def __init__(self, model: Any, latent: LatentGP, mode: str, probability: bool, target: float | None) -> None:
        super().__init__(model=model)
        self.latent = latent
        self.mode = mode
        self.probability = probability
        self.target = 0.0 if target is None else float(target)

    @t_batch_mode_transform(expected_q=1)  # type: ignore[arg-type]  # subclass-typed self
    def forward(self, X: Tensor) -> Tensor:
        mu, var = self.latent.mean_variance(X)
        pred = norm_cdf(mu / torch.sqrt(1.0 + var)) if self.probability else mu
        pred = pred.squeeze(-1)
        if self.mode == "max":
            return pred
        if self.mode == "min":
            return -pred
        return -(pred - self.target).pow(2)


# --------------------------------------------------------------------------- factory


def _probit(samples: Tensor, X: Tensor | None = None) -> Tensor:
    return norm_cdf(samples[..., 0])


def _objective_is_probit(fitted: FittedModel, options: Mapping[str, Any]) -> bool:
    obj = str(options.get("objective", "") or "").strip()
    if obj.lower() in ("", "default"):
        return fitted.kind == CLASSIFICATION
    if "probit" in obj.lower():  # ProbitObjective (and AEPsych's Floor/ProbitObjective variants)
        return fitted.kind != PAIRWISE
    if obj.lower() in ("identitymcobjective", "identity", "none"):
        return False
    raise ValueError(f"unknown objective {obj!r} (use 'ProbitObjective', 'IdentityMCObjective' or '')")


def _reference_set(d: int, n: int, seed: int) -> Tensor:
    eng = torch.quasirandom.SobolEngine(d, scramble=True, seed=int(seed) % (2**31))
    return eng.draw(n, dtype=DTYPE)


def build_acquisition(name: str, fitted: FittedModel, generator: GeneratorSpec, seed: int) -> AcquisitionFunction:
    r"""Instantiate the acquisition function ``name`` (AEPsych name) for ``fitted``.

    Raises:
        ValueError: unknown name or unsupported model.
    """
    name = canonical_acqf(name)
    if not acqf_supports(fitted.kind, name):
        raise ValueError(f"acquisition function {name!r} does not support model {fitted.kind!r}")
    opts = generator.options
    probit = _objective_is_probit(fitted, opts)
    target = opt_float(opts, "target", 0.75)
    assert target is not None
    if fitted.kind == CLASSIFICATION or probit:
        if not 0.0 < target < 1.0:
            raise ValueError(f"target must be a probability in (0, 1), got {target!r}")
        t_latent = norm_icdf(target)
    else:
        t_latent = target
    model, latent, noise = fitted.model, fitted.latent, fitted.pending_noise
    if name == "MCLevelSetEstimation":
        beta = opt_float(opts, "beta", 3.84)
        assert beta is not None
        return LevelSetStraddle(model, latent, noise, t_latent, beta)
    if name == "MCPosteriorVariance":
        return PosteriorVariance(model, latent, noise, probability_space=probit)
    if name == "BernoulliMCMutualInformation":
        return BernoulliBALD(model, latent, noise)
    if name in ("EAVC", "GlobalMI"):
        ref = _reference_set(fitted.dim, max(16, opt_int(opts, "lookahead_points", 500)), seed + 7919)
        cls = EAVC if name == "EAVC" else GlobalMI
        return cls(model, latent, noise, ref, t_latent)
    if name == "PairwiseMCPosteriorVariance":
        return PairwisePosteriorVariance(model, latent, noise)
    # BoTorch MC acquisitions
    assert model is not None
    mc = max(16, opt_int(opts, "mc_samples", 256))
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([mc]), seed=int(seed) % (2**31))
    objective: MCAcquisitionObjective | None = GenericMCObjective(_probit) if probit else None
    if name == "qUpperConfidenceBound":
        beta = opt_float(opts, "beta", 3.84)
        return qUpperConfidenceBound(model, beta=float(beta or 0.0), sampler=sampler, objective=objective)
    cls_ei = qNoisyExpectedImprovement if name == "qNoisyExpectedImprovement" else qLogNoisyExpectedImprovement
    return cls_ei(
        model,
        X_baseline=fitted.train_X,
        sampler=sampler,
        objective=objective,
        prune_baseline=True,
        cache_root=False,
    )


# --------------------------------------------------------------------------- optimisation


def _optimize(
    acqf: AcquisitionFunction,
    d: int,
    q: int,
    fixed: Mapping[int, float],
    restarts: int,
    raw_samples: int,
    maxiter: int,
    timeout: float | None,
    seed: int,
    init_batch_limit: int | None = None,
    ftol: float | None = None,
) -> Tensor:
    r"""Maximise ``acqf`` over ``[0, 1]^d`` with ``fixed`` dims held; returns ``q x d``."""
    if len(fixed) >= d:
        x = torch.tensor([fixed[i] for i in range(d)], dtype=DTYPE)
        return x.expand(q, d).clone()
    bounds = torch.stack([torch.zeros(d, dtype=DTYPE), torch.ones(d, dtype=DTYPE)])
    options: dict[str, Any] = {"maxiter": int(maxiter), "seed": int(seed) % (2**31), "batch_limit": int(restarts)}
    if init_batch_limit is not None:
        options["init_batch_limit"] = int(init_batch_limit)
    if ftol is not None:
        options["factr"] = float(ftol) / 2.220446049250313e-16  # scipy L-BFGS-B: ftol = factr * eps
    cand, _ = optimize_acqf(
        acq_function=acqf,
        bounds=bounds,
        q=q,
        num_restarts=int(restarts),
        raw_samples=int(raw_samples),
        options=options,
        fixed_features=dict(fixed) if fixed else None,
        timeout_sec=timeout,
        retry_on_optimization_warning=False,
    )
    cand = cand.detach().reshape(q, d).clamp(0.0, 1.0)
    for i, v in fixed.items():
        cand[:, i] = v
    return cand


def _optimize_moments(
    acqf: LatentAcquisition,
    d: int,
    fixed: Mapping[int, float],
    restarts: int,
    raw_samples: int,
    maxiter: int,
    timeout: float | None,
    seed: int,
    ftol: float,
) -> Tensor | None:
    r"""Maximise a single-point latent acquisition with numpy values and closed-form gradients.

    The same multi-start scheme as ``optimize_acqf`` (scrambled Sobol raw samples, BoTorch's
    ``initialize_q_batch`` Boltzmann selection of ``restarts`` starts, BoTorch's batched
    L-BFGS-B), but every evaluation is ``acqf.value_grad_np`` (``LatentGP.moments_np`` /
    ``lookahead_np`` and the acquisition's derivatives in the posterior moments): no autograd,
    no tensor round trips, several times faster per point. ``None`` when the acquisition or
    the posterior has no such form (the caller then uses ``optimize_acqf``).
    """
    if not acqf.numpy_ready():
        return None
    free = [i for i in range(d) if i not in fixed]
    base = np.zeros(d)
    for i, v in fixed.items():
        base[i] = v

    def full(x: np.ndarray) -> np.ndarray:
        X = np.tile(base, (x.shape[0], 1))
        X[:, free] = x
        return X

    def value(X: np.ndarray) -> np.ndarray:  # in chunks: look-ahead terms are b x reference set
        return np.concatenate([acqf.value_grad_np(X[i : i + 128], grad=False)[0] for i in range(0, X.shape[0], 128)])

    deadline = None if timeout is None else time.monotonic() + timeout

    def negative(x: np.ndarray, batch_indices: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        if deadline is not None and time.monotonic() > deadline:
            raise _Timeout
        a, grad = acqf.value_grad_np(full(x.reshape(-1, len(free))))
        assert grad is not None
        return -a, -grad[:, free]

    raw = _reference_set(len(free), max(raw_samples, restarts), seed)
    raw_values = torch.as_tensor(value(full(raw.numpy())))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) % (2**31))
        starts, _ = initialize_q_batch(raw.unsqueeze(-2), raw_values, n=min(restarts, raw.shape[0]), eta=2.0)
    x0 = starts.squeeze(-2).numpy().copy()
    try:
        xs, fs, _ = fmin_l_bfgs_b_batched(
            negative,
            x0,
            bounds=[(0.0, 1.0)] * len(free),
            factr=None,
            ftol=ftol,
            maxiter=int(maxiter),
            pass_batch_indices=True,
        )
    except _Timeout:  # max_gen_time: the best raw sample (or start) so far
        xs, fs = x0, -value(full(x0))
    best = np.clip(full(np.asarray(xs)[int(np.argmin(fs))].reshape(1, -1)), 0.0, 1.0)
    return torch.as_tensor(best, dtype=DTYPE)


class _Timeout(Exception):
    pass


def _sobol_points(d: int, n: int, seed: int, fixed: Mapping[int, float]) -> Tensor:
    pts = _reference_set(d, n, seed)
    for i, v in fixed.items():
        pts[:, i] = v
    return pts


def generate_points(
    fitted: FittedModel,
    generator: GeneratorSpec,
    num_points: int,
    fixed: Mapping[int, float],
    seed: int,
) -> np.ndarray:
    r"""Propose points by maximising the acquisition ``generator.acqf``.

    ``num_points > 1`` is sequential greedy: each new point is optimised with the
    previous ones pending. Without any data (prior-only model) scrambled Sobol points
    are returned.

    Returns:
        ``num_points x d`` (pairwise: ``num_points x 2 x d``) float64 array in ``[0, 1]``.
    """
    d = fitted.dim
    pairwise = fitted.kind == PAIRWISE
    q = 2 if pairwise else 1
    if fitted.model is None:
        pts = _sobol_points(d, num_points * q, seed, fixed)
        return pts.reshape(num_points, q, d).squeeze(1).numpy() if not pairwise else pts.reshape(num_points, 2, d).numpy()
    opts = generator.options
    name = canonical_acqf(generator.acqf)
    acqf = build_acquisition(name, fitted, generator, seed)
    restarts = max(1, opt_int(opts, "restarts", 10))
    samps = max(restarts, opt_int(opts, "samps", 1000))
    maxiter = max(1, opt_int(opts, "maxiter", 100))
    max_t = opt_float(opts, "max_gen_time", None)
    timeout = None if max_t is None or max_t <= 0 else max_t / num_points
    # raw samples in one batch; the look-ahead acquisitions hold b x reference-set matrices
    ibl = 100 if name in ("EAVC", "GlobalMI") else samps
    chosen: list[Tensor] = []
    for i in range(num_points):
        if chosen:
            acqf.set_X_pending(torch.cat(chosen, dim=0))
        ftol = opt_float(opts, "ftol", ACQF_FTOL) or ACQF_FTOL
        fast = None
        if isinstance(acqf, LatentAcquisition) and len(fixed) < d:
            fast = _optimize_moments(acqf, d, fixed, restarts, samps, maxiter, timeout, seed + 1009 * i, ftol)
        cand = fast if fast is not None else _optimize(acqf, d, q, fixed, restarts, samps, maxiter, timeout, seed + 1009 * i, ibl, ftol)
        chosen.append(cand)
    pts = torch.stack(chosen, dim=0)  # num_points x q x d
    out = pts if pairwise else pts.squeeze(1)
    return out.numpy().astype(np.float64)


# --------------------------------------------------------------------------- queries


def _uses_probability(fitted: FittedModel, probability_space: bool) -> bool:
    return probability_space and fitted.kind == CLASSIFICATION


def optimize_prediction(
    fitted: FittedModel,
    query_type: str,
    probability_space: bool,
    target: float | None,
    fixed: Mapping[int, float],
    seed: int,
    restarts: int = 10,
    raw_samples: int = 1000,
    timeout: float = 10.0,
) -> np.ndarray:
    r"""``x`` (``1 x d``) maximising / minimising the prediction, or matching ``target``.

    The prediction is the response probability ``Phi(mu / sqrt(1 + var))`` for
    classification with ``probability_space``, else the posterior (latent / response) mean.
    """
    if query_type not in ("max", "min", "inverse"):
        raise ValueError(f"unknown query type {query_type!r}")
    if query_type == "inverse" and target is None:
        raise ValueError("inverse query needs a target y")
    obj = PredictionObjective(fitted.model, fitted.latent, query_type, _uses_probability(fitted, probability_space), target)
    x = _optimize(obj, fitted.dim, 1, fixed, restarts, raw_samples, 200, timeout, seed)
    return x.numpy().astype(np.float64)


def predict(fitted: FittedModel, x: np.ndarray, probability_space: bool) -> dict[str, np.ndarray]:
    r"""Posterior summaries at ``x`` (``m x d``).

    Returns:
        Dict of length-``m`` arrays: ``mean`` / ``variance`` (latent; regression: of the
        mean response), ``probability`` (classification: ``Phi(mu / sqrt(1 + var))``;
        otherwise the mean), ``lower`` / ``upper`` (95%: ``mu -+ 1.96 sd``, mapped through
        ``Phi`` for classification with ``probability_space``).
    """
    X = torch.as_tensor(np.asarray(x, dtype=np.float64), dtype=DTYPE).reshape(-1, fitted.dim)
    mus, vs = [], []
    with torch.no_grad():
        for chunk in X.split(2048):
            mu, var = fitted.latent.mean_variance(chunk)
            mus.append(mu)
            vs.append(var)
    mu = torch.cat(mus) if mus else torch.zeros(0, dtype=DTYPE)
    var = torch.cat(vs) if vs else torch.zeros(0, dtype=DTYPE)
    sd = var.sqrt()
    lo, hi = mu - 1.959963984540054 * sd, mu + 1.959963984540054 * sd
    if fitted.kind == CLASSIFICATION:
        prob = norm_cdf(mu / torch.sqrt(1.0 + var))
        if probability_space:
            lo, hi = norm_cdf(lo), norm_cdf(hi)
    else:
        prob = mu
    return {
        "mean": mu.numpy().copy(),
        "variance": var.numpy().copy(),
        "probability": prob.numpy().copy(),
        "lower": lo.numpy().copy(),
        "upper": hi.numpy().copy(),
    }
