"""AEPsych's other generators: EpsilonGreedyGenerator, AcqfGridSearchGenerator, AcqfThompsonSamplerGenerator
and SampleAroundPointsGenerator — in-bounds points for each model they support, their documented choice
rules, and a Sobol -> model run through the server with speculation, SIGKILL and restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import observers as ob
import psyserve_client as pc
from conftest import spawn_server
from psyserve.compute import GenerateJob, GeneratorSpec, ModelSpec, TrainingData
from psyserve.compute.factory import build_acquisition
from psyserve.compute.jobs import generate
from psyserve.compute.models import fit_model
from psyserve.compute.optimize import _sobol_points, generate_points
from psyserve.config import ConfigError, parse_config

RUN = """
[common]
parnames = [c, a]
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [around, eps, grid, ts]
target = 0.75
seed = 3

[c]
par_type = continuous
lower_bound = -1
upper_bound = 1
[a]
par_type = continuous
lower_bound = -1
upper_bound = 1

[around]
generator = SampleAroundPointsGenerator
points = [[0, 0], [0.9, -0.9]]
window = [0.2, 0.3] # half-widths per parameter
samples_per_point = 4

[eps]
generator = EpsilonGreedyGenerator
model = GPClassificationModel
min_asks = 4
[EpsilonGreedyGenerator]
epsilon = 0.5
[OptimizeAcqfGenerator]
acqf = MCLevelSetEstimation

[grid]
generator = AcqfGridSearchGenerator
model = GPClassificationModel
acqf = BernoulliMCMutualInformation
min_asks = 3
[AcqfGridSearchGenerator]
samps = 256

[ts]
generator = AcqfThompsonSamplerGenerator
model = GPClassificationModel
acqf = MCPosteriorVariance
min_asks = 3
"""


def test_configs_parse_and_sample_around_points_stays_in_its_windows() -> None:
    spec = parse_config(RUN)
    around, eps, grid, ts = spec.phases
    assert around.generator == "ManualGenerator" and around.shuffle and len(around.manual_points) == 8
    for i, (stim,) in enumerate(around.manual_points):
        centre = (0.0, 0.0) if i < 4 else (0.9, -0.9)
        assert abs(stim[0] - centre[0]) <= 0.2 + 1e-12 and abs(stim[1] - centre[1]) <= 0.3 + 1e-12
        assert -1 <= stim[0] <= 1 and -1 <= stim[1] <= 1
    # the second window is clipped at the bound c <= 1: its points spread over [0.7, 1], not past it
    assert max(stim[0] for (stim,) in around.manual_points[4:]) <= 1.0
    assert len({stim for (stim,) in around.manual_points}) == 8
    assert eps.is_model_based and eps.acqf == "MCLevelSetEstimation"
    assert eps.generator_options["method"] == "epsilon_greedy" and eps.generator_options["epsilon"] == 0.5
    assert grid.generator_options["method"] == "grid" and grid.generator_options["samps"] == 256
    assert ts.generator_options["method"] == "thompson"
    assert spec.warnings == ()
    bad = [
        (RUN.replace("epsilon = 0.5", "epsilon = 1.5"), "epsilon"),
        (RUN.replace("epsilon = 0.5", "epsilon = 0.5\nsubgenerator = AcqfGridSearchGenerator"), "subgenerator"),
        (RUN.replace("window = [0.2, 0.3] # half-widths per parameter\n", ""), "window"),
        (RUN.replace("window = [0.2, 0.3]", "window = [0.2, 0.3, 0.1]"), "window"),
        (RUN.replace("samples_per_point = 4\n", ""), "samples_per_point"),
        (RUN.replace("points = [[0, 0], [0.9, -0.9]]", "points = [[0, 0], [3, 0]]"), "points"),
    ]
    for text, key in bad:
        with pytest.raises(ConfigError) as err:
            parse_config(text)
        assert err.value.key == key, str(err.value)


def _data(kind: str, rng: np.random.Generator) -> tuple[ModelSpec, TrainingData]:
    if kind == "PairwiseProbitModel":
        X = rng.random((12, 2, 2))
        f = ob.novel_detection(2 * X.reshape(-1, 2) - 1).reshape(12, 2)
        return ModelSpec(kind, 2), TrainingData(X, (f[:, 0] > f[:, 1]).astype(float))
    X = rng.random((14, 2))
    f = ob.novel_detection(2 * X - 1)
    y = ob.sample(f, rng) if kind == "GPClassificationModel" else f + 0.1 * rng.standard_normal(14)
    return ModelSpec(kind, 2), TrainingData(X, y)


def _unordered_pairs(points: np.ndarray) -> np.ndarray:
    """``n x 2 x d`` pairs with the two stimuli of each pair in lexicographic order."""
    out = points.copy()
    for i, (a, b) in enumerate(points):
        if tuple(b) < tuple(a):
            out[i] = [b, a]
    return out


@pytest.mark.parametrize(
    ("kind", "acqf"),
    [
        ("GPClassificationModel", "MCLevelSetEstimation"),
        ("GPClassificationModel", "BernoulliMCMutualInformation"),
        ("GPRegressionModel", "qUpperConfidenceBound"),
        ("PairwiseProbitModel", "PairwiseMCPosteriorVariance"),
    ],
)
def test_each_method_gives_valid_points_by_its_rule(kind: str, acqf: str) -> None:
    spec, data = _data(kind, np.random.default_rng(0))
    shape = (3, 2, 2) if kind == "PairwiseProbitModel" else (3, 2)
    fitted = fit_model(spec, data.X, data.y)
    for method in ("grid", "thompson", "epsilon_greedy"):
        gen = GeneratorSpec(acqf, {"method": method, "samps": 128, "epsilon": 0.5, "target": 0.75})
        fixed = {} if kind == "PairwiseProbitModel" else {1: 0.25}
        out = generate_points(fitted, gen, 3, fixed, 7)
        assert out.shape == shape and np.all((out >= 0) & (out <= 1)), (method, out)
        if fixed:
            assert np.all(out[:, 1] == 0.25)
        torch.manual_seed(12345)  # the global RNG's state must not matter: the seed argument alone decides
        again = generate_points(fitted, gen, 3, fixed, 7)
        if kind == "PairwiseProbitModel":
            # a pair and its mirror image score the same up to MC rounding: compare pairs as unordered
            np.testing.assert_allclose(_unordered_pairs(out), _unordered_pairs(again), rtol=0, atol=1e-8)
        else:
            np.testing.assert_allclose(out, again, rtol=0, atol=1e-8)  # repeats with the seed (MC acquisitions: to rounding)
        if method == "grid":  # the 3 best of the Sobol grid: nothing on the grid scores higher
            a = build_acquisition(acqf, fitted, gen, 7)
            q = 2 if kind == "PairwiseProbitModel" else 1
            grid = _sobol_points(2, 128 * q, 7, fixed).reshape(128, q, 2)
            with torch.no_grad():
                values = a(grid).numpy()
                chosen = a(torch.as_tensor(out).reshape(3, q, 2)).numpy()
            assert chosen.min() >= np.sort(values)[-3] - 1e-9
        if method == "thompson":  # drawn from the grid itself
            q = 2 if kind == "PairwiseProbitModel" else 1
            grid = _sobol_points(2, 128 * q, 7, fixed).reshape(128, q, 2).numpy()
            for p in out.reshape(3, q, 2):
                assert np.any(np.all(np.isclose(grid, p), axis=(1, 2)))


def test_epsilon_zero_and_one() -> None:
    spec, data = _data("GPClassificationModel", np.random.default_rng(1))
    plain = GeneratorSpec("MCLevelSetEstimation", {"target": 0.75})
    greedy0 = GeneratorSpec("MCLevelSetEstimation", {"target": 0.75, "method": "epsilon_greedy", "epsilon": 0.0})
    greedy1 = GeneratorSpec("MCLevelSetEstimation", {"target": 0.75, "method": "epsilon_greedy", "epsilon": 1.0})
    fitted = fit_model(spec, data.X, data.y)
    a = generate_points(fitted, plain, 1, {}, 5)
    b = generate_points(fitted, greedy0, 1, {}, 5)
    job = generate(GenerateJob(spec, greedy1, data, num_points=2, seed=5, fixed={0: 0.5})).points  # the job path
    assert job.shape == (2, 2) and np.all(job[:, 0] == 0.5) and np.all((job >= 0) & (job <= 1))
    np.testing.assert_array_equal(a, b)  # epsilon 0: the optimiser's point
    # epsilon 1: uniform points; over many seeds they cover the square (the optimiser's do not)
    pts = np.vstack([generate_points(fitted, greedy1, 1, {}, s) for s in range(24)])
    assert pts.std(0).min() > 0.2 and np.all((pts >= 0) & (pts <= 1))


@pytest.mark.slow
def test_generators_through_the_server_with_kill_and_restart(tmp_path: Path) -> None:
    db, log = str(tmp_path / "gen.db"), tmp_path / "server.log"
    rng = np.random.default_rng(4)
    seen: dict[str, list[tuple[float, float]]] = {}

    def run(client: pc.Client, sid: int, n: int) -> None:
        for _ in range(n):
            trial = client.ask(strategy_id=sid).trials[0]
            c, a = float(trial.params["c"]), float(trial.params["a"])
            assert -1 <= c <= 1 and -1 <= a <= 1
            seen.setdefault(trial.phase_name, []).append((c, a))
            p = ob.probability(ob.novel_detection(np.array([[c, a]])))[0]
            client.tell(trial_id=trial.trial_id, outcome=int(rng.random() < p), strategy_id=sid)

    proc = spawn_server(db, log, "--workers", "1")  # speculation on (the default)
    try:
        with pc.Client(proc.address, timeout=120) as client:
            sid = client.configure(config_str=RUN).strategy_id
            run(client, sid, 10)  # 8 around the reference points, then epsilon-greedy
        proc.kill()
        proc = spawn_server(db, log, "--workers", "1", port=proc.port)
        with pc.Client(proc.address, timeout=120) as client:
            run(client, sid, 8)
            info = client.info(strategy_id=sid)
    finally:
        proc.kill()
    assert [len(seen.get(k, [])) for k in ("around", "eps", "grid", "ts")] == [8, 4, 3, 3]
    assert info.current_strat_name == "ts"
