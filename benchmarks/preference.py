"""Pairwise preferences (stimuli_per_trial = 2) through a real psyserve server: ask latency, fit /
generation time and how well the model finds the preferred stimulus.

A simulated participant compares two stimuli on [0, 1]^2 with utility u(x) = -8 |x - (0.3, 0.6)|^2
and prefers the first with probability Phi((u1 - u2) / sqrt 2). Each run: 10 Sobol pairs, then 25
model pairs (PairwiseProbitModel + PairwiseMCPosteriorVariance). Response time = the pause between
an ask's reply and its tell. "max error" = distance of the model's utility maximum (Query max) from
the true peak (noisy from seed to seed); "rank corr" = Spearman correlation of the predicted
utility (Query prediction) with the true one on 400 Sobol points. Server: subprocess on 127.0.0.1, 2 workers. All loops are bounded.

Usage: python benchmarks/preference.py [--seeds 3] [--response-times 0.5 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import qmc, spearmanr

import observers
import psyserve_client as pc
from _harness import percentile, server_process

PEAK = np.array([0.3, 0.6])
INIT, MODEL = 10, 25


def config(seed: int) -> str:
    return f"""
[common]
parnames = [x, y]
stimuli_per_trial = 2
outcome_types = [binary]
strategy_names = [init, opt]
seed = {seed}
[x]
lower_bound = 0
upper_bound = 1
[y]
lower_bound = 0
upper_bound = 1
[init]
generator = SobolGenerator
min_asks = {INIT}
[opt]
generator = OptimizeAcqfGenerator
model = PairwiseProbitModel
acqf = PairwiseMCPosteriorVariance
min_asks = {MODEL}
"""


def utility(stimulus: dict[str, object]) -> float:
    x = np.array([stimulus["x"], stimulus["y"]], dtype=float)
    return float(-8.0 * ((x - PEAK) ** 2).sum())


def run(address: str, seed: int, response_time: float) -> tuple[list[float], list[bool], list[float], list[float], float, float]:
    rng = np.random.default_rng(seed)
    asks: list[float] = []
    pre: list[bool] = []
    fits: list[float] = []
    gens: list[float] = []
    with pc.Client(address, timeout=300) as client:
        client.configure(config_str=config(seed))
        for _ in range(INIT + MODEL):
            t0 = time.perf_counter()
            ask = client.ask()
            elapsed = time.perf_counter() - t0
            trial = ask.trials[0]
            if trial.phase_name == "opt":
                asks.append(elapsed)
                pre.append(ask.precomputed)
                fits.append(ask.fit_seconds)
                gens.append(ask.generate_seconds)
            first, second = trial.stimuli
            z = (utility(first) - utility(second)) / np.sqrt(2.0)
            outcome = int(rng.random() < observers.probability(np.array([z]))[0])
            if response_time:
                time.sleep(response_time)
            client.tell(trial_id=trial.trial_id, outcome=outcome)
        best = client.query("max").predictions[0].x
        grid = qmc.Sobol(2, seed=0).random(512)[:400]
        pred = client.query("prediction", x=[{"x": float(a), "y": float(b)} for a, b in grid]).predictions
    error = float(np.linalg.norm(np.array([best["x"], best["y"]], dtype=float) - PEAK))
    rank = float(spearmanr([p.mean for p in pred], -((grid - PEAK) ** 2).sum(-1)).statistic)
    return asks, pre, fits, gens, error, rank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--response-times", nargs="+", type=float, default=[0.5, 0.0])
    args = parser.parse_args()
    print(f"== psyserve preference benchmark: {INIT} Sobol + {MODEL} model pairs x {args.seeds} seeds, workers=2")
    for response_time in args.response_times:
        asks: list[float] = []
        pre: list[bool] = []
        fits: list[float] = []
        gens: list[float] = []
        errors: list[float] = []
        ranks: list[float] = []
        with server_process("--workers", "2") as (address, _db):
            for seed in range(1, args.seeds + 1):
                a, p, f, g, e, r = run(address, seed, response_time)
                ranks.append(r)
                asks += a
                pre += p
                fits += f
                gens += g
                errors.append(e)
        print(
            f"rt={response_time:g}s  ask p50 {percentile(asks, 50) * 1e3:6.1f} ms  p99 {percentile(asks, 99) * 1e3:6.1f} ms  "
            f"precomputed {np.mean(pre) * 100:5.1f}%  fit {np.mean(fits) * 1e3:4.0f} ms  gen {np.mean(gens) * 1e3:4.0f} ms  "
            f"rank corr {np.mean(ranks):.3f}  max error {np.mean(errors):.3f} (per seed: {', '.join(f'{e:.2f}' for e in errors)})",
            flush=True,
        )


if __name__ == "__main__":
    main()
