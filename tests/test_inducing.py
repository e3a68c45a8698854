"""Inducing-point allocators (AEPsych's `inducing_point_method`, `inducing_size`): each gives the right
number of in-bounds, repeatable points; configs name and check them; each runs through the model
phase of a real server and its fitted model uses the allocator's points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import psyserve_client as pc
from conftest import spawn_server
from psyserve.compute.contract import INDUCING_ALLOCATORS, ModelSpec
from psyserve.compute.inducing import allocate_inducing_points
from psyserve.compute.kernels import make_kernel
from psyserve.compute.models import fit_model
from psyserve.config import ConfigError, parse_config

FIXED = [[0.25, 0.5, 0.75], [0.9, 0.1, 0.5]]


def _points(method: str, X: torch.Tensor, k: int) -> torch.Tensor:
    opts = {"inducing_points": json.dumps(FIXED), "inducing_main_allocator": "KMeansAllocator"}
    return allocate_inducing_points(method, X, k, make_kernel(X.shape[-1]), opts)


@pytest.mark.parametrize("method", INDUCING_ALLOCATORS)
def test_each_allocator_gives_the_right_number_of_in_bounds_points(method: str) -> None:
    X = torch.as_tensor(np.random.default_rng(0).random((40, 3)))
    X = torch.cat([X, X[:5]])  # duplicates count once
    for k in (8, 100):
        Z = _points(method, X, k)
        expected = {
            "FixedAllocator": len(FIXED),
            "FixedPlusAllocator": min(k, 40) + len(FIXED),
            "SobolAllocator": k,
        }.get(method, min(k, 40))
        assert Z.shape == (expected, 3), (method, k)
        assert bool(((Z >= 0) & (Z <= 1)).all())
        assert len(torch.unique(Z, dim=0)) == expected  # no repeated inducing point
        assert torch.equal(Z, _points(method, X, k))  # repeatable: a refit after a restart agrees
    if method in ("GreedyVarianceReduction", "KMeansAllocator"):  # chosen from (or among) the data
        Z = _points(method, X, 8)
        spread = torch.cdist(Z, Z) + torch.eye(8) * 9
        assert float(spread.min()) > 0.05  # spread out, not clumped on a few trials
    if method == "FixedAllocator":
        np.testing.assert_allclose(_points(method, X, 8).numpy(), FIXED)


def test_no_data_gives_a_usable_prior_model() -> None:
    for method in INDUCING_ALLOCATORS:
        Z = _points(method, torch.zeros((0, 3), dtype=torch.float64), 10)
        assert Z.shape[0] >= 1 and bool(((Z >= 0) & (Z <= 1)).all())


CONFIG = """
[common]
parnames = [a, b]
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [init, opt]
target = 0.75
seed = 3
[a]
par_type = continuous
lower_bound = 0
upper_bound = 10
[b]
par_type = continuous
lower_bound = -1
upper_bound = 1
[init]
generator = SobolGenerator
min_asks = 8
[opt]
generator = OptimizeAcqfGenerator
model = GPClassificationModel
acqf = MCLevelSetEstimation
min_asks = 3
[GPClassificationModel]
inducing_size = 6
{model}
{extra}
"""


def _config(model: str = "", extra: str = "") -> str:
    return CONFIG.format(model=model, extra=extra)


def test_config_reads_allocators_and_their_sections() -> None:
    opt = parse_config(_config("inducing_point_method = KMeansAllocator")).phases[1]
    assert opt.model_options == {"inducing_size": 6, "inducing_point_method": "KMeansAllocator"}
    fixed = parse_config(
        _config("inducing_point_method = FixedAllocator", "[FixedAllocator]\npoints = [[5, 0], [10, -1]]  # raw units")
    ).phases[1]
    assert json.loads(str(fixed.model_options["inducing_points"])) == [[0.5, 0.5], [1.0, 0.0]]  # unit cube
    plus = parse_config(
        _config(
            "inducing_point_method = FixedPlusAllocator",
            "[FixedPlusAllocator]\npoints = [[2.5, 0.5]]\nmain_allocator = SobolAllocator",
        )
    ).phases[1]
    assert plus.model_options["inducing_main_allocator"] == "SobolAllocator"
    assert json.loads(str(plus.model_options["inducing_points"])) == [[0.25, 0.75]]


@pytest.mark.parametrize(
    ("text", "section", "key", "says"),
    [
        (
            _config("inducing_point_method = KMeans"),
            "GPClassificationModel",
            "inducing_point_method",
            "unknown inducing-point allocator",
        ),
        (_config("inducing_point_method = FixedAllocator"), "FixedAllocator", "points", "needs points"),
        (
            _config("inducing_point_method = FixedAllocator", "[FixedAllocator]\npoints = [[11, 0]]"),
            "FixedAllocator",
            "points",
            "a",
        ),
        (
            _config(
                "inducing_point_method = FixedPlusAllocator", "[FixedPlusAllocator]\npoints = [[1, 0]]\nmain_allocator = Nope"
            ),
            "FixedPlusAllocator",
            "main_allocator",
            "expected one of",
        ),
    ],
)
def test_config_refuses_bad_allocator_settings(text: str, section: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert (err.value.section, err.value.key) == (section, key), str(err.value)
    assert says in str(err.value)


@pytest.mark.parametrize(
    ("model", "outcome", "extra"),
    [
        ("OrdinalGPModel", "ordinal", ""),
        ("MonotonicProjectionGP", "binary", ""),
        ("VariationalGPModel", "continuous", ""),
        ("VariationalGPModel", "binary", "likelihood = BernoulliLikelihood"),
        ("SemiParametricGPModel", "binary", "stim_dim = 0"),
        ("HadamardSemiPModel", "binary", "stim_dim = 0"),
    ],
)
def test_every_variational_model_reads_an_allocator(model: str, outcome: str, extra: str) -> None:
    """AEPsych lets every variational model name its allocator: so does psyserve (and uses it, below)."""
    text = (
        _config("inducing_point_method = KMeansAllocator", "")
        .replace("[GPClassificationModel]", f"[{model}]\n{extra}")
        .replace("model = GPClassificationModel", f"model = {model}")
        .replace("outcome_types = [binary]", f"outcome_types = [{outcome}]")
        .replace("acqf = MCLevelSetEstimation", "acqf = MCPosteriorVariance")
    )
    opts = parse_config(text).phases[1].model_options
    assert opts["inducing_point_method"] == "KMeansAllocator" and opts["inducing_size"] == 6, opts


@pytest.mark.parametrize("kind", ["SemiParametricGPModel", "HadamardSemiPModel"])
def test_semi_parametric_models_use_the_allocated_contexts(kind: str) -> None:
    """As AEPsych's semi-parametric models: the allocator chooses among the full inputs, the slope and
    offset GPs take the chosen points' contexts (here dimension 0; intensity is dimension 1)."""
    rng = np.random.default_rng(2)
    X = rng.random((30, 2))
    y = (rng.random(30) < 0.5 + 0.4 * (X[:, 1] - 0.5)).astype(float)
    for method in ("KMeansAllocator", "SobolAllocator"):
        spec = ModelSpec(kind, 2, {"stim_dim": 1, "inducing_size": 5, "inducing_point_method": method})
        Z = torch.as_tensor(fit_model(spec, X, y).state.hyperparameters["__inducing__"], dtype=torch.float64)
        chosen = allocate_inducing_points(method, torch.as_tensor(X), 5, make_kernel(2))[:, [0]]
        assert Z.shape == (5, 1), (method, Z)
        torch.testing.assert_close(torch.sort(Z.reshape(-1)).values, torch.sort(chosen.reshape(-1)).values)


def test_other_models_refuse_an_allocator() -> None:
    text = (
        _config("inducing_point_method = SobolAllocator")
        .replace("model = GPClassificationModel", "model = GPRegressionModel")
        .replace("outcome_types = [binary]", "outcome_types = [continuous]")
        .replace("acqf = MCLevelSetEstimation", "acqf = qLogNoisyExpectedImprovement")
        .replace("[GPClassificationModel]", "[GPRegressionModel]")
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert (err.value.section, err.value.key) == ("GPRegressionModel", "inducing_point_method")
    assert "not supported for GPRegressionModel" in str(err.value)


@pytest.mark.parametrize("method", ["KMeansAllocator", "SobolAllocator"])
def test_fitted_model_uses_the_allocated_points(method: str) -> None:
    rng = np.random.default_rng(1)
    X = rng.random((20, 2))
    y = (rng.random(20) < X[:, 0]).astype(float)
    fitted = fit_model(ModelSpec("GPClassificationModel", 2, {"inducing_size": 7, "inducing_point_method": method}), X, y)
    assert fitted.model is not None
    Z = fitted.model.model.variational_strategy.inducing_points.detach()
    assert torch.equal(Z, allocate_inducing_points(method, torch.as_tensor(X), 7, make_kernel(2)))


@pytest.mark.slow
def test_each_allocator_runs_through_the_model_phase(tmp_path: Path) -> None:
    """Sobol -> model phase for a config with each allocator, on one server (speculation on)."""
    extras = {
        "FixedAllocator": "[FixedAllocator]\npoints = [[2, -0.5], [8, 0.5], [5, 0]]",
        "FixedPlusAllocator": "[FixedPlusAllocator]\npoints = [[2, -0.5]]\nmain_allocator = KMeansAllocator",
    }
    rng = np.random.default_rng(4)
    proc = spawn_server(str(tmp_path / "inducing.db"), tmp_path / "server.log", "--workers", "1")
    try:
        with pc.Client(proc.address, timeout=120) as client:
            for method in INDUCING_ALLOCATORS:
                text = _config(f"inducing_point_method = {method}", extras.get(method, ""))
                configured = client.configure(config_str=text)
                assert configured.warnings == [], (method, configured.warnings)
                sid = configured.strategy_id
                phases = []
                for _ in range(11):
                    trial = client.ask(strategy_id=sid).trials[0]
                    a, b = float(trial.params["a"]), float(trial.params["b"])
                    assert 0 <= a <= 10 and -1 <= b <= 1
                    phases.append(trial.phase_name)
                    client.tell(trial_id=trial.trial_id, outcome=int(rng.random() < a / 10), strategy_id=sid)
                assert phases.count("opt") == 3, (method, phases)
                pred = client.query(
                    "prediction", probability_space=True, x=[{"a": 1.0, "b": 0.0}, {"a": 9.0, "b": 0.0}], strategy_id=sid
                )
                assert all(0 <= p <= 1 for p in pred.y), method
    finally:
        proc.kill()
