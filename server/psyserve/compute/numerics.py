"""Shared numeric constants of the compute modules: the float type, quadrature tables, small densities.

Each lives here once; imports only numpy/torch. Must not hold models, acquisitions or job logic.
"""

from __future__ import annotations

import math

import torch

DTYPE = torch.float64
SQRT2 = math.sqrt(2.0)


def sobol_draw(d: int, n: int, seed: int) -> torch.Tensor:
    r"""``n x d`` scrambled Sobol points in the unit cube (deterministic in ``seed``)."""
    eng = torch.quasirandom.SobolEngine(d, scramble=True, seed=int(seed) % (2**31))
    return eng.draw(n, dtype=DTYPE)
