"""Inducing-point allocators of the variational classification model, by AEPsych 0.8's names.

Owns where the inducing points of GPClassificationModel go: psyserve's default (every unique trial
point while there are at most ``inducing_size``, else a deterministic farthest-point subset), and
AEPsych's allocators ``GreedyVarianceReduction`` (BoTorch's), ``KMeansAllocator`` (k-means++ on the
unique trial points, SciPy's), ``SobolAllocator`` (a scrambled Sobol sequence over the unit cube),
``FixedAllocator`` (the points the config names) and ``FixedPlusAllocator`` (another allocator's
points plus the named ones). Every allocator is deterministic in its inputs (a refit after a
restart gives the same points). Works in the unit cube; must not fit models, parse configs or know
about jobs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from botorch.models.utils.inducing_point_allocators import GreedyVarianceReduction
from gpytorch.kernels import Kernel
from scipy.cluster.vq import kmeans2
from torch import Tensor

from psyserve.compute.contract import INDUCING_ALLOCATORS, INDUCING_MAIN_ALLOCATORS
from psyserve.compute.numerics import DTYPE, sobol_draw, unique_rows

__all__ = ["ALLOCATORS", "DEFAULT", "allocate_inducing_points", "farthest_point_subset"]

#: psyserve's own allocator (no `inducing_point_method` in the config)
DEFAULT = "default"
ALLOCATORS = INDUCING_ALLOCATORS
MAIN_ALLOCATORS = INDUCING_MAIN_ALLOCATORS
_SEED = 0  # the allocators that draw (k-means++ start, Sobol scramble) draw from a fixed seed


def farthest_point_subset(X: Tensor, k: int) -> Tensor:
    r"""psyserve's default: deterministic inducing points from training inputs.

    ``min(k, n_unique) x d``: all unique rows in order of first occurrence if there are at most
    ``k`` of them (so that one more trial appends one inducing point, which is what makes the
    variational warm start exact), else a greedy farthest-point (max-min distance) subset started
    at the row nearest the centroid.
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


def fixed_points(options: Mapping[str, Any], d: int) -> Tensor:
    r"""The config's fixed inducing points (``inducing_points``: a JSON list of unit-cube rows)."""
    raw = options.get("inducing_points")
    if raw is None:
        raise ValueError("FixedAllocator / FixedPlusAllocator need inducing_points")
    pts = torch.as_tensor(json.loads(str(raw)), dtype=DTYPE).reshape(-1, d)
    if pts.shape[0] == 0:
        raise ValueError("inducing_points is empty")
    return pts


def _kmeans(U: Tensor, k: int) -> Tensor:
    if U.shape[0] <= k:
        return U
    centroids, _ = kmeans2(U.numpy(), k, minit="++", seed=np.random.default_rng(_SEED))
    return torch.as_tensor(centroids, dtype=DTYPE).clamp(0.0, 1.0)


def _greedy_variance(U: Tensor, k: int, covar_module: Kernel) -> Tensor:
    if U.shape[0] <= 1:
        return U
    with torch.no_grad():
        pts = GreedyVarianceReduction().allocate_inducing_points(U, covar_module, min(k, U.shape[0]), torch.Size([]))
    return pts.detach().to(DTYPE)


def allocate_inducing_points(
    method: str, X: Tensor, k: int, covar_module: Kernel, options: Mapping[str, Any] | None = None
) -> Tensor:
    r"""Inducing points (``m x d``, in the unit cube, ``1 <= m``) for training inputs ``X`` (``n x d``).

    Args:
        method: ``"default"`` or one of ``ALLOCATORS``.
        X: training inputs in the unit cube (duplicates allowed; may be empty).
        k: ``inducing_size``: how many points the data-driven allocators choose at most, and how
            many Sobol points are drawn.
        covar_module: the kernel at its current hyper-parameters (GreedyVarianceReduction).
        options: the model options (``inducing_points`` for the fixed allocators,
            ``inducing_main_allocator`` for FixedPlusAllocator).

    With no data the data-driven allocators give the centre of the cube (a prior-only model).
    """
    options = options or {}
    d = X.shape[-1]
    if method == "FixedAllocator":
        return fixed_points(options, d)
    if method == "FixedPlusAllocator":
        main = str(options.get("inducing_main_allocator", "GreedyVarianceReduction"))
        if main not in MAIN_ALLOCATORS:
            raise ValueError(f"FixedPlusAllocator's main_allocator must be one of {list(MAIN_ALLOCATORS)}, got {main!r}")
        base = allocate_inducing_points(main, X, k, covar_module, options)
        return unique_rows(torch.cat([base, fixed_points(options, d)], dim=0))
    if method == "SobolAllocator":
        return sobol_draw(d, k, _SEED)
    U = unique_rows(X.detach().to(DTYPE))
    if U.shape[0] == 0:
        return torch.full((1, d), 0.5, dtype=DTYPE)
    if method == DEFAULT:
        return farthest_point_subset(U, k)
    if method == "KMeansAllocator":
        return _kmeans(U, k)
    if method == "GreedyVarianceReduction":
        return _greedy_variance(U, k, covar_module)
    raise ValueError(f"unknown inducing_point_method {method!r} (known: {list(ALLOCATORS)})")
