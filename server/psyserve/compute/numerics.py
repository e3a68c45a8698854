"""Shared numeric constants and small formulas of the compute modules: the float type, Gauss-Hermite
tables, the normal density, the Gamma log-prior, Sobol draws, unique rows.

Each lives here once (tests check them against SciPy / GPyTorch); imports only numpy/torch. Must not
hold models, acquisitions or job logic.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

DTYPE = torch.float64
SQRT2 = math.sqrt(2.0)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)

#: Gauss-Hermite nodes and weights (``int e^{-x^2} f(x) dx ~ sum_i w_i f(x_i)``): 20 points for the
#: classification ELBO's expected log-likelihood, 32 for BALD's expected entropy.
GH20_X, GH20_W = np.polynomial.hermite.hermgauss(20)
GH32_X, GH32_W = np.polynomial.hermite.hermgauss(32)
GH20_X_T, GH20_W_T = torch.as_tensor(GH20_X, dtype=DTYPE), torch.as_tensor(GH20_W, dtype=DTYPE)
GH32_X_T, GH32_W_T = torch.as_tensor(GH32_X, dtype=DTYPE), torch.as_tensor(GH32_W, dtype=DTYPE)


def norm_pdf(x: np.ndarray) -> np.ndarray:
    r"""Standard normal density."""
    return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def gamma_log_prior(x: np.ndarray, concentration: float, rate: float) -> tuple[float, np.ndarray]:
    r"""``sum_i log Gamma(x_i; a, b)`` (GPyTorch's ``GammaPrior(a, b).log_prob``, rate form) and its
    gradient ``(a - 1) / x - b``."""
    a, b = concentration, rate
    value = float((a * math.log(b) - math.lgamma(a) + (a - 1.0) * np.log(x) - b * x).sum())
    return value, (a - 1.0) / x - b


def lognormal_log_prior(x: np.ndarray, loc: float, scale: float) -> tuple[float, np.ndarray]:
    r"""``sum_i log LogNormal(x_i; loc, scale)`` (GPyTorch's ``LogNormalPrior(loc, scale).log_prob``) and
    its gradient ``-(1 + (log x - loc) / scale^2) / x``."""
    z = (np.log(x) - loc) / scale
    value = float((-np.log(x) - math.log(scale) - LOG_SQRT_2PI - 0.5 * z * z).sum())
    return value, -(1.0 + z / scale) / x


def sobol_draw(d: int, n: int, seed: int) -> torch.Tensor:
    r"""``n x d`` scrambled Sobol points in the unit cube (deterministic in ``seed``)."""
    eng = torch.quasirandom.SobolEngine(d, scramble=True, seed=int(seed) % (2**31))
    return eng.draw(n, dtype=DTYPE)


def unique_rows(X: Tensor) -> Tensor:
    r"""Unique rows of ``X`` (``n x d``) in order of first occurrence."""
    if X.shape[0] == 0:
        return X
    _, inverse = torch.unique(X, dim=0, return_inverse=True)
    first = torch.full((int(inverse.max()) + 1,), X.shape[0], dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(X.shape[0]), reduce="amin")
    return X[torch.sort(first).values]
