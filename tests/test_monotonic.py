"""MonotonicProjectionGP through the real server: Sobol -> model phase with speculation on, SIGKILL +
restart, predictions monotone along the named parameter and near a monotone observer's; bad settings
are refused naming the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats

import psyserve_client as pc
from conftest import spawn_server
from psyserve.config import ConfigError, parse_config

CONFIG = """
[common]
parnames = [intensity, context]
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [init_strat, opt_strat]
seed = 6

[intensity]
par_type = continuous
lower_bound = 0
upper_bound = 10

[context]
par_type = continuous
lower_bound = -1
upper_bound = 1

[init_strat]
generator = SobolGenerator
min_asks = 10

[opt_strat]
generator = OptimizeAcqfGenerator
model = MonotonicProjectionGP
acqf = MCLevelSetEstimation
target = 0.75
min_asks = 14

[MonotonicProjectionGP]
monotonic_dims = [0]  # more intensity never lowers the response probability
monotonic_grid_size = 20
"""


def p_yes(intensity: float, context: float) -> float:
    return float(scipy.stats.norm.cdf(2.0 * np.tanh(0.8 * (intensity - 5.0)) + 0.7 * context))


def _run(client: pc.Client, sid: int, rng: np.random.Generator, n: int) -> None:
    for _ in range(n):
        trial = client.ask(strategy_id=sid).trials[0]
        i, c = float(trial.params["intensity"]), float(trial.params["context"])
        assert 0.0 <= i <= 10.0 and -1.0 <= c <= 1.0
        client.tell(trial_id=trial.trial_id, outcome=int(rng.random() < p_yes(i, c)), strategy_id=sid)


@pytest.mark.slow
def test_monotonic_runs_through_kill_and_restart(tmp_path: Path) -> None:
    db, log = str(tmp_path / "mono.db"), tmp_path / "server.log"
    rng = np.random.default_rng(8)
    proc = spawn_server(db, log, "--workers", "1")  # speculation on (the default)
    try:
        with pc.Client(proc.address, timeout=180) as client:
            configured = client.configure(config_str=CONFIG)
            assert configured.warnings == []
            sid = configured.strategy_id
            _run(client, sid, rng, 12)
        proc.kill()
        proc = spawn_server(db, log, "--workers", "1", port=proc.port)
        with pc.Client(proc.address, timeout=180) as client:
            _run(client, sid, rng, 12)
            info = client.info(strategy_id=sid)
            assert info.current_strat_name == "opt_strat" and info.current_strat_data_pts >= 24
            grid = [{"intensity": float(i), "context": float(c)} for c in (-0.8, 0.0, 0.8) for i in np.linspace(0, 10, 41)]
            pred = client.query("prediction", probability_space=True, x=grid, strategy_id=sid)
            latent = client.query("prediction", probability_space=False, x=grid, strategy_id=sid)
    finally:
        proc.kill()
    p_hat = np.array(pred.y).reshape(3, 41)
    f_hat = np.array(latent.y).reshape(3, 41)
    p_true = np.array([p_yes(g["intensity"], g["context"]) for g in grid]).reshape(3, 41)
    drop = float(np.maximum(0.0, -np.diff(f_hat, axis=1)).max())
    error = float(np.abs(p_hat - p_true).mean())
    print(f"largest decrease along intensity {drop:.4f} (latent); mean |p error| {error:.3f}")
    assert drop < 5e-3
    assert error < 0.12


def test_monotonic_config_mapping_and_refusals() -> None:
    opt = parse_config(CONFIG).phases[1]
    assert opt.model == "MonotonicProjectionGP"
    assert opt.model_options == {"monotonic_dims": "0", "monotonic_grid_size": 20}
    default = parse_config(CONFIG.replace("monotonic_dims = [0]", "")).phases[1]
    assert default.model_options["monotonic_dims"] == "1"  # AEPsych's default [-1]: the last parameter
    floor = parse_config(
        CONFIG
        + "likelihood = BernoulliObjectiveLikelihood\n[BernoulliObjectiveLikelihood]\nobjective = FloorProbitObjective\n"
        "[FloorProbitObjective]\nfloor = 0.5\n"
    ).phases[1]
    assert (floor.model_options["link"], floor.model_options["floor"]) == ("probit", 0.5)
    cases = [
        (CONFIG.replace("monotonic_dims = [0]", "monotonic_dims = [2]"), "monotonic_dims", "free parameters"),
        (CONFIG.replace("monotonic_dims = [0]", "monotonic_dims = [intensity]"), "monotonic_dims", "indices"),
        (CONFIG.replace("monotonic_grid_size = 20", "monotonic_grid_size = 0"), "monotonic_grid_size", "at least 1"),
        (CONFIG.replace("acqf = MCLevelSetEstimation", "acqf = qNoisyExpectedImprovement"), "acqf", "does not work"),
        (CONFIG.replace("outcome_types = [binary]", "outcome_types = [continuous]"), "model", "binary"),
        (CONFIG + "inducing_point_method = KMeans\n", "inducing_point_method", "unknown inducing-point allocator"),
    ]
    for text, key, says in cases:
        with pytest.raises(ConfigError) as err:
            parse_config(text)
        assert err.value.key == key and says in str(err.value), (key, str(err.value))
