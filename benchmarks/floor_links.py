"""Per-trial cost of the floor objectives' links and of AEPsych's other generators (compute jobs, in process).

For a 2AFC observer on [0, 1]^2 (p = 0.5 + 0.5 Phi(f), novel_detection), 40 trials of data: the time of one
model job (fit from scratch + one point) for the plain probit model and for FloorProbit / FloorLogit /
FloorGumbel links, and for the grid / Thompson / epsilon-greedy generators; medians of --repeats runs,
ratios against the plain probit + optimise job measured in the same run. Also the probability error of
each fit against the observer's truth on a 400-point grid (mean |p_hat - p|).

Usage: python benchmarks/floor_links.py [--repeats 5] [--trials 40]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import scipy.stats
import torch

import observers as ob
from psyserve.compute import GenerateJob, GeneratorSpec, ModelSpec, TrainingData
from psyserve.compute.jobs import generate
from psyserve.compute.models import fit_model
from psyserve.compute.predict import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--trials", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    X = rng.random((args.trials, 2))
    p_true = lambda x: 0.5 + 0.5 * scipy.stats.norm.cdf(ob.novel_detection(2 * x - 1))  # noqa: E731
    y = (rng.random(args.trials) < p_true(X)).astype(float)
    data = TrainingData(X, y)
    g = np.linspace(0, 1, 20)
    grid = np.array([[a, b] for a in g for b in g])
    cases = {
        "probit (no floor), optimise": ({}, {}),
        "FloorProbitObjective 0.5": ({"link": "probit", "floor": 0.5}, {"objective": "FloorProbitObjective", "floor": 0.5}),
        "FloorLogitObjective 0.5": ({"link": "logit", "floor": 0.5}, {"objective": "FloorLogitObjective", "floor": 0.5}),
        "FloorGumbelObjective 0.5": ({"link": "gumbel", "floor": 0.5}, {"objective": "FloorGumbelObjective", "floor": 0.5}),
        "probit, AcqfGridSearchGenerator": ({}, {"method": "grid"}),
        "probit, AcqfThompsonSamplerGenerator": ({}, {"method": "thompson"}),
        "probit, EpsilonGreedyGenerator 0.1": ({}, {"method": "epsilon_greedy", "epsilon": 0.1}),
    }
    load = os.getloadavg()[0]
    print(
        f"== floor links and generators, {args.trials} trials, 2-D, 1 thread, load average {load:.1f}, {time.strftime('%Y-%m-%d')}"
    )
    base = None
    for name, (mopts, gopts) in cases.items():
        spec = ModelSpec("GPClassificationModel", 2, mopts)
        gen = GeneratorSpec("MCLevelSetEstimation", {"target": 0.75, **gopts})
        times = []
        for r in range(args.repeats):
            t0 = time.perf_counter()
            generate(GenerateJob(spec, gen, data, num_points=1, seed=r))
            times.append(time.perf_counter() - t0)
        med = float(np.median(times))
        base = base or med
        fitted = fit_model(spec, X, y)
        err = float(np.abs(predict(fitted, grid, True)["probability"] - p_true(grid)).mean())
        print(f"   {name:<40} {med * 1000:8.1f} ms/job  x{med / base:5.2f}   mean |p error| {err:.3f}")


if __name__ == "__main__":
    main()
