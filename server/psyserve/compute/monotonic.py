"""AEPsych's MonotonicProjectionGP: a GP classification posterior projected so that it is monotone
(non-decreasing) along named dimensions.

The projection follows AEPsych's documented heuristic (after Lin & Dunson 2014, on marginal quantiles
instead of samples): at ``x``, for each monotonic dimension ``d`` the base posterior is evaluated on
``s`` points that sweep ``x_d`` from the lower bound (0 in the unit cube) up to, not including, ``x_d``
(the other coordinates as in ``x``), and, psyserve's addition, on the points of a fixed 64-point grid
below ``x_d``; the projected mean is the largest mean over ``x`` and all these
points, the projected lower quantile the largest ``mu - 2 sd``, the upper quantile ``mu(x) + 2 sd(x)``
(at least the projected mean), and the projected standard deviation ``(upper - lower) / 4`` (at least
1e-4); ``min_f_val`` floors the mean and the lower quantile. Cross-covariances keep the base
posterior's correlations with the projected standard deviations.

Owns ``ProjectedLatent`` (the LatentGP interface acquisitions and predictions use) and the option
reader; the fit is GP classification's (models.py). Must not fit models, touch server state, I/O or
know about jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from psyserve.compute.contract import opt_float, opt_int, opt_str
from psyserve.compute.latent import PROBIT_PENDING_NOISE, ConditionedLatentGP, LatentGP
from psyserve.compute.numerics import DTYPE

__all__ = ["FIXED_GRID", "ProjectedLatent", "monotonic_options"]

#: points of a fixed grid along each monotonic dimension added to AEPsych's sweep (psyserve's addition):
#: the sweep's points move with ``x``, so on their own a peak of the base mean between two of them can
#: make the projection decrease by a little (0.017 latent units seen); the fixed points' share of the
#: maximum only grows with ``x_d``
FIXED_GRID = 64


def monotonic_options(options: Mapping[str, Any], dim: int) -> tuple[list[int], int, float | None]:
    r"""``monotonic_dims`` (comma-separated indices; AEPsych's default ``-1``, the last dimension;
    negative indices count from the end), ``monotonic_grid_size`` (default 20) and ``min_f_val``."""
    text = opt_str(options, "monotonic_dims", "-1")
    dims: list[int] = []
    for part in text.replace("[", "").replace("]", "").split(","):
        if not part.strip():
            continue
        try:
            i = int(part.strip())
        except ValueError as exc:
            raise ValueError(f"monotonic_dims must list dimension indices, got {text!r}") from exc
        j = i + dim if i < 0 else i
        if not 0 <= j < dim:
            raise ValueError(f"monotonic dimension {i} is not a dimension of a {dim}-dimensional model")
        if j not in dims:
            dims.append(j)
    if not dims:
        raise ValueError("monotonic_dims names no dimension")
    size = opt_int(options, "monotonic_grid_size", 20)
    if size < 1:
        raise ValueError(f"monotonic_grid_size must be at least 1, got {size}")
    return dims, size, opt_float(options, "min_f_val", None)


class ProjectedLatent:
    r"""``base`` (a fitted ``LatentGP``) projected to be monotone along ``dims`` (see the module)."""

    analytic_grad = False
    scale = 1.0
    offset = 0.0

    def __init__(self, base: LatentGP, dims: list[int], grid_size: int, min_f: float | None) -> None:
        self.base = base
        self.dims = list(dims)
        self.s = int(grid_size)
        self.min_f = min_f
        self.jitter = base.jitter
        self.Z = base.Z  # its width is the input dimension
        self.m = base.m

    def _augmented(self, X: Tensor) -> Tensor:
        r"""``... x q x d`` -> ``... x q x (1 + len(dims) s) x d``: ``x`` and its sweeps."""
        frac = torch.arange(self.s, dtype=DTYPE) / self.s  # 0, 1/s, ..., (s-1)/s of the way to x_d
        fixed = torch.linspace(0.0, 1.0, FIXED_GRID, dtype=DTYPE)
        out = [X.unsqueeze(-2)]
        for d in self.dims:
            sweep = X.unsqueeze(-2).expand(*X.shape[:-1], self.s + FIXED_GRID, X.shape[-1]).clone()
            sweep[..., : self.s, d] = X[..., d].unsqueeze(-1) * frac
            # the fixed grid's points at or below x_d (the others are moved onto x_d itself)
            sweep[..., self.s :, d] = torch.minimum(fixed, X[..., d].unsqueeze(-1))
            out.append(sweep)
        return torch.cat(out, dim=-2)

    def base_mean_variance(self, X: Tensor) -> tuple[Tensor, Tensor]:
        return self.base.mean_variance(X)

    def mean_variance(self, X: Tensor) -> tuple[Tensor, Tensor]:
        A = self._augmented(X)  # ... x q x k x d
        mu, var = self.base.mean_variance(A.reshape(*A.shape[:-3], -1, A.shape[-1]))
        mu = mu.reshape(A.shape[:-1])
        sd = var.reshape(A.shape[:-1]).sqrt()
        mu_proj = mu.max(dim=-1).values
        lb = (mu - 2.0 * sd).max(dim=-1).values
        if self.min_f is not None:
            mu_proj = mu_proj.clamp_min(self.min_f)
            lb = lb.clamp_min(self.min_f)
        ub = torch.maximum(mu[..., 0] + 2.0 * sd[..., 0], mu_proj)
        sd_proj = ((ub - lb) / 4.0).clamp_min(1e-4)
        return mu_proj, sd_proj.pow(2)

    def mean(self, X: Tensor) -> Tensor:
        return self.mean_variance(X)[0]

    def variance(self, X: Tensor) -> Tensor:
        return self.mean_variance(X)[1]

    def covariance(self, X1: Tensor, X2: Tensor) -> Tensor:
        C = self.base.covariance(X1, X2)
        _, v1 = self.base.mean_variance(X1)
        _, v2 = self.base.mean_variance(X2)
        _, p1 = self.mean_variance(X1)
        _, p2 = self.mean_variance(X2)
        corr = C / (v1.sqrt().unsqueeze(-1) * v2.sqrt().unsqueeze(-2))
        return corr * (p1.sqrt().unsqueeze(-1) * p2.sqrt().unsqueeze(-2))

    def condition(self, P: Tensor, A: Tensor | None = None, noise: float | Tensor = PROBIT_PENDING_NOISE) -> ConditionedLatentGP:
        return ConditionedLatentGP(self, P, A, noise)  # type: ignore[arg-type]  # duck-typed LatentGP
