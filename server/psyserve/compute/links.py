"""Response links of the binary (classification) model: probit, logit and Gumbel CDFs with an n-AFC floor.

The response probability of a latent value ``f`` is ``p(f) = floor + (1 - floor) F(f)``, ``F`` the
standard normal, logistic or (left-skewed, log-Weibull) Gumbel CDF ``1 - exp(-exp(f))``; ``floor`` is the
guess rate of an n-AFC task (AEPsych's Floor{Probit,Logit,Gumbel}Objective). Owns the log-likelihood
(numpy, with its derivative, for the packed ELBO; torch for the autograd fallback), the expected
probability and its variance under a Gaussian latent, and the inverse link (latent level of a target
probability). Must not build models, optimise or know about acquisitions or jobs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.special
import scipy.stats
import torch
from gpytorch.likelihoods import _OneDimensionalLikelihood
from torch import Tensor

from psyserve.compute.contract import LINKS, opt_float, opt_str
from psyserve.compute.numerics import GH32_W_T, GH32_X_T, LOG_SQRT_2PI

__all__ = ["PROBIT", "Link", "LinkBernoulliLikelihood", "link_of"]

_GH_X, _GH_W = GH32_X_T, GH32_W_T / math.sqrt(math.pi)  # numerics' 32-point table, weights normalised to sum 1
#: latent values are clipped here before ``exp`` in the Gumbel link (``exp(40)`` ~ 2e17: F = 1 exactly)
_GUMBEL_CLIP = 40.0


@dataclass(frozen=True)
class Link:
    r"""``p(f) = floor + (1 - floor) F(f)`` with ``F`` named by ``kind`` ("probit", "logit", "gumbel")."""

    kind: str = "probit"
    floor: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LINKS:
            raise ValueError(f"unknown link {self.kind!r} (known: {sorted(LINKS)})")
        if not 0.0 <= self.floor < 1.0:
            raise ValueError(f"floor must lie in [0, 1), got {self.floor!r}")

    @property
    def is_plain_probit(self) -> bool:
        r"""The model's original likelihood (``Phi``, no floor): the closed forms elsewhere apply."""
        return self.kind == "probit" and self.floor == 0.0

    # ------------------------------------------------------------ numpy (the packed ELBO)
    def _log_cdf_np(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""``log F(f)`` and ``d log F / df``."""
        if self.kind == "probit":
            lc = scipy.special.log_ndtr(f)
            return lc, np.exp(-0.5 * f * f - LOG_SQRT_2PI - lc)
        if self.kind == "logit":
            return -np.logaddexp(0.0, -f), scipy.special.expit(-f)
        e = np.exp(np.minimum(f, _GUMBEL_CLIP))
        lc = np.log(-np.expm1(-e))
        with np.errstate(over="ignore"):
            d = np.where(e > 700.0, 0.0, e / np.expm1(np.minimum(e, 700.0)))
        return lc, d

    def _log_sf_np(self, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""``log(1 - F(f))`` and its derivative."""
        if self.kind == "probit":
            ls = scipy.special.log_ndtr(-f)
            return ls, -np.exp(-0.5 * f * f - LOG_SQRT_2PI - ls)
        if self.kind == "logit":
            return -np.logaddexp(0.0, f), -scipy.special.expit(f)
        e = np.exp(np.minimum(f, _GUMBEL_CLIP))
        return -e, np.where(f > _GUMBEL_CLIP, 0.0, -e)

    def loglik_np(self, f: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""``log p(y | f)`` and its derivative in ``f``; ``y`` (0/1) broadcasts against ``f``."""
        lc, dlc = self._log_cdf_np(f)
        ls, dls = self._log_sf_np(f)
        if self.floor > 0.0:
            lf, l1f = math.log(self.floor), math.log1p(-self.floor)
            lp = np.logaddexp(lf, l1f + lc)
            dlp = np.exp(l1f + lc - lp) * dlc
            ls = ls + l1f
        else:
            lp, dlp = lc, dlc
        one = y > 0.5
        return np.where(one, lp, ls), np.where(one, dlp, dls)

    # ------------------------------------------------------------ torch
    def cdf(self, f: Tensor) -> Tensor:
        r"""``F(f)``."""
        if self.kind == "probit":
            return torch.special.ndtr(f)
        if self.kind == "logit":
            return torch.sigmoid(f)
        return -torch.expm1(-torch.exp(f.clamp_max(_GUMBEL_CLIP)))

    def prob(self, f: Tensor) -> Tensor:
        r"""``p(f) = floor + (1 - floor) F(f)``."""
        return self.floor + (1.0 - self.floor) * self.cdf(f)

    def loglik(self, f: Tensor, y: Tensor) -> Tensor:
        r"""``log p(y | f)`` (torch, differentiable); ``y`` (0/1) broadcasts against ``f``."""
        if self.kind == "probit":
            lc, ls = torch.special.log_ndtr(f), torch.special.log_ndtr(-f)
        elif self.kind == "logit":
            lc, ls = torch.nn.functional.logsigmoid(f), torch.nn.functional.logsigmoid(-f)
        else:
            e = torch.exp(f.clamp_max(_GUMBEL_CLIP))
            lc, ls = torch.log(-torch.expm1(-e)), -e
        if self.floor > 0.0:
            lc = torch.logaddexp(torch.full_like(lc, math.log(self.floor)), math.log1p(-self.floor) + lc)
            ls = ls + math.log1p(-self.floor)
        return torch.where(y > 0.5, lc, ls)

    def expected_prob(self, mu: Tensor, var: Tensor) -> Tensor:
        r"""``E[p(f)]`` for ``f ~ N(mu, var)``: closed form for probit (``Phi(mu / sqrt(1 + var))``),
        32-point Gauss-Hermite quadrature otherwise."""
        if self.kind == "probit":
            q = torch.special.ndtr(mu / torch.sqrt(1.0 + var))
        else:
            f = mu.unsqueeze(-1) + torch.sqrt(2.0 * var.clamp_min(0.0)).unsqueeze(-1) * _GH_X
            q = (self.cdf(f) * _GH_W).sum(-1)
        return self.floor + (1.0 - self.floor) * q

    def prob_variance(self, mu: Tensor, var: Tensor) -> Tensor:
        r"""``Var[p(f)] = (1 - floor)^2 (E[F^2] - E[F]^2)`` for ``f ~ N(mu, var)`` (Gauss-Hermite)."""
        f = mu.unsqueeze(-1) + torch.sqrt(2.0 * var.clamp_min(0.0)).unsqueeze(-1) * _GH_X
        c = self.cdf(f)
        m1 = (c * _GH_W).sum(-1)
        m2 = (c * c * _GH_W).sum(-1)
        return (1.0 - self.floor) ** 2 * (m2 - m1 * m1).clamp_min(0.0)

    def latent_level(self, p: float) -> float:
        r"""The latent ``f`` with ``p(f) = p``; ``p`` must lie in ``(floor, 1)``."""
        if not self.floor < p < 1.0:
            raise ValueError(f"target must be a probability in ({self.floor:g}, 1) for a floor of {self.floor:g}, got {p!r}")
        u = (p - self.floor) / (1.0 - self.floor)
        if self.kind == "probit":
            return float(scipy.stats.norm.ppf(u))
        if self.kind == "logit":
            return float(scipy.special.logit(u))
        return float(math.log(-math.log1p(-u)))


PROBIT = Link()


def link_of(options: Mapping[str, Any]) -> Link:
    r"""The link named by model options ``link`` (default "probit") and ``floor`` (default 0)."""
    return Link(opt_str(options, "link", "probit").lower(), float(opt_float(options, "floor", 0.0) or 0.0))


class LinkBernoulliLikelihood(_OneDimensionalLikelihood):
    r"""GPyTorch Bernoulli likelihood with ``p(f)`` of a ``Link`` (BoTorch's fitting path for
    non-default links; GPyTorch's quadrature takes the expectation)."""

    def __init__(self, link: Link) -> None:
        super().__init__()
        self.link = link

    def forward(self, function_samples: Tensor, *args: Any, **kwargs: Any) -> torch.distributions.Bernoulli:
        return torch.distributions.Bernoulli(probs=self.link.prob(function_samples).clamp(1e-12, 1.0 - 1e-12))
