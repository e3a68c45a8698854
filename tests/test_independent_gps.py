"""IndependentGPsModel + IndependentOptimizeAcqfGenerator (one model per outcome): a binary and a
continuous outcome of one simulated observer recovered through the real server (gRPC, then AEPsych's
JSON/TCP protocol after a SIGKILL + restart, speculation on), each generator's points in bounds, a tell
missing an outcome refused naming it, and bad configs refused naming the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from test_aepsych_wire import Raw

import psyserve_client as pc
from conftest import free_port, spawn_server
from psyserve.compute import jobs
from psyserve.compute.contract import INDEPENDENT, GenerateJob, GeneratorSpec, ModelSpec, TrainingData, part_state
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


NOISE = 0.1


def detect_latent(x: np.ndarray) -> np.ndarray:
    """The binary outcome: P(detected) = Phi(latent)."""
    x = np.atleast_2d(x)
    return 4.0 * (x[:, 0] - 0.4) + 1.5 * (x[:, 1] - 0.5)


def rating(x: np.ndarray) -> np.ndarray:
    """The continuous outcome's mean (a bump)."""
    x = np.atleast_2d(x)
    return np.exp(-((x[:, 0] - 0.6) ** 2 + (x[:, 1] - 0.3) ** 2) / 0.1)


def respond(rng: np.random.Generator, x: np.ndarray) -> dict[str, float]:
    p = float(scipy.stats.norm.cdf(detect_latent(x))[0])
    return {"detected": float(rng.random() < p), "rating": float(rating(x)[0] + NOISE * rng.standard_normal())}


GRID = np.stack(np.meshgrid(np.linspace(0.05, 0.95, 8), np.linspace(0.05, 0.95, 8)), -1).reshape(-1, 2)

# As AEPsych's IndependentGPsModel configs are written: models and generators by class or alias section.
MULTI = """
[common]
parnames = [x0, x1]
stimuli_per_trial = 1
outcome_types = [binary, continuous]
outcome_names = [detected, rating]
strategy_names = [init_strat, opt_strat]
seed = 4

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
min_asks = 12

[opt_strat]
generator = IndependentOptimizeAcqfGenerator
model = IndependentGPsModel
min_asks = 24

[IndependentGPsModel]
models = [GPClassificationModel, RatingModel]
[RatingModel]
class = GPRegressionModel

[IndependentOptimizeAcqfGenerator]
generators = [DetectGen, RatingGen]
[DetectGen]
class = OptimizeAcqfGenerator
acqf = MCPosteriorVariance
[RatingGen]
class = OptimizeAcqfGenerator
acqf = qUpperConfidenceBound
[qUpperConfidenceBound]
beta = 4.0
"""


def test_config_maps_models_and_generators_per_outcome() -> None:
    spec = parse_config(MULTI)
    phase = spec.phases[1]
    assert phase.model == INDEPENDENT and phase.is_model_based and spec.warnings == ()
    assert [(p.section, p.model, p.acqf) for p in phase.parts] == [
        ("GPClassificationModel", "GPClassificationModel", "MCPosteriorVariance"),
        ("RatingModel", "GPRegressionModel", "qUpperConfidenceBound"),
    ]
    assert phase.parts[1].generator_options["beta"] == 4.0
    lognormal = parse_config(
        MULTI.replace(
            "class = GPRegressionModel",
            "class = GPRegressionModel\nmean_covar_factory = default_mean_covar_factory\n[default_mean_covar_factory]\nlengthscale_prior = lognormal",
        )
    )
    assert lognormal.phases[1].parts[1].model_options.get("factory") == "default"  # a part's factory options are honoured


@pytest.mark.parametrize(
    ("old", "new", "section", "key"),
    [
        ("models = [GPClassificationModel, RatingModel]", "models = [GPClassificationModel]", "IndependentGPsModel", "models"),
        (
            "models = [GPClassificationModel, RatingModel]",
            "models = [RatingModel, GPClassificationModel]",
            "IndependentGPsModel",
            "models",
        ),
        (
            "models = [GPClassificationModel, RatingModel]",
            "models = [GPClassificationModel, Nope]",
            "IndependentGPsModel",
            "models",
        ),
        ("class = GPRegressionModel", "class = PairwiseProbitModel", "RatingModel", "class"),
        ("generators = [DetectGen, RatingGen]", "generators = [DetectGen]", "IndependentOptimizeAcqfGenerator", "generators"),
        ("acqf = qUpperConfidenceBound", "acqf = BernoulliMCMutualInformation", "RatingGen", "acqf"),
        ("class = OptimizeAcqfGenerator\nacqf = MCPosteriorVariance", "class = SobolGenerator", "DetectGen", "class"),
        ("acqf = MCPosteriorVariance", "acqf = MCLevelSetEstimation", "MCLevelSetEstimation", "target"),
        (
            "generator = IndependentOptimizeAcqfGenerator",
            "generator = OptimizeAcqfGenerator\nacqf = MCPosteriorVariance",
            "opt_strat",
            "generator",
        ),
        ("model = IndependentGPsModel", "model = GPClassificationModel", "opt_strat", "model"),
        (
            "class = GPRegressionModel",
            "class = GPRegressionModel\ninducing_point_method = KMeans",
            "RatingModel",
            "inducing_point_method",
        ),
        (
            "class = GPRegressionModel",
            "class = GPRegressionModel\nmean_covar_factory = song_mean_covar_factory",
            "RatingModel",
            "mean_covar_factory",
        ),
    ],
)
def test_bad_independent_configs_are_refused_naming_the_key(old: str, new: str, section: str, key: str) -> None:
    assert old in MULTI
    with pytest.raises(ConfigError) as refused:
        parse_config(MULTI.replace(old, new))
    assert (refused.value.section, refused.value.key) == (section, key), str(refused.value)


def test_independent_generator_points_in_bounds_and_parts_take_turns() -> None:
    rng = np.random.default_rng(1)
    X = rng.random((20, 2))
    Y = np.array([[r["detected"], r["rating"]] for r in (respond(rng, x) for x in X)])
    spec = ModelSpec(INDEPENDENT, 2, parts=(ModelSpec("GPClassificationModel", 2), ModelSpec("GPRegressionModel", 2)))
    gen = GeneratorSpec(
        "",
        parts=(
            GeneratorSpec("MCPosteriorVariance", {"restarts": 2, "samps": 64}),
            GeneratorSpec("qUpperConfidenceBound", {"restarts": 2, "samps": 64}),
        ),
    )
    out = jobs.generate(GenerateJob(spec, gen, TrainingData(X, Y), 3, seed=5, fixed={0: 0.3}))
    assert out.points.shape == (3, 2) and np.all((out.points >= 0) & (out.points <= 1)) and np.all(out.points[:, 0] == 0.3)
    assert len({tuple(p) for p in out.points.round(6)}) == 3  # later points see the earlier ones pending
    assert (
        part_state(out.state, 0, "GPClassificationModel") is not None
        and part_state(out.state, 1, "GPRegressionModel") is not None
    )
    again = jobs.generate(GenerateJob(spec, gen, TrainingData(X, Y), 3, seed=5, fixed={0: 0.3}, warm_state=out.state))
    assert again.points.shape == (3, 2)
    with pytest.raises(ValueError, match="binary"):
        jobs.generate(GenerateJob(spec, gen, TrainingData(X, Y[:, ::-1]), 1, seed=5))


def _grpc_trials(client: pc.Client, sid: int, rng: np.random.Generator, n: int) -> None:
    for _ in range(n):
        trial = client.ask(strategy_id=sid).trials[0]
        x = np.array([float(trial.params["x0"]), float(trial.params["x1"])])
        assert np.all((x >= 0) & (x <= 1))
        client.tell(trial_id=trial.trial_id, outcome=respond(rng, x), strategy_id=sid)


@pytest.mark.slow
def test_two_outcomes_through_grpc_kill_restart_and_aepsych_protocol(tmp_path: Path) -> None:
    db, log = str(tmp_path / "multi.db"), tmp_path / "server.log"
    rng = np.random.default_rng(8)
    proc = spawn_server(db, log, "--workers", "1")  # speculation on (the default)
    try:
        with pc.Client(proc.address, timeout=120) as client:
            configured = client.configure(config_str=MULTI, config_name="multi")
            assert configured.warnings == []
            sid = configured.strategy_id
            _grpc_trials(client, sid, rng, 18)
            pending = client.ask(strategy_id=sid).trials[0]
            with pytest.raises(pc.InvalidArgumentError) as refused:
                client.tell(trial_id=pending.trial_id, outcome={"detected": 1}, strategy_id=sid)
            assert refused.value.field == "outcomes" and "'rating'" in str(refused.value)
            x = np.array([float(pending.params["x0"]), float(pending.params["x1"])])
            client.tell(trial_id=pending.trial_id, outcome=respond(rng, x), strategy_id=sid)
        proc.kill()
        aepsych_port = free_port()
        proc = spawn_server(db, log, "--workers", "1", "--aepsych-port", str(aepsych_port), port=proc.port)
        aep = Raw(aepsych_port)  # AEPsych's JSON/TCP protocol: a tell's outcome is {name: value}
        aep.sock.settimeout(120)
        try:
            assert aep.call({"type": "resume", "message": {"name": "multi"}}) == {"strat_id": sid}
            for _ in range(17):
                config = aep.call({"type": "ask", "message": {}})["config"]
                x = np.array([config["x0"][0], config["x1"][0]])
                told = aep.call({"type": "tell", "message": {"config": config, "outcome": respond(rng, x)}})
                assert told == {"trials_recorded": 1, "model_data_added": 1}
            grid = {"x0": GRID[:, 0].tolist(), "x1": GRID[:, 1].tolist()}
            wire = aep.call(
                {
                    "type": "query",
                    "message": {"query_type": "prediction", "x": grid, "probability_space": True, "outcome": "detected"},
                }
            )
        finally:
            aep.close()
        with pc.Client(proc.address, timeout=120) as client:
            info = client.info(strategy_id=sid)
            assert info.current_strat_name == "opt_strat" and info.current_strat_data_pts == 36
            points = [{"x0": float(a), "x1": float(b)} for a, b in GRID]
            detected = client.query("prediction", probability_space=True, x=points, strategy_id=sid, outcome="detected")
            rated = client.query("prediction", x=points, strategy_id=sid, outcome="rating")
            first = client.query("prediction", probability_space=True, x=points, strategy_id=sid)
            with pytest.raises(pc.InvalidArgumentError) as unknown:
                client.query("max", strategy_id=sid, outcome="nope")
            assert unknown.value.field == "outcome"
    finally:
        proc.kill()
    assert detected.outcome == "detected" and rated.outcome == "rating" and first.outcome == "detected"
    np.testing.assert_allclose(wire["y"], detected.y, atol=1e-9)  # both protocols, one model
    np.testing.assert_allclose(first.y, detected.y, atol=1e-9)
    p_error = float(np.abs(np.array(detected.y) - scipy.stats.norm.cdf(detect_latent(GRID))).mean())
    r_error = float(np.abs(np.array(rated.y) - rating(GRID)).mean())
    r_constant = float(np.abs(rating(GRID) - rating(GRID).mean()).mean())
    print(
        f"two outcomes, 36 trials: detected mean |p error| {p_error:.3f}; rating MAE {r_error:.3f} (constant answer {r_constant:.3f})"
    )
    assert p_error < 0.12
    assert r_error < 0.5 * r_constant
