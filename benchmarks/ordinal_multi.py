"""Paired benchmark of OrdinalGPModel and IndependentGPsModel: psyserve against AEPsych 0.8 on the same
simulated observers, configs, seeds and trial counts, in one run.

psyserve runs as a subprocess server driven by its Python gRPC client (one model worker, speculation on);
AEPsych 0.8 runs in-process in its own venv (benchmarks/_aepsych_multi_driver.py: SequentialStrategy, the
same INI config). Observers (benchmarks/multi_observers.py, both on [0, 1]^2):
  ordinal — a 5-level Likert observer (latent 3 (x0 - .5) + .8 sin(2 pi x1), cut-points +-0.4, +-1.2,
            probit noise); 10 Sobol + 30 MCPosteriorVariance (latent) trials; accuracy: mean |P(level) - truth|
            and mean |E[level] - truth| on a 20 x 20 grid.
  multi   — a binary outcome P = Phi(4 (x0 - .4) + 1.5 (x1 - .5)) and a continuous rating (a Gaussian bump,
            noise sd 0.1); 12 Sobol + 24 model trials (IndependentOptimizeAcqfGenerator: MCPosteriorVariance
            for the binary model, qUCB for the rating); accuracy: mean |p - truth| and the rating's MAE.
AEPsych's multi-outcome generator answers each ask with one point per outcome, so its driver asks 12 times
for 24 trials. Per-trial cost: psyserve as its client sees it (ask + tell round trips, model trials only);
AEPsych's gen + add_data in-process (no RPC). Mean ± standard error over seeds; paired difference.

Usage: python benchmarks/ordinal_multi.py [--seeds 3] [--cases ordinal multi] [--aepsych-venv /work/venvs/aepsych]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import multi_observers as obs
import numpy as np

from _harness import mean_se, server_process

HERE = Path(__file__).resolve().parent


def run_psyserve(case: str, seed: int) -> dict[str, float]:
    import psyserve_client as pc

    rng = np.random.default_rng(10_000 + seed)
    total = obs.INIT[case] + obs.MODEL_TRIALS[case]
    names = ["detected", "rating"]
    with server_process("--workers", "1") as (address, _), pc.Client(address, timeout=600) as client:
        text = obs.config(case, seed, obs.MODEL_TRIALS[case])
        if case == "multi":
            text = text.replace("outcome_types = [binary, continuous]", "outcome_types = [binary, continuous]\noutcome_names = [detected, rating]")
        sid = client.configure(config_str=text).strategy_id
        model_seconds = 0.0
        t0 = time.perf_counter()
        for i in range(total):
            t = time.perf_counter()
            trial = client.ask(strategy_id=sid).trials[0]
            x = np.array([[float(trial.params["x0"]), float(trial.params["x1"])]])
            y = obs.respond(case, x, rng)
            client.tell(trial_id=trial.trial_id, outcome=y[0] if case == "ordinal" else dict(zip(names, y)), strategy_id=sid)
            if i >= obs.INIT[case]:
                model_seconds += time.perf_counter() - t
        seconds = time.perf_counter() - t0
        points = [{"x0": float(a), "x1": float(b)} for a, b in obs.GRID]
        out = {"seconds_per_trial": seconds / total, "model_seconds_per_trial": model_seconds / obs.MODEL_TRIALS[case]}
        if case == "ordinal":
            pred = client.query("prediction", probability_space=True, x=points, strategy_id=sid)
            out.update(score("ordinal", {"levels": [list(p.level_probabilities) for p in pred.predictions]}))
        else:
            detect = client.query("prediction", probability_space=True, x=points, strategy_id=sid, outcome="detected").y
            rating = client.query("prediction", x=points, strategy_id=sid, outcome="rating").y
            out.update(score("multi", {"detect": detect, "rating": rating}))
    return out


def run_aepsych(case: str, seed: int, venv: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [str(venv / "bin" / "python"), str(HERE / "_aepsych_multi_driver.py"), case, str(seed)],
            capture_output=True,
            text=True,
            cwd=tmp,
            timeout=3600,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    if done.returncode != 0:
        raise RuntimeError(f"AEPsych driver failed: {done.stderr[-2000:]}")
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    out = {"seconds_per_trial": reply["seconds_per_trial"], "model_seconds_per_trial": reply["model_seconds_per_trial"]}
    out.update(score(case, reply))
    return out


def score(case: str, predicted: dict[str, list]) -> dict[str, float]:
    if case == "ordinal":
        levels = np.asarray(predicted["levels"], dtype=float)
        truth = obs.likert_levels(obs.GRID)
        k = np.arange(truth.shape[1])
        return {
            "level_prob_error": float(np.abs(levels - truth).mean()),
            "expected_level_error": float(np.abs(levels @ k - truth @ k).mean()),
        }
    return {
        "detect_p_error": float(np.abs(np.asarray(predicted["detect"], dtype=float) - obs.detect_probability(obs.GRID)).mean()),
        "rating_mae": float(np.abs(np.asarray(predicted["rating"], dtype=float) - obs.rating_mean(obs.GRID)).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["ordinal", "multi"], choices=["ordinal", "multi"])
    parser.add_argument("--aepsych-venv", type=Path, default=Path("/work/venvs/aepsych"))
    args = parser.parse_args()
    print(f"== ordinal / multi-outcome benchmark, seeds 1..{args.seeds}, {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}")
    for case in args.cases:
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        for seed in range(1, args.seeds + 1):
            ours.append(run_psyserve(case, seed))
            theirs.append(run_aepsych(case, seed, args.aepsych_venv))
            print(f"   {case} seed {seed}: psyserve {ours[-1]} | AEPsych {theirs[-1]} (load {os.getloadavg()[0]:.1f})", flush=True)
        print(f"-- {case}: {args.seeds} seeds (psyserve | AEPsych 0.8 | paired difference psyserve - AEPsych)")
        for metric in ours[0]:
            a = [o[metric] for o in ours]
            b = [t[metric] for t in theirs]
            print(f"   {metric:<24} {mean_se(a):>15} | {mean_se(b):>15} | {mean_se([x - y for x, y in zip(a, b, strict=True)]):>15}")
        print(f"   (load average at the end: {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
