"""OrdinalGPModel (Likert outcomes): the likelihood's numerics against SciPy and Monte Carlo, a 5-level
simulated observer's level probabilities recovered through the real server (gRPC, then AEPsych's
JSON/TCP protocol after a SIGKILL + restart, speculation on), and bad settings refused naming the key."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from gpytorch.distributions import MultivariateNormal
from test_aepsych_wire import Raw

import psyserve_client as pc
from conftest import free_port, spawn_server
from psyserve.compute import jobs
from psyserve.compute.contract import ORDINAL, GenerateJob, GeneratorSpec, ModelSpec, QueryJob, TrainingData
from psyserve.compute.ordinal import OrdinalLikelihood, expected_level, level_log_prob, level_probabilities
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


#: the simulated observer: latent f(x) and the cut-points between its 5 levels (0..4)
CUTPOINTS = np.array([-1.2, -0.4, 0.4, 1.2])


def latent(x: np.ndarray) -> np.ndarray:
    x = np.atleast_2d(x)
    return 3.0 * (x[:, 0] - 0.5) + 0.8 * np.sin(2.0 * math.pi * x[:, 1])


def true_levels(x: np.ndarray) -> np.ndarray:
    """P(y = k | x) of the observer (probit noise, unit variance): n x 5."""
    edges = np.concatenate([[-np.inf], CUTPOINTS, [np.inf]])
    cdf = scipy.stats.norm.cdf(edges[None, :] - latent(x)[:, None])
    return np.diff(cdf, axis=1)


def respond(rng: np.random.Generator, x: np.ndarray) -> int:
    return int(rng.choice(5, p=true_levels(x)[0]))


GRID = np.stack(np.meshgrid(np.linspace(0.05, 0.95, 10), np.linspace(0.05, 0.95, 10)), -1).reshape(-1, 2)

LIKERT = """
[common]
parnames = [contrast, orientation] # as AEPsych's docs write it
stimuli_per_trial = 1
outcome_types = [ordinal]
strategy_names = [init_strat, opt_strat]
seed = 1

[contrast]
par_type = continuous
lower_bound = 0
upper_bound = 1

[orientation]
par_type = continuous
lower_bound = 0
upper_bound = 1

[init_strat]
generator = SobolGenerator
min_asks = 12

[opt_strat]
generator = OptimizeAcqfGenerator
model = OrdinalGPModel
min_asks = 28

[OrdinalGPModel]
likelihood = OrdinalLikelihood
[OrdinalLikelihood]
n_levels = 5 # a 5-point Likert scale

[OptimizeAcqfGenerator]
acqf = MCPosteriorVariance
[MCPosteriorVariance]
objective = IdentityMCObjective # the variance of the latent f
"""


# ----------------------------------------------------------------------------- numerics


def test_level_log_prob_matches_scipy_and_has_finite_gradients() -> None:
    cut = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64, requires_grad=True)
    f = torch.tensor([-40.0, -3.0, 0.2, 1.1, 4.0, 40.0], dtype=torch.float64, requires_grad=True)
    for k in range(4):
        levels = torch.full((6,), k, dtype=torch.long)
        got = level_log_prob(f, levels, cut)
        edges = np.concatenate([[-np.inf], cut.detach().numpy(), [np.inf]])
        fn = f.detach().numpy()
        want = np.log(np.clip(scipy.stats.norm.cdf(edges[k + 1] - fn) - scipy.stats.norm.cdf(edges[k] - fn), 1e-300, None))
        finite = want > -600  # where the difference of CDFs is representable at all
        np.testing.assert_allclose(got.detach().numpy()[finite], want[finite], rtol=1e-9, atol=1e-12)
        assert torch.all(torch.isfinite(got))
        got.sum().backward()
        assert torch.all(torch.isfinite(f.grad)) and torch.all(torch.isfinite(cut.grad))  # type: ignore[arg-type]
        f.grad, cut.grad = None, None


def test_level_probabilities_and_expected_level_against_monte_carlo() -> None:
    cut = torch.tensor([0.0, 0.5, 1.3, 2.0], dtype=torch.float64)
    mean = torch.tensor([-0.5, 0.8, 2.5], dtype=torch.float64)
    var = torch.tensor([0.3, 1.5, 0.05], dtype=torch.float64)
    probs = level_probabilities(mean, var, cut).numpy()
    rng = np.random.default_rng(0)
    f = mean.numpy()[:, None] + np.sqrt(var.numpy())[:, None] * rng.standard_normal((3, 400_000))
    y = np.searchsorted(cut.numpy(), f + rng.standard_normal(f.shape))  # level = number of cut-points below
    mc = np.stack([(y == k).mean(1) for k in range(5)], 1)
    np.testing.assert_allclose(probs, mc, atol=4e-3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(expected_level(mean, var, cut).numpy(), (probs * np.arange(5)).sum(1), atol=1e-12)


def test_expected_log_prob_equals_gpytorch_generic_quadrature() -> None:
    lik = OrdinalLikelihood(5).to(torch.float64)
    with torch.no_grad():
        lik.raw_cutpoint_deltas.copy_(torch.tensor([0.3, -0.2, 1.0]))
    dist = MultivariateNormal(
        torch.tensor([-1.0, 0.4, 1.7, 3.0], dtype=torch.float64),
        torch.diag(torch.tensor([0.2, 0.9, 0.5, 0.1], dtype=torch.float64)),
    )
    y = torch.tensor([0.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    ours = lik.expected_log_prob(y, dist)
    generic = lik.quadrature(lambda f: lik.forward(f).log_prob(y.long()), dist)  # GPyTorch's own 20-point rule
    torch.testing.assert_close(ours, generic, rtol=1e-6, atol=1e-8)


def test_fit_recovers_level_probabilities_and_every_acquisition_gives_valid_points() -> None:
    rng = np.random.default_rng(4)
    X = rng.random((80, 2))
    y = np.array([respond(rng, x) for x in X], dtype=float)
    spec = ModelSpec(ORDINAL, 2, {"n_levels": 5})
    result = jobs.query(QueryJob(spec, TrainingData(X, y), None, "prediction", True, GRID, None, {}, 0))
    assert result.level_probabilities is not None and result.level_probabilities.shape == (len(GRID), 5)
    error = float(np.abs(result.level_probabilities - true_levels(GRID)).mean())
    expected_error = float(np.abs(result.probability - (true_levels(GRID) * np.arange(5)).sum(1)).mean())
    # the best constant answer (the observer's level frequencies over the grid) for scale
    baseline = float(np.abs(true_levels(GRID) - true_levels(GRID).mean(0)).mean())
    print(
        f"80 random trials: mean |P(level) error| {error:.3f} (constant answer {baseline:.3f}), mean |E[level] error| {expected_error:.3f}"
    )
    assert error < 0.6 * baseline and error < 0.08 and expected_error < 0.45  # AEPsych 0.8 on these data: 0.070
    for acqf in ("MCPosteriorVariance", "qUpperConfidenceBound", "qNoisyExpectedImprovement", "qLogNoisyExpectedImprovement"):
        out = jobs.generate(
            GenerateJob(
                spec, GeneratorSpec(acqf, {"restarts": 2, "samps": 64}), TrainingData(X[:30], y[:30]), 2, 1, fixed={1: 0.25}
            )
        )
        assert out.points.shape == (2, 2) and np.all((out.points >= 0) & (out.points <= 1)), acqf
        assert np.all(out.points[:, 1] == 0.25)
        assert out.level_probabilities is not None and np.allclose(out.level_probabilities.sum(1), 1.0)
    with pytest.raises(ValueError, match=r"0\.\.4"):
        jobs.fit_state(spec, TrainingData(X[:3], np.array([0.0, 5.0, 1.0])), 0)


# ----------------------------------------------------------------------------- through the server


def _grpc_trials(client: pc.Client, sid: int, rng: np.random.Generator, n: int) -> None:
    for _ in range(n):
        trial = client.ask(strategy_id=sid).trials[0]
        x = np.array([float(trial.params["contrast"]), float(trial.params["orientation"])])
        assert np.all((x >= 0) & (x <= 1))
        client.tell(trial_id=trial.trial_id, outcome=respond(rng, x), strategy_id=sid)


@pytest.mark.slow
def test_likert_observer_through_grpc_kill_restart_and_aepsych_protocol(tmp_path: Path) -> None:
    db, log = str(tmp_path / "ordinal.db"), tmp_path / "server.log"
    rng = np.random.default_rng(7)
    proc = spawn_server(db, log, "--workers", "1")  # speculation on (the default)
    try:
        with pc.Client(proc.address, timeout=120) as client:
            configured = client.configure(config_str=LIKERT, config_name="likert")
            assert configured.warnings == []
            sid = configured.strategy_id
            _grpc_trials(client, sid, rng, 17)  # Sobol, then model trials with speculated answers
            # three trials where the participant takes a while and answers the model's likeliest level:
            # the next trial was computed ahead for that answer (speculation on ordinal outcomes)
            precomputed = []
            trial = client.ask(strategy_id=sid).trials[0]
            for _ in range(3):
                here = {"contrast": trial.params["contrast"], "orientation": trial.params["orientation"]}
                levels = (
                    client.query("prediction", probability_space=True, x=[here], strategy_id=sid)
                    .predictions[0]
                    .level_probabilities
                )
                time.sleep(4.0)  # the participant looks and responds
                client.tell(trial_id=trial.trial_id, outcome=int(np.argmax(levels)), strategy_id=sid)
                ask = client.ask(strategy_id=sid)
                precomputed.append(ask.precomputed)
                trial = ask.trials[0]
            client.tell(
                trial_id=trial.trial_id,
                outcome=respond(rng, np.array([float(trial.params["contrast"]), float(trial.params["orientation"])])),
                strategy_id=sid,
            )
            assert any(precomputed), precomputed
            with pytest.raises(pc.InvalidArgumentError) as refused:
                client.tell(config={"contrast": 0.5, "orientation": 0.5}, outcome=5, strategy_id=sid)
            assert refused.value.field == "outcomes[0].value" and "0..4" in str(refused.value)
        proc.kill()
        aepsych_port = free_port()
        proc = spawn_server(db, log, "--workers", "1", "--aepsych-port", str(aepsych_port), port=proc.port)
        aep = Raw(aepsych_port)  # AEPsych's JSON/TCP protocol, as its clients speak it
        aep.sock.settimeout(120)
        try:
            assert aep.call({"type": "resume", "message": {"name": "likert"}}) == {"strat_id": sid}
            for _ in range(19):  # the rest over AEPsych's protocol
                config = aep.call({"type": "ask", "message": {}})["config"]
                x = np.array([config["contrast"][0], config["orientation"][0]])
                told = aep.call({"type": "tell", "message": {"config": config, "outcome": respond(rng, x)}})
                assert told == {"trials_recorded": 1, "model_data_added": 1}
            grid = {"contrast": GRID[:, 0].tolist(), "orientation": GRID[:, 1].tolist()}
            query = {"query_type": "prediction", "x": grid, "probability_space": True}
            wire = aep.call({"type": "query", "message": query})
        finally:
            aep.close()
        with pc.Client(proc.address, timeout=120) as client:
            info = client.info(strategy_id=sid)
            assert info.current_strat_name == "opt_strat" and info.current_strat_data_pts == 40
            pred = client.query(
                "prediction", probability_space=True, x=[dict(zip(("contrast", "orientation"), g)) for g in GRID], strategy_id=sid
            )
            top = client.query("max", probability_space=True, strategy_id=sid)
    finally:
        proc.kill()
    levels = np.array([p.level_probabilities for p in pred.predictions])
    assert levels.shape == (len(GRID), 5)
    np.testing.assert_allclose(np.array(wire["level_probabilities"]), levels, atol=1e-9)  # both protocols, one model
    np.testing.assert_allclose(wire["y"], pred.y, atol=1e-9)
    truth = true_levels(GRID)
    error = float(np.abs(levels - truth).mean())
    expected = (truth * np.arange(5)).sum(1)
    level_error = float(np.abs(np.array(pred.y) - expected).mean())
    print(
        f"Likert, 40 trials through the server: mean |P(level) error| {error:.3f}, mean |E[level] error| {level_error:.3f}, max E[level] {top.y[0]:.2f}"
    )
    constant = float(np.abs(truth - truth.mean(0)).mean())  # the best constant answer: 0.124
    constant_level = float(np.abs(expected - expected.mean()).mean())  # 0.85
    assert error < 0.115 and error < 0.95 * constant  # seed 1: 0.083
    # one run at a fixed seed (config seed 1 with torch's Sobol start since 2026-12-02: 0.355; seed 3
    # gave 0.257 with SciPy's start and 0.534 with torch's, so this bound is about one run, not every seed)
    assert level_error < 0.45 and level_error < 0.5 * constant_level
    assert (
        top.y[0] > 2.7 and float(top.x["contrast"][0]) > 0.7
    )  # the highest expected level: at high contrast (truth 3.5 at the corner)


# ----------------------------------------------------------------------------- config


def test_aepsych_config_maps_to_the_model_and_its_levels() -> None:
    spec = parse_config(LIKERT)
    opt = spec.phases[1]
    assert opt.model == "OrdinalGPModel" and opt.model_options["n_levels"] == 5 and spec.n_levels == 5
    assert spec.warnings == ()
    seven = parse_config(LIKERT.replace("n_levels = 5 # a 5-point Likert scale", "n_levels = 7"))
    assert seven.n_levels == 7
    default = parse_config(
        LIKERT.replace("likelihood = OrdinalLikelihood\n[OrdinalLikelihood]\nn_levels = 5 # a 5-point Likert scale\n", "")
    )
    assert default.n_levels == 5  # AEPsych's default


@pytest.mark.parametrize(
    ("old", "new", "section", "key"),
    [
        ("n_levels = 5 # a 5-point Likert scale", "n_levels = 1", "OrdinalLikelihood", "n_levels"),
        ("acqf = MCPosteriorVariance", "acqf = MCLevelSetEstimation\ntarget = 0.75", "opt_strat", "acqf"),
        ("acqf = MCPosteriorVariance", "acqf = BernoulliMCMutualInformation", "opt_strat", "acqf"),
        ("objective = IdentityMCObjective", "objective = ProbitObjective", "MCPosteriorVariance", "objective"),
        ("model = OrdinalGPModel", "model = GPClassificationModel", "opt_strat", "model"),
        ("outcome_types = [ordinal]", "outcome_types = [binary]", "opt_strat", "model"),
        ("likelihood = OrdinalLikelihood", "likelihood = BernoulliLikelihood", "OrdinalGPModel", "likelihood"),
    ],
)
def test_bad_ordinal_configs_are_refused_naming_the_key(old: str, new: str, section: str, key: str) -> None:
    assert old in LIKERT
    with pytest.raises(ConfigError) as refused:
        parse_config(LIKERT.replace(old, new))
    assert (refused.value.section, refused.value.key) == (section, key), str(refused.value)
