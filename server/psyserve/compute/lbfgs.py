"""The one L-BFGS-B driver of the hand-differentiated fits (packed ELBO, pairwise Laplace).

Owns the SciPy call, its tolerance and time limit; must not know which objective it minimises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special

log = logging.getLogger(__name__)

#: L-BFGS relative-decrease tolerance of model fits (scipy's default is 2.2e-9). The losses are
#: per-observation (ELBO / n, MLL / n); a fit that stops at 1e-6 gives the same predictions to
#: well within their posterior uncertainty, with 3-4x fewer evaluations.
FIT_FTOL = 1e-6
#: The pairwise (Laplace) fit's tolerance: scipy's default, as BoTorch's and AEPsych's fits use. At
#: 1e-6 some pairwise fits stop short of the optimum: refitted on the same trials (quality.py's 200
#: traced pairwise runs, benchmarks/pair_crossfit.py), 2.2e-9 scores MAE -0.0029 +- 0.0007 and Brier
#: -0.0007 +- 0.0002 lower, for 0.19 s per fresh fit against 0.15 s.
PAIRWISE_FIT_FTOL = 2.220446049250313e-09


def minimize_packed(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    maxiter: int,
    ftol: float,
    timeout: float | None,
    what: str,
) -> np.ndarray | None:
    r"""SciPy L-BFGS-B on a packed objective returning ``(loss, gradient)``, stopped at ``timeout``
    seconds; the minimiser, or ``None`` when it fails or ends somewhere non-finite."""
    deadline = None if timeout is None or timeout <= 0 else time.monotonic() + timeout

    def callback(intermediate_result: Any) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise StopIteration

    try:
        with np.errstate(all="ignore"):
            result = scipy.optimize.minimize(
                objective,
                np.clip(x0, lo, hi),
                jac=True,
                method="L-BFGS-B",
                bounds=scipy.optimize.Bounds(lo, hi),
                options={"maxiter": int(maxiter), "ftol": float(ftol)},
                callback=callback,
            )
    except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
        log.debug("%s fit failed: %s: %s", what, type(exc).__name__, exc)
        return None
    if not (np.all(np.isfinite(result.x)) and np.isfinite(result.fun)):
        return None
    return np.asarray(result.x)
