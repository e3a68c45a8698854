"""What one model-based trial costs in a compute worker: fit + acquisition time per trial, in-process.

Runs the jobs a pool worker runs for one simulated participant (novel detection 2-D by default:
10 Sobol trials, then GP classification + MCLevelSetEstimation at 0.75 with AEPsych's default
10 restarts / 1,000 raw samples, a warm refit from the last fit each trial, like the server's
refit_every = 1) and prints fit / generation milliseconds per model trial and the final MAE.
Uses only psyserve.compute's public job API, so it also runs against an older checkout:

    git worktree add /tmp/psyserve-old <commit>
    PYTHONPATH=/tmp/psyserve-old/server python benchmarks/compute.py

``--problem preference_2d``: pairwise preferences (stimuli_per_trial = 2) on a utility peaked at
(0.3, 0.6), PairwiseProbitModel + PairwiseMCPosteriorVariance; instead of the MAE it prints the
distance of the model's utility maximum from the peak.

Usage: python benchmarks/compute.py [--seeds 3] [--trials 40] [--problem novel_detection]
                                   [--acqf MCLevelSetEstimation] [--num-points 1]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from scipy.stats import qmc

import observers
import psyserve.compute as compute
from psyserve.compute import GenerateJob, GeneratorSpec, ModelSpec, ModelState, QueryJob, TrainingData

PROBLEMS = {
    "novel_detection": (observers.novel_detection, 2, -1.0),
    "novel_discrimination": (observers.novel_discrimination, 2, -1.0),
    "hartmann6_binary": (observers.hartmann6_binary, 6, 0.0),
}


def adaptive_run(
    model: ModelSpec,
    generator: GeneratorSpec,
    X: np.ndarray,
    y: np.ndarray,
    answer: Callable[[np.ndarray], np.ndarray],
    trials: int,
    num_points: int,
) -> tuple[np.ndarray, np.ndarray, ModelState | None, list[float], list[float]]:
    r"""``trials`` asks as a worker runs them (warm refit from the last fit each time), each answered
    by ``answer``; returns the data, the last model state and the fit / generation seconds."""
    state = None
    fit_s: list[float] = []
    gen_s: list[float] = []
    for i in range(trials):
        job = GenerateJob(model, generator, TrainingData(X, y), num_points, seed=1000 + i, warm_state=state, refit=True)
        result = compute.generate(job)
        state = result.state
        fit_s.append(result.fit_seconds)
        gen_s.append(result.generate_seconds)
        X = np.concatenate([X, result.points])
        y = np.append(y, answer(result.points))
    return X, y, state, fit_s, gen_s


def parse_variant(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """``"lengthscale_prior=gamma,gen.straddle=latent"`` -> (model options, generator options)."""
    model: dict[str, str] = {}
    gen: dict[str, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        key, _, value = item.partition("=")
        if key.startswith("gen."):
            gen[key[4:]] = value
        else:
            model[key] = value
    return model, gen


def run(
    problem: str,
    seed: int,
    trials: int,
    acqf: str = "MCLevelSetEstimation",
    num_points: int = 1,
    variant: str = "",
) -> tuple[list[float], list[float], float]:
    f, dim, lo = PROBLEMS[problem]
    rng = np.random.default_rng(seed)

    def raw(x: np.ndarray) -> np.ndarray:
        return lo + x * (1.0 - lo)

    X = qmc.Sobol(dim, seed=seed).random(16)[:10]
    y = observers.sample(f(raw(X)), rng)
    model_options, gen_options = parse_variant(variant)
    model = ModelSpec("GPClassificationModel", dim, dict(model_options))
    generator = GeneratorSpec(acqf, {"target": 0.75, "objective": "ProbitObjective", **gen_options})
    X, y, state, fit_s, gen_s = adaptive_run(
        model, generator, X, y, lambda x: observers.sample(f(raw(x)), rng), trials, num_points
    )
    grid = qmc.Sobol(dim, seed=12345).random(1024)
    pred = compute.query(QueryJob(model, TrainingData(X, y), state, "prediction", True, grid, None, {}, 0))
    mae = observers.mean_abs_prob_error(pred.probability, observers.probability(f(raw(grid))))
    return fit_s, gen_s, mae


#: a preference problem: utility peaked at PREF_PEAK on the unit square; P(x1 preferred) = Phi((u1 - u2) / sqrt 2)
PREF_PEAK = np.array([0.3, 0.6])


def preference_utility(x: np.ndarray) -> np.ndarray:
    return -8.0 * ((x - PREF_PEAK) ** 2).sum(-1)


def run_pairwise(seed: int, trials: int, acqf: str, num_points: int, variant: str = "") -> tuple[list[float], list[float], float]:
    r"""10 Sobol pairs, then PairwiseProbitModel + the acquisition; "MAE" is the distance of the
    model's utility maximum from the true peak."""
    rng = np.random.default_rng(seed)

    def answer(pairs: np.ndarray) -> np.ndarray:
        u = preference_utility(pairs)  # k x 2
        return observers.sample((u[:, 0] - u[:, 1]) / np.sqrt(2.0), rng)

    X = qmc.Sobol(4, seed=seed).random(16)[:10].reshape(10, 2, 2)
    y = answer(X)
    model_options, gen_options = parse_variant(variant)
    model = ModelSpec("PairwiseProbitModel", 2, dict(model_options))
    X, y, state, fit_s, gen_s = adaptive_run(model, GeneratorSpec(acqf, dict(gen_options)), X, y, answer, trials, num_points)
    best = compute.query(QueryJob(model, TrainingData(X, y), state, "max", False, None, None, {}, 0))
    return fit_s, gen_s, float(np.linalg.norm(best.x[0] - PREF_PEAK))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", default="novel_detection", choices=[*PROBLEMS, "preference_2d"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument(
        "--acqf",
        default="MCLevelSetEstimation",
        help="acquisition (AEPsych name), e.g. EAVC, GlobalMI, BernoulliMCMutualInformation",
    )
    parser.add_argument("--num-points", type=int, default=1, help="points per ask (> 1: sequential greedy batch)")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[""],
        help="option sets compared in one run, interleaved seed by seed: model options key=value and generator "
        "options gen.key=value, comma-separated ('' = the defaults), e.g. '' 'lengthscale_prior=gamma,gen.straddle=latent'",
    )
    args = parser.parse_args()
    if args.problem == "preference_2d" and args.acqf == "MCLevelSetEstimation":
        args.acqf = "PairwiseMCPosteriorVariance"
    compute.worker_init()  # exactly what a pool worker does first
    fits: dict[str, list[float]] = {v: [] for v in args.variants}
    gens: dict[str, list[float]] = {v: [] for v in args.variants}
    maes: dict[str, list[float]] = {v: [] for v in args.variants}
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        for variant in args.variants:  # interleaved: load changes hit every variant alike
            if args.problem == "preference_2d":
                f, g, mae = run_pairwise(seed, args.trials, args.acqf, args.num_points, variant)
            else:
                f, g, mae = run(args.problem, seed, args.trials, args.acqf, args.num_points, variant)
            fits[variant] += f
            gens[variant] += g
            maes[variant].append(mae)
    print(
        f"== {args.problem}, {args.acqf} x {args.num_points}: 10 Sobol + {args.trials} model asks x {args.seeds} seeds, "
        f"one worker ({time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.1f})"
    )
    for variant in args.variants:
        total = np.array(fits[variant]) + np.array(gens[variant])
        label = f"[{variant}] " if len(args.variants) > 1 else ""
        print(
            f"{label}per model ask: fit {np.mean(fits[variant]) * 1e3:.1f} ms, generation {np.mean(gens[variant]) * 1e3:.1f} ms, "
            f"total mean {np.mean(total) * 1e3:.1f} ms, p90 {np.percentile(total, 90) * 1e3:.1f} ms; "
            + (
                f"max error {np.mean(maes[variant]):.3f}"
                if args.problem == "preference_2d"
                else f"MAE {np.mean(maes[variant]):.3f}"
            )
        )


if __name__ == "__main__":
    main()
