"""Queries of a fitted model: predictions with intervals, and the max / min / inverse of the prediction.

Must not build models or know about jobs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from psyserve.compute.acquisition import PredictionObjective
from psyserve.compute.contract import BINARY_MODELS
from psyserve.compute.models import FittedModel
from psyserve.compute.numerics import DTYPE
from psyserve.compute.optimize import _optimize
from psyserve.compute.ordinal import expected_level, level_probabilities
from psyserve.compute.semip import ProductLatent


def _uses_probability(fitted: FittedModel, probability_space: bool) -> bool:
    return probability_space and (fitted.family in BINARY_MODELS or fitted.cutpoints is not None)


def _semip_inverse(latent: ProductLatent, fixed: Mapping[int, float], target: float) -> np.ndarray | None:
    r"""A semi-parametric model's inverse query at a fully given context: the intensity whose response
    probability (``ProductLatent.probability``) is ``target``, by a 257-point scan along the intensity
    and bisection in the bracketing cell; ``None`` unless every context dimension is fixed and the
    intensity is not."""
    if latent.stim_dim in fixed or any(i not in fixed for i in latent.ctx):
        return None
    base = np.array([fixed.get(i, 0.0) for i in range(latent.dim)], dtype=np.float64)
    grid = np.tile(base, (257, 1))
    grid[:, latent.stim_dim] = np.linspace(0.0, 1.0, 257)

    def prob(X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return latent.probability(torch.as_tensor(X, dtype=DTYPE).unsqueeze(-2)).squeeze(-1).numpy()

    p = prob(grid) - target
    j = int(np.argmin(np.abs(p)))
    cross = np.nonzero(np.sign(p[:-1]) != np.sign(p[1:]))[0]
    if cross.size:  # the crossing nearest the best grid point, refined by bisection
        i = int(cross[np.argmin(np.abs(cross - j))])
        lo, hi = grid[i].copy(), grid[i + 1].copy()
        plo = p[i]
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            pm = float(prob(mid[None])[0]) - target
            if np.sign(pm) == np.sign(plo):
                lo, plo = mid, pm
            else:
                hi = mid
        return (0.5 * (lo + hi)).reshape(1, -1)
    return grid[j : j + 1].copy()


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
    if isinstance(fitted.latent, ProductLatent) and query_type == "inverse" and probability_space and target is not None:
        found = _semip_inverse(fitted.latent, fixed, float(target))
        if found is not None:
            return found
    obj = PredictionObjective(
        fitted.model, fitted.latent, query_type, _uses_probability(fitted, probability_space), target, fitted.link, fitted.cutpoints
    )
    x = _optimize(obj, fitted.dim, 1, fixed, restarts, raw_samples, 200, timeout, seed)
    return x.numpy().astype(np.float64)


def predict(fitted: FittedModel, x: np.ndarray, probability_space: bool) -> dict[str, np.ndarray]:
    r"""Posterior summaries at ``x`` (``m x d``).

    Returns:
        Dict of length-``m`` arrays: ``mean`` / ``variance`` (latent; regression: of the
        mean response), ``probability`` (classification: ``Phi(mu / sqrt(1 + var))``;
        otherwise the mean; with a floor objective's link ``E[floor + (1 - floor) F(f)]``; ordinal: the
        expected level), ``lower`` / ``upper`` (95%: ``mu -+ 1.96 sd``, mapped through
        ``Phi`` for classification with ``probability_space``, through the expected level of ``f`` for
        ordinal); ordinal models add ``level_probabilities`` (``m x n_levels``).
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
    levels = None
    if fitted.cutpoints is not None:  # ordinal: level probabilities; "probability" is the expected level
        levels = level_probabilities(mu, var, fitted.cutpoints).numpy().copy()
        prob = expected_level(mu, var, fitted.cutpoints)
        if probability_space:  # the latent interval through the (increasing) expected level of f
            zero = torch.zeros_like(lo)
            lo, hi = expected_level(lo, zero, fitted.cutpoints), expected_level(hi, zero, fitted.cutpoints)
    elif isinstance(fitted.latent, ProductLatent):
        with torch.no_grad():
            prob = torch.cat([fitted.latent.probability(c.unsqueeze(-2)).squeeze(-1) for c in X.split(2048)]) if X.shape[0] else mu
        if probability_space:
            lo, hi = fitted.link.prob(lo), fitted.link.prob(hi)
    elif fitted.family in BINARY_MODELS:
        prob = fitted.link.expected_prob(mu, var)
        if probability_space:
            lo, hi = fitted.link.prob(lo), fitted.link.prob(hi)
    else:
        prob = mu
    out = {
        "mean": mu.numpy().copy(),
        "variance": var.numpy().copy(),
        "probability": prob.numpy().copy(),
        "lower": lo.numpy().copy(),
        "upper": hi.numpy().copy(),
    }
    if levels is not None:
        out["level_probabilities"] = levels
    return out
