"""Floor objectives (n-AFC guess rates) through the real server: a 2AFC observer's 0.75 threshold is
recovered, predictions respect the floor, the run survives SIGKILL + restart, and bad settings are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats

import psyserve_client as pc
from conftest import spawn_server
from psyserve.config import ConfigError, parse_config

THRESHOLD = 0.45  # the truth: p(THRESHOLD) = 0.75 for the 2AFC observer below
SLOPE = 0.12

# As AEPsych's documentation writes a 2AFC experiment: the model's likelihood names the floor objective.
TWO_AFC = """
[common]
parnames = [intensity]
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [init_strat, opt_strat]
target = 0.75
seed = 11

[intensity]
par_type = continuous
lower_bound = 0
upper_bound = 1

[init_strat]
generator = SobolGenerator
min_asks = 10

[opt_strat]
generator = OptimizeAcqfGenerator
model = GPClassificationModel
min_asks = 22

[GPClassificationModel]
likelihood = BernoulliObjectiveLikelihood # the link with the guess rate
[BernoulliObjectiveLikelihood]
objective = {objective}
[{objective}]
floor = 0.5 # 2AFC: half the answers are right by chance

[OptimizeAcqfGenerator]
acqf = MCLevelSetEstimation
[MCLevelSetEstimation]
objective = {objective}
"""


def p_correct(x: float) -> float:
    return 0.5 + 0.5 * float(scipy.stats.norm.cdf((x - THRESHOLD) / SLOPE))


def _run(client: pc.Client, sid: int, rng: np.random.Generator, n: int) -> None:
    for _ in range(n):
        trial = client.ask(strategy_id=sid).trials[0]
        x = float(trial.params["intensity"])
        assert 0.0 <= x <= 1.0
        client.tell(trial_id=trial.trial_id, outcome=int(rng.random() < p_correct(x)), strategy_id=sid)


@pytest.mark.slow
def test_2afc_threshold_with_floor_through_kill_and_restart(tmp_path: Path) -> None:
    db, log = str(tmp_path / "floor.db"), tmp_path / "server.log"
    rng = np.random.default_rng(11)
    proc = spawn_server(db, log, "--workers", "1")  # speculation on (the default)
    try:
        with pc.Client(proc.address, timeout=120) as client:
            configured = client.configure(config_str=TWO_AFC.format(objective="FloorProbitObjective"))
            assert configured.warnings == []
            sid = configured.strategy_id
            _run(client, sid, rng, 16)  # Sobol, then model trials with a pending speculation
        proc.kill()
        proc = spawn_server(db, log, "--workers", "1", port=proc.port)
        with pc.Client(proc.address, timeout=120) as client:
            _run(client, sid, rng, 16)
            info = client.info(strategy_id=sid)
            assert info.current_strat_name == "opt_strat" and info.current_strat_data_pts >= 20
            inverse = client.query("inverse", probability_space=True, y=0.75, strategy_id=sid)
            x75 = float(inverse.x["intensity"][0])
            grid = [{"intensity": float(v)} for v in np.linspace(0.0, 1.0, 21)]
            pred = client.query("prediction", probability_space=True, x=grid, strategy_id=sid)
            low = client.query("min", probability_space=True, strategy_id=sid)
    finally:
        proc.kill()
    p_hat = np.array(pred.y)
    p_true = np.array([p_correct(g["intensity"]) for g in grid])
    error = float(np.abs(p_hat - p_true).mean())
    print(f"2AFC floor 0.5: x75 = {x75:.3f} (truth {THRESHOLD}), mean |p error| = {error:.3f}, min p = {low.y[0]:.3f}")
    # one run's accuracy, at a fixed seed: config seed 11 with torch's Sobol start (since 2026-12-02).
    # Across config seeds 1, 5 and 11 on SciPy's and torch's Sobol engines the threshold error was
    # 0.009-0.14 and the mean |p error| 0.04-0.18: two of six runs miss these bounds, so a change of
    # seed or of the initial design can fail this test without any fault in the model
    assert abs(x75 - THRESHOLD) < 0.08
    assert error < 0.08
    assert p_hat.min() >= 0.5 and low.y[0] >= 0.5  # the floor: never below chance


def test_floor_changes_the_level_the_acquisition_aims_at() -> None:
    """The objective's floor goes to the model (link) and to the acquisition; a target at or below the
    floor, a mismatched link, or a floor objective on a model without binary outcomes is refused."""
    spec = parse_config(TWO_AFC.format(objective="FloorGumbelObjective"))
    opt = spec.phases[1]
    assert opt.model_options["link"] == "gumbel" and opt.model_options["floor"] == 0.5
    assert opt.generator_options["objective"] == "FloorGumbelObjective" and opt.generator_options["floor"] == 0.5
    assert spec.warnings == ()
    # only the acquisition names it (AEPsych would need the likelihood too): the model is fitted with it as well
    acqf_only = (
        TWO_AFC.format(objective="FloorLogitObjective")
        .replace("likelihood = BernoulliObjectiveLikelihood # the link with the guess rate\n", "")
        .replace("[BernoulliObjectiveLikelihood]\nobjective = FloorLogitObjective\n", "")
    )
    opt = parse_config(acqf_only).phases[1]
    assert (opt.model_options["link"], opt.model_options["floor"]) == ("logit", 0.5)
    cases = [
        (TWO_AFC.format(objective="FloorProbitObjective").replace("target = 0.75", "target = 0.4"), "target", "(0.5, 1)"),
        (TWO_AFC.format(objective="FloorProbitObjective").replace("floor = 0.5 #", "floor = 1.2 #"), "floor", "[0, 1)"),
        (
            TWO_AFC.format(objective="FloorProbitObjective").replace(
                "[MCLevelSetEstimation]\nobjective = FloorProbitObjective",
                "[MCLevelSetEstimation]\nobjective = FloorLogitObjective",
            ),
            "objective",
            "same link",
        ),
        (
            TWO_AFC.format(objective="FloorProbitObjective").replace(
                "likelihood = BernoulliObjectiveLikelihood", "likelihood = GaussianLikelihood"
            ),
            "likelihood",
            "not supported",
        ),
    ]
    cases.append(  # the look-ahead family is exact for the probit link only
        (
            TWO_AFC.format(objective="FloorLogitObjective").replace("acqf = MCLevelSetEstimation", "acqf = GlobalSUR"),
            "objective",
            "probit link only",
        )
    )
    for acqf in ("GlobalSUR", "ApproxGlobalSUR", "LocalMI", "LocalSUR", "EAVC", "GlobalMI"):
        text = TWO_AFC.format(objective="FloorProbitObjective").replace("acqf = MCLevelSetEstimation", f"acqf = {acqf}")
        opt = parse_config(text.replace("[MCLevelSetEstimation]", f"[{acqf}]\nquery_set_size = 64")).phases[1]
        assert opt.acqf == acqf and opt.model_options["floor"] == 0.5
        assert opt.generator_options["lookahead_points"] == 64  # AEPsych's query_set_size
    for text, key, says in cases:
        with pytest.raises(ConfigError) as err:
            parse_config(text)
        assert err.value.key == key and says in str(err.value), str(err.value)
