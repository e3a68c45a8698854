"""Semi-parametric psychometric models through the real server: SemiParametricGPModel with
IntensityAwareSemiPGenerator (ThresholdBALV: MCPosteriorVariance of the SemiPThresholdObjective) and
HadamardSemiPModel with AEPsych's default 2AFC-style link run Sobol -> model phase with speculation on,
survive SIGKILL + restart, and read out thresholds near the simulated observer's; bad configs are
refused naming the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.stats

import psyserve_client as pc
from conftest import spawn_server
from psyserve.config import ConfigError, parse_config


def offset(c: float) -> float:
    """The observer's threshold location along the intensity (f = 0) at context c."""
    return 0.3 + 0.3 * c


def slope(c: float) -> float:
    return 5.0 + 5.0 * c


def p_yes_no(c: float, s: float) -> float:
    return float(scipy.stats.norm.cdf(slope(c) * (s - offset(c))))


SEMIP = """
[common]
parnames = [context, intensity]  # intensity is the stimulus dimension
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [init_strat, opt_strat]
seed = 3

[context]
par_type = continuous
lower_bound = 0
upper_bound = 1

[intensity]
par_type = continuous
lower_bound = 0
upper_bound = 1

[init_strat]
generator = SobolGenerator
min_asks = 10

[opt_strat]
generator = IntensityAwareSemiPGenerator
model = SemiParametricGPModel
acqf = MCPosteriorVariance
min_asks = 30

[SemiParametricGPModel]
stim_dim = 1
slope_mean = 5
inducing_size = 50
likelihood = LinearBernoulliLikelihood

[LinearBernoulliLikelihood]
objective = FloorProbitObjective

[FloorProbitObjective]
floor = 0

[MCPosteriorVariance]
objective = SemiPThresholdObjective

[SemiPThresholdObjective]
target = 0.75
"""

HADAMARD = """
[common]
parnames = [context, intensity]
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [init_strat, opt_strat]
seed = 4

[context]
par_type = continuous
lower_bound = 0
upper_bound = 1

[intensity]
par_type = continuous
lower_bound = 0
upper_bound = 1

[init_strat]
generator = SobolGenerator
min_asks = 10

[opt_strat]
generator = OptimizeAcqfGenerator
model = HadamardSemiPModel
acqf = MCLevelSetEstimation
target = 0.75
min_asks = 30

[HadamardSemiPModel]
stim_dim = 1
slope_mean = 5  # a prior slope (per unit of the intensity range) nearer the observer's than AEPsych's 2
likelihood = BernoulliLikelihood  # probit, no floor (AEPsych's default here is a logistic link with a 0.5 floor)
"""


def _run(client: pc.Client, sid: int, rng: np.random.Generator, n: int, p: object) -> None:
    for _ in range(n):
        trial = client.ask(strategy_id=sid).trials[0]
        c, s = float(trial.params["context"]), float(trial.params["intensity"])
        assert 0.0 <= c <= 1.0 and 0.0 <= s <= 1.0
        client.tell(trial_id=trial.trial_id, outcome=int(rng.random() < p(c, s)), strategy_id=sid)  # type: ignore[operator]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "observer", "level", "truth"),
    [
        (SEMIP, p_yes_no, 0.75, lambda c: offset(c) + float(scipy.stats.norm.ppf(0.75)) / slope(c)),
        (HADAMARD, p_yes_no, 0.75, lambda c: offset(c) + float(scipy.stats.norm.ppf(0.75)) / slope(c)),
    ],
    ids=["SemiParametricGPModel", "HadamardSemiPModel"],
)
def test_semip_runs_through_kill_and_restart(tmp_path: Path, config: str, observer: object, level: float, truth: object) -> None:
    db, log = str(tmp_path / "semip.db"), tmp_path / "server.log"
    rng = np.random.default_rng(21)
    proc = spawn_server(db, log, "--workers", "1")  # speculation on (the default)
    try:
        with pc.Client(proc.address, timeout=180) as client:
            configured = client.configure(config_str=config)
            assert configured.warnings == []
            sid = configured.strategy_id
            _run(client, sid, rng, 20, observer)  # Sobol, then model trials with a pending speculation
        proc.kill()
        proc = spawn_server(db, log, "--workers", "1", port=proc.port)
        with pc.Client(proc.address, timeout=180) as client:
            _run(client, sid, rng, 20, observer)
            info = client.info(strategy_id=sid)
            assert info.current_strat_name == "opt_strat" and info.current_strat_data_pts >= 40
            contexts = [0.1, 0.5, 0.9]
            found = []
            for c in contexts:  # SemiPThresholdObjective: the intensity where p = level at the context
                inverse = client.query("inverse", probability_space=True, y=level, constraints={"context": c}, strategy_id=sid)
                assert float(inverse.x["context"][0]) == pytest.approx(c)
                found.append(float(inverse.x["intensity"][0]))
            pred = client.query(  # SemiPProbabilityObjective: the response probability at points
                "prediction", probability_space=True, x=[{"context": c, "intensity": t} for c, t in zip(contexts, found, strict=True)], strategy_id=sid
            )
    finally:
        proc.kill()
    want = np.array([truth(c) for c in contexts])  # type: ignore[operator]
    err = np.abs(np.array(found) - want)
    print(f"thresholds {np.round(found, 3)} truth {np.round(want, 3)} |error| {np.round(err, 3)}; p at them {np.round(pred.y, 3)}")
    assert float(err.mean()) < 0.08 and float(err.max()) < 0.15
    assert np.allclose(pred.y, level, atol=0.02)  # the inverse and the prediction agree


def test_semip_config_mapping_and_refusals() -> None:
    opt = parse_config(SEMIP).phases[1]
    assert opt.generator_options["method"] == "semip_intensity"
    assert opt.generator_options["objective"] == "SemiPThresholdObjective" and opt.generator_options["target"] == 0.75
    assert opt.model_options == {"inducing_size": 50, "stim_dim": 1, "slope_mean": 5.0, "link": "probit", "floor": 0.0}
    had = parse_config(HADAMARD).phases[1]
    assert (had.model_options["link"], had.model_options["floor"], had.model_options["stim_dim"]) == ("probit", 0.0, 1)
    default = parse_config(HADAMARD.replace("likelihood = BernoulliLikelihood", "")).phases[1]
    assert (default.model_options["link"], default.model_options["floor"]) == ("logit", 0.5)  # AEPsych's default
    gumbel = parse_config(SEMIP.replace("objective = FloorProbitObjective", "objective = FloorGumbelObjective").replace("[FloorProbitObjective]", "[FloorGumbelObjective]"))
    assert (gumbel.phases[1].model_options["link"], gumbel.phases[1].model_options["floor"]) == ("gumbel", 0.0)
    cases = [
        (SEMIP.replace("stim_dim = 1", "stim_dim = 2"), "stim_dim", "free parameters"),
        (SEMIP.replace("stim_dim = 1", "stim_dim = one"), "stim_dim", "integer"),
        (SEMIP.replace("likelihood = LinearBernoulliLikelihood", "likelihood = BernoulliObjectiveLikelihood"), "likelihood", "LinearBernoulliLikelihood"),
        (SEMIP.replace("floor = 0", "floor = 1.5"), "floor", "[0, 1)"),
        (SEMIP.replace("slope_mean = 5", "slope_mean = steep"), "slope_mean", "number"),
        (SEMIP.replace("acqf = MCPosteriorVariance", "acqf = MCLevelSetEstimation\ntarget = 0.75").replace("[MCPosteriorVariance]", "[MCLevelSetEstimation]"), "objective", "MCPosteriorVariance"),
        (SEMIP.replace("model = SemiParametricGPModel", "model = GPClassificationModel").replace("[MCPosteriorVariance]\nobjective = SemiPThresholdObjective", ""), "model", "semi-parametric"),
        (HADAMARD.replace("acqf = MCLevelSetEstimation", "acqf = EAVC").replace("likelihood = BernoulliLikelihood", ""), "likelihood", "probit link only"),
        (HADAMARD.replace("outcome_types = [binary]", "outcome_types = [continuous]"), "model", "binary"),
        (HADAMARD.replace("stim_dim = 1", "stim_dim = 1\ninducing_point_method = KMeans"), "inducing_point_method", "unknown inducing-point allocator"),
        (HADAMARD.replace("acqf = MCLevelSetEstimation", "acqf = qNoisyExpectedImprovement"), "acqf", "does not work"),
        (HADAMARD.replace("target = 0.75", "target = 0.4").replace("likelihood = BernoulliLikelihood", ""), "target", "(0.5, 1)"),
    ]
    for text, key, says in cases:
        with pytest.raises(ConfigError) as err:
            parse_config(text)
        assert err.value.key == key and says in str(err.value), (key, str(err.value))


@pytest.mark.slow
def test_semip_over_aepsych_protocol(tmp_path: Path) -> None:
    """AEPsych's own client and JSON/TCP protocol: a HadamardSemiPModel run into its model phase, then
    the threshold (inverse with the context fixed) and the probability there."""
    from aepsych_client import AEPsychClient

    from conftest import ServerThread
    from psyserve.app import ServerOptions

    srv = ServerThread(ServerOptions(port=0, db=str(tmp_path / "a.db"), models=True, workers=1, aepsych_port=0))
    rng = np.random.default_rng(3)
    client = AEPsychClient(ip="127.0.0.1", port=srv.running.extra[0].port)
    try:
        assert client.socket is not None
        client.socket.settimeout(120)
        client.configure(config_str=HADAMARD)
        for _ in range(13):  # 10 Sobol, then 3 model trials
            ask = client.ask()["config"]
            c, s = ask["context"][0], ask["intensity"][0]
            assert 0 <= c <= 1 and 0 <= s <= 1
            client.tell(config=ask, outcome=int(rng.random() < p_yes_no(c, s)))
        info = client.info()
        assert info["current_strat_name"] == "opt_strat" and info["current_strat_model"] == "HadamardSemiPModel"
        inverse = client.query("inverse", probability_space=True, y=0.75, constraints={"context": 0.5})
        assert inverse["x"]["context"] == [0.5] and 0 <= inverse["x"]["intensity"][0] <= 1
        at = client.query("prediction", probability_space=True, x={"context": [0.5], "intensity": inverse["x"]["intensity"]})
        assert at["y"][0] == pytest.approx(0.75, abs=0.02)
    finally:
        assert client.socket is not None
        client.socket.close()
        client.finalize = lambda: {}  # type: ignore[method-assign]  # its __del__ sends exit on a closed socket
        srv.stop()
