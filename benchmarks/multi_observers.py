"""Simulated observers of the ordinal and multi-outcome benchmarks (benchmarks/ordinal_multi.py), shared by
the psyserve side and the AEPsych 0.8 driver (benchmarks/_aepsych_multi_driver.py): numpy/scipy only.

Both live on [0, 1]^2. Owns the truths and the configs; knows nothing of servers or clients.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import norm

#: the Likert observer's cut-points between its 5 levels (0..4), probit noise of unit variance
CUTPOINTS = np.array([-1.2, -0.4, 0.4, 1.2])
RATING_NOISE = 0.1


def likert_latent(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    return 3.0 * (x[:, 0] - 0.5) + 0.8 * np.sin(2.0 * math.pi * x[:, 1])


def likert_levels(x: np.ndarray) -> np.ndarray:
    """P(level k | x): n x 5."""
    edges = np.concatenate([[-np.inf], CUTPOINTS, [np.inf]])
    return np.diff(norm.cdf(edges[None, :] - likert_latent(x)[:, None]), axis=1)


def detect_probability(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    return norm.cdf(4.0 * (x[:, 0] - 0.4) + 1.5 * (x[:, 1] - 0.5))


def rating_mean(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    return np.exp(-((x[:, 0] - 0.6) ** 2 + (x[:, 1] - 0.3) ** 2) / 0.1)


def respond(case: str, x: np.ndarray, rng: np.random.Generator) -> list[float]:
    """One trial's outcome(s) at x (1 x 2): [level] or [detected, rating]."""
    if case == "ordinal":
        return [float(rng.choice(5, p=likert_levels(x)[0]))]
    return [float(rng.random() < detect_probability(x)[0]), float(rating_mean(x)[0] + RATING_NOISE * rng.standard_normal())]


GRID = np.stack(np.meshgrid(np.linspace(0.025, 0.975, 20), np.linspace(0.025, 0.975, 20)), -1).reshape(-1, 2)

INIT, MODEL_TRIALS = {"ordinal": 10, "multi": 12}, {"ordinal": 30, "multi": 24}

_HEAD = """
[common]
parnames = [x0, x1]
stimuli_per_trial = 1
outcome_types = {types}
strategy_names = [init_strat, opt_strat]
seed = {seed}
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
min_asks = {init}
"""

_ORDINAL = """[opt_strat]
generator = OptimizeAcqfGenerator
model = OrdinalGPModel
min_asks = {asks}
[OrdinalGPModel]
likelihood = OrdinalLikelihood
[OrdinalLikelihood]
n_levels = 5
[OptimizeAcqfGenerator]
acqf = MCPosteriorVariance
restarts = 10
samps = 1000
[MCPosteriorVariance]
objective = IdentityMCObjective
"""

_MULTI = """[opt_strat]
generator = IndependentOptimizeAcqfGenerator
model = IndependentGPsModel
min_asks = {asks}
[IndependentGPsModel]
models = [GPClassificationModel, RatingModel]
[RatingModel]
class = GPRegressionModel
[IndependentOptimizeAcqfGenerator]
generators = [DetectGen, RatingGen]
[DetectGen]
class = OptimizeAcqfGenerator
acqf = MCPosteriorVariance
restarts = 10
samps = 1000
[RatingGen]
class = OptimizeAcqfGenerator
acqf = qUpperConfidenceBound
restarts = 10
samps = 1000
[qUpperConfidenceBound]
beta = 4.0
"""


def config(case: str, seed: int, asks: int) -> str:
    """The config both sides run; `asks` = the model phase's min_asks (AEPsych's multi-outcome generator
    answers one ask with a point per outcome, so its driver asks half as often for the same trials)."""
    types = "[ordinal]" if case == "ordinal" else "[binary, continuous]"
    body = _ORDINAL if case == "ordinal" else _MULTI
    return _HEAD.format(types=types, seed=seed, init=INIT[case]) + body.format(asks=asks)
