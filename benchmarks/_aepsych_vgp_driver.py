"""AEPsych 0.8 side of benchmarks/variational_gp.py: fit AEPsych's VariationalGPModel (its default Gaussian
likelihood, default factory, GreedyVarianceReduction inducing points, inducing_size 100) on the data
psyserve's run collected, predict on the grid, and try the same INI through AEPsych's SequentialStrategy
(which 0.8 cannot build for this model: the driver reports the error it raises).

Runs under AEPsych's own venv (`/work/venvs/aepsych/bin/python`); reads one JSON object on stdin
({"X", "y", "grid", "config"}) and prints one JSON object; imports only numpy, torch and aepsych.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch


def main() -> None:
    job = json.loads(sys.stdin.read())
    torch.set_num_threads(1)
    torch.manual_seed(int(job.get("seed", 0)))
    from aepsych.config import Config
    from aepsych.models import VariationalGPModel
    from aepsych.strategy import SequentialStrategy

    X = torch.as_tensor(np.asarray(job["X"], dtype=np.float64))
    y = torch.as_tensor(np.asarray(job["y"], dtype=np.float64))
    grid = torch.as_tensor(np.asarray(job["grid"], dtype=np.float64))
    VariationalGPModel(dim=X.shape[1]).fit(X[:5], y[:5])  # first-call set-up, untimed
    t0 = time.perf_counter()
    model = VariationalGPModel(dim=X.shape[1])
    model.fit(X, y)
    fit_seconds = time.perf_counter() - t0
    mean, _ = model.predict(grid)
    strategy_error = ""
    try:
        SequentialStrategy.from_config(Config(config_str=job["config"]))
    except Exception as exc:  # what AEPsych's server would answer to this config
        strategy_error = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"mean": mean.detach().numpy().tolist(), "fit_seconds": fit_seconds, "strategy_error": strategy_error}))


if __name__ == "__main__":
    main()
