"""VariationalGPModel (AEPsych 0.8's base variational GP, its default Gaussian likelihood) against AEPsych 0.8
on a continuous observer: accuracy on the same data and the cost of a fit, side by side in one run.

psyserve runs as a subprocess server driven by its Python gRPC client (one model worker): an INI config with
10 Sobol + 20 model trials (MCPosteriorVariance), responses from the observer
``10 + 3 sin(3 x0) + 2 x1^2 + N(0, 0.3^2)`` on [0, 1]^2. AEPsych 0.8's SequentialStrategy cannot build this
config (VariationalGPModel has no ``_num_outputs``: the driver reports the error), so AEPsych's
VariationalGPModel is fitted in its own venv (benchmarks/_aepsych_vgp_driver.py) on the very trials
psyserve's run placed, and both models' posterior means are scored on a 20 x 20 grid (mean |error|).
psyserve's GPRegressionModel, fitted in-process on the same trials, is a third column. Fit seconds: one
cold fit on all 30 trials in-process on each side, after an untimed warm-up fit. Mean ± standard error
over seeds; paired difference psyserve - AEPsych.

Usage: python benchmarks/variational_gp.py [--seeds 5] [--aepsych-venv /work/venvs/aepsych]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from _harness import mean_se, server_process

INIT, MODEL_TRIALS, NOISE = 10, 20, 0.3
GRID = np.stack(np.meshgrid(np.linspace(0.0, 1.0, 20), np.linspace(0.0, 1.0, 20)), -1).reshape(-1, 2)
CONFIG = f"""
[common]
parnames = [x0, x1]
stimuli_per_trial = 1
outcome_types = [continuous]
strategy_names = [init_strat, opt_strat]
seed = {{seed}}
[x0]
par_type = continuous
lower_bound = 0
upper_bound = 1
[x1]
par_type = continuous
lower_bound = 0
upper_bound = 1
[init_strat]
generator = SobolGenerator
min_asks = {INIT}
[opt_strat]
generator = OptimizeAcqfGenerator
model = VariationalGPModel
min_asks = {MODEL_TRIALS}
[OptimizeAcqfGenerator]
acqf = MCPosteriorVariance
"""


def surface(x: np.ndarray) -> np.ndarray:
    return 10.0 + 3.0 * np.sin(3.0 * x[:, 0]) + 2.0 * x[:, 1] ** 2


def run_psyserve(seed: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    import psyserve_client as pc

    rng = np.random.default_rng(10_000 + seed)
    xs, ys = [], []
    with server_process("--workers", "1") as (address, _), pc.Client(address, timeout=600) as client:
        sid = client.configure(config_str=CONFIG.format(seed=seed)).strategy_id
        model_seconds = 0.0
        for i in range(INIT + MODEL_TRIALS):
            t = time.perf_counter()
            trial = client.ask(strategy_id=sid).trials[0]
            x = np.array([float(trial.params["x0"]), float(trial.params["x1"])])
            y = float(surface(x[None])[0] + NOISE * rng.standard_normal())
            client.tell(trial_id=trial.trial_id, outcome=y, strategy_id=sid)
            if i >= INIT:
                model_seconds += time.perf_counter() - t
            xs.append(x)
            ys.append(y)
        mean = np.array(client.query("prediction", x=[{"x0": float(a), "x1": float(b)} for a, b in GRID], strategy_id=sid).y)
    X, Y = np.array(xs), np.array(ys)
    import torch

    torch.set_num_threads(1)  # as in a model worker (and AEPsych's driver): torch's own threads thrash on a loaded machine
    from psyserve.compute.contract import ModelSpec
    from psyserve.compute.models import fit_model

    fit_model(ModelSpec("VariationalGPModel", 2, {}), X[:5], Y[:5])  # imports and first-call set-up, untimed
    t0 = time.perf_counter()
    fit_model(ModelSpec("VariationalGPModel", 2, {}), X, Y)
    fit_seconds = time.perf_counter() - t0
    exact = fit_model(ModelSpec("GPRegressionModel", 2, {}), X, Y)
    with torch.no_grad():
        exact_mean = exact.latent.mean_variance(torch.as_tensor(GRID))[0].numpy()
    truth = surface(GRID)
    return (
        {
            "mae": float(np.abs(mean - truth).mean()),
            "fit_seconds": fit_seconds,
            "model_seconds_per_trial": model_seconds / MODEL_TRIALS,
            "regression_mae": float(np.abs(exact_mean - truth).mean()),
        },
        X,
        Y,
    )


def run_aepsych(seed: int, X: np.ndarray, Y: np.ndarray, venv: Path) -> tuple[dict[str, float], str]:
    job = {"X": X.tolist(), "y": Y.tolist(), "grid": GRID.tolist(), "config": CONFIG.format(seed=seed), "seed": seed}
    done = subprocess.run(
        [str(venv / "bin" / "python"), str(Path(__file__).resolve().parent / "_aepsych_vgp_driver.py")],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"AEPsych driver failed: {done.stderr[-2000:]}")
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    mae = float(np.abs(np.asarray(reply["mean"]) - surface(GRID)).mean())
    return {"mae": mae, "fit_seconds": float(reply["fit_seconds"])}, str(reply["strategy_error"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--aepsych-venv", type=Path, default=Path("/work/venvs/aepsych"))
    args = parser.parse_args()
    print(f"== VariationalGPModel benchmark, seeds 1..{args.seeds}, {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}")
    ours, theirs = [], []
    for seed in range(1, args.seeds + 1):
        mine, X, Y = run_psyserve(seed)
        other, error = run_aepsych(seed, X, Y, args.aepsych_venv)
        ours.append(mine)
        theirs.append(other)
        print(f"   seed {seed}: psyserve {mine} | AEPsych {other} (load {os.getloadavg()[0]:.1f})", flush=True)
        if seed == 1:
            print(f"   AEPsych 0.8's SequentialStrategy on the same INI: {error or 'built'}", flush=True)
    print(f"-- {args.seeds} seeds, {INIT} Sobol + {MODEL_TRIALS} model trials (psyserve | AEPsych 0.8 | paired difference)")
    for metric in ("mae", "fit_seconds"):
        a = [o[metric] for o in ours]
        b = [t[metric] for t in theirs]
        print(f"   {metric:<14} {mean_se(a):>15} | {mean_se(b):>15} | {mean_se([x - y for x, y in zip(a, b, strict=True)]):>15}")
    print(f"   psyserve GPRegressionModel on the same trials: mae {mean_se([o['regression_mae'] for o in ours])}")
    print(f"   psyserve s per model trial (client-seen ask + tell): {mean_se([o['model_seconds_per_trial'] for o in ours])}")
    print(f"   (load average at the end: {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
