"""MixedOptimizeAcqfGenerator: the continuous parameters optimised for every combination of the discrete
ones (integer, binary, categorical) — config mapping and refusals naming the key, in-bounds points on the
discrete values exactly, the best combination found, and a Sobol -> mixed run through the server with
speculation, SIGKILL and restart."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

import psyserve_client as pc
from conftest import spawn_server
from psyserve.compute import jobs
from psyserve.compute.contract import GenerateJob, GeneratorSpec, ModelSpec, TrainingData
from psyserve.config import ConfigError, parse_config


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Compute jobs run here as in a pool worker: one torch thread (on a loaded 2-core machine, torch's
    own thread pool makes these small problems many times slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


MIXED = """
[common]
parnames = [contrast, eye, shape, size]
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [init_strat, opt_strat]
target = 0.75
seed = 2

[contrast]
par_type = continuous
lower_bound = 0
upper_bound = 1
[eye]
par_type = binary
[shape]
par_type = categorical
choices = [circle, square, star]
[size]
par_type = integer
lower_bound = 1
upper_bound = 2

[init_strat]
generator = SobolGenerator
min_asks = 6

[opt_strat]
generator = MixedOptimizeAcqfGenerator
model = GPClassificationModel
min_asks = 4

[MixedOptimizeAcqfGenerator]
acqf = MCLevelSetEstimation
restarts = 2
samps = 64
"""


def test_config_lists_each_discrete_parameters_unit_values() -> None:
    spec = parse_config(MIXED)
    phase = spec.phases[1]
    assert phase.is_model_based and phase.generator_options["method"] == "mixed" and spec.warnings == ()
    assert json.loads(str(phase.generator_options["discrete"])) == {"1": [0.0, 1.0], "2": [0.0, 0.5, 1.0], "3": [0.0, 1.0]}


@pytest.mark.parametrize(
    ("old", "new", "section", "key"),
    [
        ("upper_bound = 2", "upper_bound = 200", "size", "upper_bound"),  # 200 integer values
        (
            "choices = [circle, square, star]",
            "choices = [" + ", ".join("abcdefghijklmnopqrstuvwx") + "]",
            "opt_strat",
            "generator",
        ),  # 2 x 24 x 2 = 96 combinations
        ("acqf = MCLevelSetEstimation", "acqf = Nope", "opt_strat", "acqf"),
    ],
)
def test_bad_mixed_configs_are_refused_naming_the_key(old: str, new: str, section: str, key: str) -> None:
    assert old in MIXED
    with pytest.raises(ConfigError) as refused:
        parse_config(MIXED.replace(old, new))
    assert (refused.value.section, refused.value.key) == (section, key), str(refused.value)


def test_mixed_points_sit_on_discrete_values_and_find_the_best_combination() -> None:
    # a regression truth that is best at dimension 1 = 1 and dimension 2 = 0.5 (the middle category)
    rng = np.random.default_rng(0)
    X = rng.random((40, 3))
    X[:, 1] = rng.integers(0, 2, 40)
    X[:, 2] = rng.integers(0, 3, 40) / 2

    def truth(x: np.ndarray) -> np.ndarray:
        return x[:, 0] + 1.5 * x[:, 1] + 2.0 * (x[:, 2] == 0.5)

    y = truth(X) + 0.05 * rng.standard_normal(40)
    discrete = json.dumps({"1": [0.0, 1.0], "2": [0.0, 0.5, 1.0]})
    gen = GeneratorSpec(
        "qUpperConfidenceBound",
        {"method": "mixed", "discrete": discrete, "beta": 0.1, "restarts": 2, "samps": 64, "mc_samples": 32, "maxiter": 30},
    )
    out = jobs.generate(GenerateJob(ModelSpec("GPRegressionModel", 3), gen, TrainingData(X, y), 2, seed=3))
    assert out.points.shape == (2, 3) and np.all((out.points >= 0) & (out.points <= 1))
    assert set(out.points[:, 1]) <= {0.0, 1.0} and set(out.points[:, 2]) <= {0.0, 0.5, 1.0}
    assert out.points[0, 1] == 1.0 and out.points[0, 2] == 0.5 and out.points[0, 0] > 0.8  # the maximum of the UCB
    held = jobs.generate(GenerateJob(ModelSpec("GPRegressionModel", 3), gen, TrainingData(X, y), 1, seed=3, fixed={2: 1.0}))
    assert held.points[0, 2] == 1.0 and held.points[0, 1] == 1.0  # a held discrete dimension is not enumerated


def _p_yes(params: dict[str, object]) -> float:
    shift = {"circle": 0.0, "square": 0.15, "star": -0.15}[str(params["shape"])] + (0.1 if params["eye"] else 0.0)
    return float(scipy.stats.norm.cdf((float(params["contrast"]) - 0.5 + shift) / 0.1))  # type: ignore[arg-type]


def _run(client: pc.Client, sid: int, rng: np.random.Generator, n: int) -> list[dict[str, object]]:
    seen = []
    for _ in range(n):
        trial = client.ask(strategy_id=sid).trials[0]
        params = dict(trial.params)
        assert 0.0 <= float(params["contrast"]) <= 1.0 and params["shape"] in ("circle", "square", "star")  # type: ignore[arg-type]
        assert params["eye"] in (True, False) and params["size"] in (1, 2)
        client.tell(trial_id=trial.trial_id, outcome=int(rng.random() < _p_yes(params)), strategy_id=sid)
        seen.append(params)
    return seen


@pytest.mark.slow
def test_sobol_then_mixed_through_kill_and_restart(tmp_path: Path) -> None:
    db, log = str(tmp_path / "mixed.db"), tmp_path / "server.log"
    rng = np.random.default_rng(5)
    proc = spawn_server(db, log, "--workers", "1")  # speculation on (the default)
    try:
        with pc.Client(proc.address, timeout=120) as client:
            configured = client.configure(config_str=MIXED)
            assert configured.warnings == []
            sid = configured.strategy_id
            _run(client, sid, rng, 8)  # Sobol, then mixed trials with a pending speculation
        proc.kill()
        proc = spawn_server(db, log, "--workers", "1", port=proc.port)
        with pc.Client(proc.address, timeout=120) as client:
            _run(client, sid, rng, 2)
            info = client.info(strategy_id=sid)
            assert info.current_strat_name == "opt_strat" and info.current_strat_data_pts == 10 and info.current_strat_finished
    finally:
        proc.kill()
