"""Normal and bivariate-normal probabilities: Phi, Phi2 - Phi Phi (Genz's Gauss-Legendre rule) with
its exact derivatives, probit variance and binary entropy, in torch and numpy.

Pure functions of arrays; must not know about models, acquisitions or jobs.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special
import torch
from torch import Tensor

from psyserve.compute.numerics import DTYPE, SQRT2, norm_pdf

#: Gauss-Legendre rules for ``bvn_excess`` and the ``|rho|`` up to which each is used (Genz 2004)
_GL = {n: tuple(torch.as_tensor(v, dtype=DTYPE) for v in np.polynomial.legendre.leggauss(n)) for n in (6, 12, 20)}
_GL_BANDS = ((0.3, 6), (0.75, 12), (math.inf, 20))
_EPS = 1e-12
_RHO_MAX = 0.9995


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
    d_a = norm_pdf(a) * (scipy.special.ndtr((b - r * a) / sq) - scipy.special.ndtr(b))
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
