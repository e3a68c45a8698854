"""AEPsych 0.8 side of benchmarks/pair_crossfit.py: fit AEPsych's PairwiseProbitModel (its defaults:
the default mean/covariance factory, Normalize to the bounds, PairwiseLaplaceMarginalLogLikelihood,
fit_gpytorch_mll from the initial hyperparameters, as its server does at every fit) on each set of
trials given, and return its posterior mean of the utility on the grid.

Runs under AEPsych's own venv (`/work/venvs/aepsych/bin/python`); reads one JSON object on stdin
({"grid", "lb", "ub", "runs": [{"key", "X" (n x 2 x d), "outcome" (the wire's: 1 = the second preferred)}]})
and prints one JSON object {key: posterior mean on the grid}; imports only numpy, torch and aepsych.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings

import numpy as np
import torch


def main() -> None:
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(1)
    logging.disable(logging.INFO)
    warnings.simplefilter("ignore")
    from aepsych.models import PairwiseProbitModel

    grid = torch.as_tensor(np.asarray(job["grid"], dtype=np.float64))
    lb = torch.as_tensor(job["lb"], dtype=torch.float64)
    ub = torch.as_tensor(job["ub"], dtype=torch.float64)
    out: dict[str, list[float]] = {}
    for run in job["runs"]:
        torch.manual_seed(0)
        np.random.seed(0)  # BoTorch's PairwiseGP starts its mode search (scipy fsolve) from a random guess
        # AEPsych's layout: n x d x 2; its outcome 1 = the second stimulus preferred, as on the wire
        X = torch.as_tensor(np.asarray(run["X"], dtype=np.float64)).transpose(1, 2)
        y = torch.as_tensor(np.asarray(run["outcome"], dtype=np.float64))
        model = PairwiseProbitModel(lb=lb, ub=ub)
        model.fit(X, y)
        with torch.no_grad():
            out[run["key"]] = model.posterior(grid).mean.reshape(-1).tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
