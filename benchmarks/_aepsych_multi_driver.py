"""AEPsych 0.8 side of benchmarks/ordinal_multi.py: run one case in-process (SequentialStrategy, the same
config, observer and observer seed as psyserve's side) and print JSON (predictions on the grid, timings).

Runs under AEPsych's own venv (`/work/venvs/aepsych/bin/python`); imports only numpy, scipy, torch,
aepsych and multi_observers.py. In-process, so its per-trial cost has no RPC in it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import multi_observers as obs


def main() -> None:
    case, seed = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    from aepsych.config import Config
    from aepsych.strategy import SequentialStrategy

    total = obs.INIT[case] + obs.MODEL_TRIALS[case]
    asks = obs.MODEL_TRIALS[case] if case == "ordinal" else obs.MODEL_TRIALS[case] // 2
    strat = SequentialStrategy.from_config(Config(config_str=obs.config(case, seed, asks)))
    rng = np.random.default_rng(10_000 + seed)
    told = 0
    t0 = time.perf_counter()
    model_seconds = 0.0
    while told < total:
        t = time.perf_counter()
        x = strat.gen().detach().numpy().reshape(-1, 2)[: total - told]
        y = np.array([obs.respond(case, row[None, :], rng) for row in x])
        strat.add_data(torch.as_tensor(x), torch.as_tensor(y if case == "multi" else y[:, 0]))
        if told >= obs.INIT[case]:
            model_seconds += time.perf_counter() - t
        told += len(x)
    seconds = time.perf_counter() - t0
    grid = torch.as_tensor(obs.GRID)
    model = strat.model
    out: dict[str, object] = {"seconds_per_trial": seconds / total, "model_seconds_per_trial": model_seconds / (total - obs.INIT[case])}
    if case == "ordinal":
        base = getattr(model, "_base_obj", model)
        out["levels"] = base.predict_probs(grid).detach().numpy().tolist()
    else:
        p, _ = model[0].predict(grid, probability_space=True)
        mean, _ = model[1].predict(grid)
        out["detect"] = p.detach().numpy().tolist()
        out["rating"] = mean.detach().numpy().tolist()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
