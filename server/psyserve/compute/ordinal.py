"""The ordinal (Likert) response model: a GPyTorch likelihood with learned, ordered cut-points and the
read-outs of a Gaussian latent posterior (probability of each level, expected level).

With latent ``f`` and cut-points ``c_0 = 0 < c_1 < ... < c_{K-2}`` (``K = n_levels``; the first is fixed
for identification, the others are ``c_0`` plus cumulated positive steps):

    P(y = k | f) = Phi(c_k - f) - Phi(c_{k-1} - f),   c_{-1} = -inf, c_{K-1} = +inf

(AEPsych's OrdinalLikelihood, documented form). Must not fit models, optimise or know about jobs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from gpytorch.constraints import Positive
from gpytorch.likelihoods.likelihood import _OneDimensionalLikelihood
from torch import Tensor
from torch.distributions import Categorical

from psyserve.compute.numerics import DTYPE, GH20_W_T, GH20_X_T, SQRT2

_FAR = 1e3

__all__ = ["OrdinalLikelihood", "expected_level", "level_log_prob", "level_probabilities"]


def _log_interval(lo: Tensor, hi: Tensor) -> Tensor:
    r"""``log(Phi(hi) - Phi(lo))`` for ``lo < hi`` (``+-inf`` allowed), stable in both tails.

    In the upper tail the difference is taken as ``Phi(-lo) - Phi(-hi)``; either way
    ``log Phi(b) + log1p(-exp(log Phi(a) - log Phi(b)))`` with ``a < b``.
    """
    upper = (lo + hi) > 0
    a = torch.where(upper, -hi, lo)
    b = torch.where(upper, -lo, hi)
    log_b = torch.special.log_ndtr(b)
    ratio = (torch.special.log_ndtr(a) - log_b).clamp_max(-1e-12)
    return log_b + torch.log(-torch.expm1(ratio))


def level_log_prob(f: Tensor, levels: Tensor, cutpoints: Tensor) -> Tensor:
    r"""``log P(y = level | f)``: ``f`` ``... x n`` (broadcasting with ``levels``, ``n`` long), cutpoints ``K - 1``."""
    # the open ends as far-away finite edges: log Phi(-inf) has an infinite derivative, which times
    # the zero weight it gets would make the gradient NaN; at 1e3 latent units the mass left out is 0
    far = torch.full((1,), _FAR, dtype=f.dtype)
    edges = torch.cat([cutpoints[:1].to(f.dtype) - far, cutpoints.to(f.dtype), cutpoints[-1:].to(f.dtype) + far])  # K + 1
    hi = edges[levels + 1] - f
    lo = edges[levels] - f
    return _log_interval(lo, hi)


def level_probabilities(mean: Tensor, var: Tensor, cutpoints: Tensor) -> Tensor:
    r"""``P(y = k)`` under ``f ~ N(mean, var)``: ``... `` -> ``... x K``.

    Exact: ``P(y <= k) = P(f + e < c_k)`` with ``e ~ N(0, 1)``, i.e. ``Phi((c_k - mean) / sqrt(1 + var))``.
    """
    s = torch.sqrt(1.0 + var).unsqueeze(-1)
    cdf = torch.special.ndtr((cutpoints.to(mean.dtype) - mean.unsqueeze(-1)) / s)  # ... x (K - 1)
    zeros = torch.zeros_like(cdf[..., :1])
    ones = torch.ones_like(cdf[..., :1])
    cum = torch.cat([zeros, cdf, ones], dim=-1)
    return (cum[..., 1:] - cum[..., :-1]).clamp_min(0.0)


def expected_level(mean: Tensor, var: Tensor, cutpoints: Tensor) -> Tensor:
    r"""``E[y] = sum_k P(y > k) = sum_k Phi((mean - c_k) / sqrt(1 + var))`` (levels counted from 0).

    Increasing in ``mean``; at ``var = 0`` it is the expected level of a latent value ``mean``."""
    s = torch.sqrt(1.0 + var).unsqueeze(-1)
    return torch.special.ndtr((mean.unsqueeze(-1) - cutpoints.to(mean.dtype)) / s).sum(-1)


class OrdinalLikelihood(_OneDimensionalLikelihood):
    r"""Ordinal likelihood with ``n_levels`` levels and learned cut-points (``c_0 = 0`` fixed).

    ``raw_cutpoint_deltas`` (``n_levels - 2``, positive through softplus) are the steps between
    consecutive cut-points. The expected log-likelihood of the variational fit is a 20-point
    Gauss-Hermite quadrature of the stable ``log P(y | f)`` above (deterministic; GPyTorch's generic
    quadrature would take the log of a difference of CDFs, which underflows in the tails).
    """

    def __init__(self, n_levels: int) -> None:
        super().__init__()
        if int(n_levels) < 2:
            raise ValueError(f"n_levels must be at least 2, got {n_levels!r}")
        self.n_levels = int(n_levels)
        # start with unit steps: levels one latent unit apart
        init = torch.full((self.n_levels - 2,), math.log(math.expm1(1.0)), dtype=DTYPE)
        self.register_parameter("raw_cutpoint_deltas", torch.nn.Parameter(init))
        self.register_constraint("raw_cutpoint_deltas", Positive())

    @property
    def cutpoints(self) -> Tensor:
        r"""``K - 1`` ordered cut-points, the first 0."""
        deltas = self.raw_cutpoint_deltas_constraint.transform(self.raw_cutpoint_deltas)
        return torch.cat([torch.zeros(1, dtype=deltas.dtype), torch.cumsum(deltas, 0)])

    def forward(self, function_samples: Tensor, *args: Any, **kwargs: Any) -> Categorical:
        c = self.cutpoints.to(function_samples.dtype)
        cdf = torch.special.ndtr(c - function_samples.unsqueeze(-1))
        cum = torch.cat([torch.zeros_like(cdf[..., :1]), cdf, torch.ones_like(cdf[..., :1])], dim=-1)
        return Categorical(probs=(cum[..., 1:] - cum[..., :-1]).clamp_min(1e-300))

    def expected_log_prob(self, observations: Tensor, function_dist: Any, *args: Any, **kwargs: Any) -> Tensor:
        r"""``E_q[log P(y | f)]`` per observation (``n``), by Gauss-Hermite quadrature."""
        mean = function_dist.mean
        sd = function_dist.variance.clamp_min(1e-12).sqrt()
        f = mean.unsqueeze(-1) + SQRT2 * sd.unsqueeze(-1) * GH20_X_T.to(mean.dtype)  # ... x n x 20
        levels = observations.round().long().clamp(0, self.n_levels - 1).unsqueeze(-1)
        logp = level_log_prob(f, levels, self.cutpoints)
        return (logp * GH20_W_T.to(mean.dtype)).sum(-1) / math.sqrt(math.pi)


def level_probabilities_np(mean: np.ndarray, var: np.ndarray, cutpoints: np.ndarray) -> np.ndarray:
    r"""``level_probabilities`` in numpy (``m`` -> ``m x K``)."""
    with torch.no_grad():
        out = level_probabilities(
            torch.as_tensor(mean, dtype=DTYPE), torch.as_tensor(var, dtype=DTYPE), torch.as_tensor(cutpoints, dtype=DTYPE)
        )
    return out.numpy().copy()
