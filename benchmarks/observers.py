"""Simulated observers (psychophysics test functions) and accuracy metrics for tests and benchmarks, in numpy.
Works on RAW parameter values; must not touch torch, the models, the server or any I/O. Not part of the
server package: benchmarks import it from their own folder, tests through tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import ndtr, ndtri

__all__ = [
    "brier",
    "hartmann6",
    "hartmann6_binary",
    "mean_abs_prob_error",
    "novel_detection",
    "novel_discrimination",
    "novel_threshold",
    "probability",
    "sample",
    "threshold_contour_error",
]

_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array(
    [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
        [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
        [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
        [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
    ]
)


def _as2d(x: np.ndarray, d: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.shape[-1] != d:
        raise ValueError(f"expected n x {d} input, got {x.shape}")
    return x


def _theta(c: np.ndarray) -> np.ndarray:
    r"""Threshold-width function of the novel problems: ``2 (0.05 + 0.4 (-1 + 0.2 c)^2 c^2)``."""
    return 2.0 * (0.05 + 0.4 * (-1.0 + 0.2 * c) ** 2 * c**2)


def novel_detection(x: np.ndarray) -> np.ndarray:
    r"""Latent ``f`` of the novel detection problem; ``x``: ``n x 2`` on ``[-1, 1]^2`` (c, a) -> ``n``."""
    x = _as2d(x, 2)
    c, a = x[:, 0], x[:, 1]
    return 4.0 * (1.0 + a) / _theta(c) - 4.0


def novel_discrimination(x: np.ndarray) -> np.ndarray:
    r"""Latent ``f`` of the novel discrimination problem; ``x``: ``n x 2`` on ``[-1, 1]^2`` -> ``n``."""
    x = _as2d(x, 2)
    c, a = x[:, 0], x[:, 1]
    return 2.0 * (1.0 + a) / _theta(c)


def hartmann6(x: np.ndarray) -> np.ndarray:
    r"""Standard (negative-valued) Hartmann-6 on the unit cube, ``n x 6`` -> ``n``; min ~ -3.32237."""
    x = _as2d(x, 6)
    inner = ((x[:, None, :] - _H6_P[None]) ** 2 * _H6_A[None]).sum(-1)
    return -(np.exp(-inner) * _H6_ALPHA).sum(-1)


def hartmann6_binary(x: np.ndarray) -> np.ndarray:
    r"""Latent ``f = 3 h6(x) - 2`` with ``h6 = -hartmann6`` (positive), ``x``: ``n x 6`` unit cube -> ``n``."""
    return 3.0 * (-hartmann6(x)) - 2.0


def probability(f: np.ndarray) -> np.ndarray:
    r"""Response probability ``Phi(f)``."""
    return ndtr(np.asarray(f, dtype=np.float64))


def sample(f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    r"""Bernoulli(``Phi(f)``) outcomes as float 0/1, same shape as ``f``."""
    p = probability(f)
    return (rng.random(p.shape) < p).astype(np.float64)


def novel_threshold(c: np.ndarray, target: float = 0.75, problem: str = "novel_detection") -> np.ndarray:
    r"""True ``a`` at which ``Phi(f(c, a)) = target``, clipped to ``[-1, 1]``; ``c``: ``n`` -> ``n``."""
    z = float(ndtri(target))
    th = _theta(np.asarray(c, dtype=np.float64))
    if problem == "novel_detection":
        a = (z + 4.0) * th / 4.0 - 1.0
    elif problem == "novel_discrimination":
        a = z * th / 2.0 - 1.0
    else:
        raise ValueError(f"unknown problem {problem!r}")
    return np.clip(a, -1.0, 1.0)


def _crossing(p: np.ndarray, a: np.ndarray, target: float) -> float:
    r"""First upward crossing of ``target`` along increasing ``a`` (linear interpolation)."""
    above = p >= target
    if above[0]:
        return float(a[0])
    idx = np.flatnonzero(above)
    if idx.size == 0:
        return float(a[-1])
    j = int(idx[0])
    p0, p1 = p[j - 1], p[j]
    w = (target - p0) / (p1 - p0) if p1 != p0 else 0.0
    return float(a[j - 1] + w * (a[j] - a[j - 1]))


def threshold_contour_error(
    p_hat: Callable[[np.ndarray], np.ndarray],
    problem: str = "novel_detection",
    target: float = 0.75,
    n_c: int = 50,
    n_a: int = 201,
) -> float:
    r"""Mean absolute error (units of ``a``) of the estimated ``target`` threshold contour.

    Args:
        p_hat: maps RAW points ``n x 2`` (c, a) on ``[-1, 1]^2`` to probabilities ``n``.
        problem: "novel_detection" or "novel_discrimination".
        target: response probability defining the threshold.
        n_c: number of ``c`` values on ``[-1, 1]``.
        n_a: grid resolution along ``a`` for locating the estimated crossing.

    Returns:
        ``mean_c |a_true(c) - a_hat(c)|``; ``a_hat`` is the first crossing along ``a``
        (``-1`` if already above target, ``1`` if never reached).
    """
    cs = np.linspace(-1.0, 1.0, n_c)
    as_ = np.linspace(-1.0, 1.0, n_a)
    cc, aa = np.meshgrid(cs, as_, indexing="ij")
    grid = np.stack([cc.ravel(), aa.ravel()], axis=-1)
    p = np.asarray(p_hat(grid), dtype=np.float64).reshape(n_c, n_a)
    est = np.array([_crossing(p[i], as_, target) for i in range(n_c)])
    true = novel_threshold(cs, target, problem)
    return float(np.mean(np.abs(true - est)))


def mean_abs_prob_error(p_hat: np.ndarray, p_true: np.ndarray) -> float:
    r"""``mean |p_hat - p_true|`` over given points (arrays of equal length ``n``)."""
    return float(np.mean(np.abs(np.asarray(p_hat, dtype=np.float64) - np.asarray(p_true, dtype=np.float64))))


def brier(p_hat: np.ndarray, y: np.ndarray) -> float:
    r"""Brier score ``mean (p_hat - y)^2`` of probabilities against 0/1 outcomes (or true probabilities)."""
    return float(np.mean((np.asarray(p_hat, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))
