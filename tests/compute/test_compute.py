"""Tests of psyserve.compute (models, acquisitions, jobs, observers) with real, seeded computations.
Exercises only the compute package's public API and helpers; must not start servers or touch other tests' state."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal, norm

import observers as ob
from psyserve.compute import (
    KNOWN_ACQFS,
    KNOWN_MODELS,
    GenerateJob,
    GenerateResult,
    GeneratorSpec,
    ModelSpec,
    ModelState,
    QueryJob,
    TrainingData,
    acqf_supports,
    fit_state,
    generate,
    query,
)
from psyserve.compute.bvn import bvn_excess
from psyserve.compute.lookahead import EAVC, GlobalMI
from psyserve.compute.models import fit_model

SERVER = Path(__file__).resolve().parents[2] / "server"
CLS, REG, PAIR = "GPClassificationModel", "GPRegressionModel", "PairwiseProbitModel"
N_TRAIN = 20


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run like a pool worker (one torch thread) so trajectories do not depend on the core count."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _utility(X: np.ndarray) -> np.ndarray:
    return -((X - 0.3) ** 2).sum(-1)


@pytest.fixture(scope="module")
def datasets() -> dict[str, TrainingData]:
    rng = np.random.default_rng(0)
    Xc = rng.random((N_TRAIN, 2))
    yc = ob.sample(ob.novel_detection(2 * Xc - 1), rng)
    yr = np.sin(5 * Xc[:, 0]) + Xc[:, 1] + 0.05 * rng.standard_normal(N_TRAIN)
    Xp = rng.random((N_TRAIN, 2, 2))
    yp = (_utility(Xp[:, 0]) > _utility(Xp[:, 1])).astype(float)
    return {CLS: TrainingData(Xc, yc), REG: TrainingData(Xc, yr), PAIR: TrainingData(Xp, yp)}


ACQF_CASES = [
    (CLS, "MCLevelSetEstimation"),
    (CLS, "EAVC"),
    (CLS, "GlobalMI"),
    (CLS, "GlobalSUR"),
    (CLS, "ApproxGlobalSUR"),
    (CLS, "LocalMI"),
    (CLS, "LocalSUR"),
    (CLS, "BernoulliMCMutualInformation"),
    (CLS, "MCPosteriorVariance"),
    (CLS, "qNoisyExpectedImprovement"),
    (CLS, "qLogNoisyExpectedImprovement"),
    (CLS, "qUCB"),
    (REG, "MCLevelSetEstimation"),
    (REG, "MCPosteriorVariance"),
    (REG, "qNoisyExpectedImprovement"),
    (REG, "qLogNoisyExpectedImprovement"),
    (REG, "UpperConfidenceBound"),
    (PAIR, "PairwiseMCPosteriorVariance"),
    (PAIR, "qNoisyExpectedImprovement"),
    (PAIR, "qLogNoisyExpectedImprovement"),
    (PAIR, "qUpperConfidenceBound"),
]


def _gen_options(kind: str) -> dict[str, float | int | str]:
    # smaller optimiser budget than the defaults: these tests check validity, not optimality
    base: dict[str, float | int | str] = {"restarts": 4, "samps": 256}
    if kind == CLS:
        return {**base, "target": 0.75, "objective": "ProbitObjective", "lookahead_points": 200}
    if kind == REG:
        return {**base, "target": 0.5}
    return base


def _check_points(points: np.ndarray, kind: str, num_points: int, fixed: dict[int, float]) -> None:
    shape = (num_points, 2, 2) if kind == PAIR else (num_points, 2)
    assert points.shape == shape
    assert points.dtype == np.float64
    assert np.all(np.isfinite(points)) and points.min() >= 0.0 and points.max() <= 1.0
    for i, v in fixed.items():
        assert np.all(points[..., i] == v)


@pytest.mark.parametrize(("kind", "acqf"), ACQF_CASES)
def test_each_acqf_gives_valid_points(kind: str, acqf: str, datasets: dict[str, TrainingData]) -> None:
    assert acqf_supports(kind, acqf)
    spec, gen = ModelSpec(kind, 2, {}), GeneratorSpec(acqf, _gen_options(kind))
    one = generate(GenerateJob(spec, gen, datasets[kind], num_points=1, seed=3))
    _check_points(one.points, kind, 1, {})
    assert one.fit_seconds >= 0 and one.generate_seconds >= 0 and one.state.kind == kind
    # a batch of two with dimension 1 fixed (fixed_pars on ask), warm-started from the first fit
    fixed = {1: 0.625}
    two = generate(GenerateJob(spec, gen, datasets[kind], num_points=2, seed=4, warm_state=one.state, refit=False, fixed=fixed))
    _check_points(two.points, kind, 2, fixed)


def test_pending_points_reduce_acquisition(datasets: dict[str, TrainingData]) -> None:
    """Sequential greedy batches: conditioning on a pending point lowers the acquisition value there."""
    from psyserve.compute.factory import build_acquisition

    for kind, names in (
        (CLS, ["MCLevelSetEstimation", "EAVC", "GlobalMI", "BernoulliMCMutualInformation", "MCPosteriorVariance"]),
        (REG, ["MCPosteriorVariance"]),
        (PAIR, ["PairwiseMCPosteriorVariance"]),
    ):
        fm = fit_model(ModelSpec(kind, 2, {}), np.asarray(datasets[kind].X), np.asarray(datasets[kind].y))
        x = torch.tensor([[[0.1, 0.9], [0.8, 0.2]]], dtype=torch.float64)[:, : 2 if kind == PAIR else 1]
        for name in names:
            acqf = build_acquisition(name, fm, GeneratorSpec(name, _gen_options(kind)), seed=0)
            with torch.no_grad():
                before = float(acqf(x))
                acqf.set_X_pending(x[0])
                after = float(acqf(x))
                acqf.set_X_pending(None)
                again = float(acqf(x))
            assert after < before and again == before, (kind, name, before, after)


def test_same_job_same_points(datasets: dict[str, TrainingData]) -> None:
    for kind, acqf in [(CLS, "EAVC"), (PAIR, "qNoisyExpectedImprovement"), (REG, "MCLevelSetEstimation")]:
        job = GenerateJob(ModelSpec(kind, 2, {}), GeneratorSpec(acqf, _gen_options(kind)), datasets[kind], 2, seed=11)
        a, b = generate(job), generate(job)
        np.testing.assert_array_equal(a.points, b.points)
        assert a.state.hyperparameters == b.state.hyperparameters
    # the seed reaches the computation: EAVC's reference set is drawn from it, so another seed moves the point
    job = GenerateJob(ModelSpec(CLS, 2, {}), GeneratorSpec("EAVC", _gen_options(CLS)), datasets[CLS], 1, seed=11)
    other = GenerateJob(ModelSpec(CLS, 2, {}), GeneratorSpec("EAVC", _gen_options(CLS)), datasets[CLS], 1, seed=12)
    assert not np.array_equal(generate(job).points, generate(other).points)


def test_registry_and_unknown_names(datasets: dict[str, TrainingData]) -> None:
    # ModelListGP: compute.optimization_jobs; semi-parametric: tests/compute/test_semip_numerics.py; monotonic: tests/compute/test_monotonic_numerics.py; ordinal: tests/test_ordinal.py;
    # variational: tests/test_variational_gp.py
    known = {
        CLS,
        REG,
        PAIR,
        "ModelListGP",
        "SemiParametricGPModel",
        "HadamardSemiPModel",
        "OrdinalGPModel",
        "IndependentGPsModel",
        "MonotonicProjectionGP",
        "VariationalGPModel",
    }
    assert known == set(KNOWN_MODELS)
    assert {"MCLevelSetEstimation", "EAVC", "GlobalMI", "PairwiseMCPosteriorVariance"} <= KNOWN_ACQFS
    assert acqf_supports(CLS, "GlobalMI") and not acqf_supports(REG, "GlobalMI")
    assert not acqf_supports(CLS, "PairwiseMCPosteriorVariance") and acqf_supports(PAIR, "PairwiseMCPosteriorVariance")
    assert not acqf_supports(CLS, "NoSuchAcqf") and not acqf_supports("NoSuchModel", "EAVC")
    spec = ModelSpec(CLS, 2, {})
    with pytest.raises(ValueError, match=r"unknown acquisition function 'NoSuchAcqf'"):
        generate(GenerateJob(spec, GeneratorSpec("NoSuchAcqf", {}), datasets[CLS], 1, seed=0))
    with pytest.raises(ValueError, match="unknown model"):
        generate(GenerateJob(ModelSpec("NoSuchModel", 2, {}), GeneratorSpec("EAVC", {}), datasets[CLS], 1, seed=0))
    with pytest.raises(ValueError, match="does not support"):
        generate(GenerateJob(ModelSpec(REG, 2, {}), GeneratorSpec("EAVC", {}), datasets[REG], 1, seed=0))
    with pytest.raises(ValueError, match="optimisation jobs"):
        generate(GenerateJob(ModelSpec("ModelListGP", 2, {}), GeneratorSpec("qLogNoisyExpectedImprovement", {}), datasets[REG], 1, seed=0))
    with pytest.raises(ValueError, match="unknown query type"):
        query(QueryJob(spec, datasets[CLS], None, "median", True, None, None, {}, 0))
    with pytest.raises(ValueError, match="fixed dimension"):
        generate(GenerateJob(spec, GeneratorSpec("EAVC", {}), datasets[CLS], 1, seed=0, fixed={5: 0.5}))
    with pytest.raises(ValueError, match="binary"):
        fit_state(spec, TrainingData(np.full((2, 2), 0.5), np.array([0.0, 0.3])), seed=0)


def test_robust_with_degenerate_data() -> None:
    spec = ModelSpec(CLS, 2, {})
    gen = GeneratorSpec("MCLevelSetEstimation", {"restarts": 2, "samps": 64})
    X = np.array([[0.2, 0.3], [0.7, 0.9], [0.5, 0.5]])
    for y in (np.zeros(3), np.ones(3), np.array([1.0, 0.0, 1.0])):
        r = generate(GenerateJob(spec, gen, TrainingData(X, y), 1, seed=0))
        _check_points(r.points, CLS, 1, {})
    one = generate(GenerateJob(spec, gen, TrainingData(X[:1], np.ones(1)), 1, seed=0))
    _check_points(one.points, CLS, 1, {})
    # no data at all: a prior-only model; generation falls back to seeded Sobol points
    empty = TrainingData(np.zeros((0, 2)), np.zeros(0))
    for kind, acqf in [(CLS, "EAVC"), (REG, "qNoisyExpectedImprovement"), (PAIR, "PairwiseMCPosteriorVariance")]:
        data = TrainingData(np.zeros((0, 2, 2)), np.zeros(0)) if kind == PAIR else empty
        r = generate(GenerateJob(ModelSpec(kind, 2, {}), GeneratorSpec(acqf, {}), data, 2, seed=1, fixed={0: 0.25}))
        _check_points(r.points, kind, 2, {0: 0.25})
    q = query(QueryJob(spec, empty, None, "prediction", True, np.full((3, 2), 0.5), None, {}, 0))
    np.testing.assert_allclose(q.probability, 0.5, atol=1e-9)
    # every dimension fixed: the fixed point itself
    r = generate(GenerateJob(spec, gen, TrainingData(X, np.array([1.0, 0.0, 1.0])), 1, seed=0, fixed={0: 0.1, 1: 0.9}))
    np.testing.assert_array_equal(r.points, [[0.1, 0.9]])


def test_time_limits_are_honoured(datasets: dict[str, TrainingData]) -> None:
    spec = ModelSpec(CLS, 2, {"max_fit_time": 0.05})
    gen = GeneratorSpec("EAVC", {"max_gen_time": 0.05, "lookahead_points": 200})
    r = generate(GenerateJob(spec, gen, datasets[CLS], 1, seed=0))
    _check_points(r.points, CLS, 1, {})
    assert r.fit_seconds < 1.0 and r.generate_seconds < 1.5


def test_warm_start_conditions_only() -> None:
    """refit=False keeps the warm hyper-parameters and only conditions on the data, which predicts
    about as well as a full refit (that it is cheaper is a speed claim: benchmarks/compute.py)."""
    rng = np.random.default_rng(5)
    X = rng.random((60, 2))
    y = ob.sample(ob.novel_detection(2 * X - 1), rng)
    spec = ModelSpec(CLS, 2, {})
    first, _ = fit_state(spec, TrainingData(X[:-5], y[:-5]), seed=0)
    data = TrainingData(X, y)
    full, _ = fit_state(spec, data, seed=0)
    warm, _ = fit_state(spec, data, seed=0, warm_state=first, refit=False)
    for name in ("model.covar_module.base_kernel.raw_lengthscale", "model.covar_module.raw_outputscale", "model.mean_module.raw_constant"):
        assert warm.hyperparameters[name] == first.hyperparameters[name]  # hyper-parameters kept as they were
    ls = "model.covar_module.base_kernel.raw_lengthscale"
    assert full.hyperparameters[ls] != first.hyperparameters[ls]  # (a full fit on the same data moves them)
    assert warm.n_train == 60 and full.n_train == 60
    grid = rng.random((200, 2))
    p_full = query(QueryJob(spec, data, full, "prediction", True, grid, None, {}, 0)).probability
    p_warm = query(QueryJob(spec, data, warm, "prediction", True, grid, None, {}, 0)).probability
    p_true = ob.probability(ob.novel_detection(2 * grid - 1))
    assert np.all((p_warm >= 0) & (p_warm <= 1))
    assert np.mean(np.abs(p_warm - p_full)) < 0.05
    assert ob.mean_abs_prob_error(p_warm, p_true) < 0.2
    # regression and pairwise: refit=False keeps the hyper-parameters and only conditions
    for kind in (REG, PAIR):
        Xk = rng.random((30, 2, 2)) if kind == PAIR else X[:30]
        yk = (_utility(Xk[:, 0]) > _utility(Xk[:, 1])).astype(float) if kind == PAIR else X[:30, 0] * 2.0
        st, _ = fit_state(ModelSpec(kind, 2, {}), TrainingData(Xk[:-3], yk[:-3]), seed=0)
        st2, _ = fit_state(ModelSpec(kind, 2, {}), TrainingData(Xk, yk), seed=0, warm_state=st, refit=False)
        for k, v in st.hyperparameters.items():
            assert st2.hyperparameters[k] == v


def test_warm_state_on_same_data_is_reused_exactly(datasets: dict[str, TrainingData]) -> None:
    spec = ModelSpec(CLS, 2, {})
    gen = GeneratorSpec("MCLevelSetEstimation", _gen_options(CLS))
    r = generate(GenerateJob(spec, gen, datasets[CLS], 1, seed=2))
    x = np.random.default_rng(1).random((5, 2))
    fresh = fit_model(spec, np.asarray(datasets[CLS].X), np.asarray(datasets[CLS].y), warm_state=r.state, refit=False)
    # same data: the stored variational parameters are reused as they are, no optimisation at all
    assert fresh.state.hyperparameters == r.state.hyperparameters
    q = query(QueryJob(spec, datasets[CLS], r.state, "prediction", False, x, None, {}, 0))
    q2 = query(QueryJob(spec, datasets[CLS], r.state, "prediction", False, x, None, {}, 0))
    np.testing.assert_array_equal(q.mean, q2.mean)
    assert pickle.loads(pickle.dumps(r.state)) == r.state


def test_query_prediction_max_min(datasets: dict[str, TrainingData]) -> None:
    spec = ModelSpec(CLS, 2, {})
    data = datasets[CLS]
    x = np.random.default_rng(2).random((7, 2))
    q = query(QueryJob(spec, data, None, "prediction", True, x, None, {}, 0))
    for arr in (q.mean, q.variance, q.probability, q.lower, q.upper):
        assert arr.shape == (7,) and np.all(np.isfinite(arr))
    assert np.all((q.probability >= 0) & (q.probability <= 1)) and np.all(q.variance > 0)
    assert np.all((q.lower <= q.probability) & (q.probability <= q.upper))
    np.testing.assert_allclose(q.probability, norm.cdf(q.mean / np.sqrt(1 + q.variance)))
    state = q.state
    for prob in (True, False):
        hi = query(QueryJob(spec, data, state, "max", prob, None, None, {}, 0))
        lo = query(QueryJob(spec, data, state, "min", prob, None, None, {}, 0))
        for r in (hi, lo):
            assert r.x.shape == (1, 2) and np.all((r.x >= 0) & (r.x <= 1))
            assert r.mean.shape == (1,)
        value = (lambda r: r.probability) if prob else (lambda r: r.mean)
        assert value(hi)[0] > value(lo)[0]
        grid = query(QueryJob(spec, data, state, "prediction", prob, np.random.default_rng(3).random((500, 2)), None, {}, 0))
        assert value(hi)[0] >= value(grid).max() - 1e-3 and value(lo)[0] <= value(grid).min() + 1e-3
    fixed = query(QueryJob(spec, data, state, "max", True, None, None, {0: 0.3}, 0))
    assert fixed.x[0, 0] == 0.3


def test_query_inverse_on_monotone_functions() -> None:
    rng = np.random.default_rng(4)
    X = rng.random((40, 2))
    reg = query(QueryJob(ModelSpec(REG, 2, {}), TrainingData(X, 2.0 * X[:, 0]), None, "inverse", False, None, 1.2, {1: 0.5}, 0))
    assert abs(reg.mean[0] - 1.2) < 0.02 and abs(reg.x[0, 0] - 0.6) < 0.05 and reg.x[0, 1] == 0.5
    np.testing.assert_array_equal(reg.probability, reg.mean)
    Xc = rng.random((80, 2))
    yc = ob.sample(6.0 * (Xc[:, 0] - 0.5), rng)  # P(y=1) = Phi(6 (x0 - 0.5)), monotone in x0
    spec = ModelSpec(CLS, 2, {})
    inv = query(QueryJob(spec, TrainingData(Xc, yc), None, "inverse", True, None, 0.75, {1: 0.5}, 0))
    assert abs(inv.probability[0] - 0.75) < 0.01
    assert abs(inv.x[0, 0] - (0.5 + norm.ppf(0.75) / 6.0)) < 0.15
    inv_latent = query(QueryJob(spec, TrainingData(Xc, yc), inv.state, "inverse", False, None, 0.0, {1: 0.5}, 0))
    assert abs(inv_latent.mean[0]) < 0.01
    with pytest.raises(ValueError, match="needs a finite target"):
        query(QueryJob(spec, TrainingData(Xc, yc), None, "inverse", True, None, None, {}, 0))


def test_regression_query_and_pairwise_utility(datasets: dict[str, TrainingData]) -> None:
    x = np.random.default_rng(5).random((4, 2))
    r = query(QueryJob(ModelSpec(REG, 2, {}), datasets[REG], None, "prediction", True, x, None, {}, 0))
    np.testing.assert_allclose(r.probability, r.mean)
    np.testing.assert_allclose(r.lower, r.mean - 1.959963984540054 * np.sqrt(r.variance))
    p = query(QueryJob(ModelSpec(PAIR, 2, {}), datasets[PAIR], None, "prediction", False, x, None, {}, 0))
    assert p.mean.shape == (4,)
    best = query(QueryJob(ModelSpec(PAIR, 2, {}), datasets[PAIR], p.state, "max", False, None, None, {}, 0))
    assert np.linalg.norm(best.x[0] - 0.3) < 0.25  # the preferred stimulus is near the utility peak (0.3, 0.3)


def test_latent_posterior_matches_botorch(datasets: dict[str, TrainingData]) -> None:
    G = torch.as_tensor(np.random.default_rng(6).random((6, 2)))
    for kind in (CLS, REG, PAIR):
        fm = fit_model(ModelSpec(kind, 2, {}), np.asarray(datasets[kind].X), np.asarray(datasets[kind].y))
        assert fm.model is not None
        with torch.no_grad():
            post: Any = fm.model.posterior(G)
            mu, var = fm.latent.mean_variance(G)
            cov = fm.latent.covariance(G, G)
        torch.testing.assert_close(mu, post.mean.squeeze(-1), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(var, post.variance.squeeze(-1), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(cov, post.mvn.covariance_matrix, rtol=1e-5, atol=2e-6)  # GPyTorch adds 1e-6 jitter


def test_bivariate_normal_and_lookahead_against_monte_carlo(datasets: dict[str, TrainingData]) -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        a, b = rng.normal(size=2) * 1.5
        rho = rng.uniform(-0.9, 0.9)
        ref = multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]]).cdf([a, b]) - norm.cdf(a) * norm.cdf(b)
        got = bvn_excess(*(torch.tensor(v, dtype=torch.float64) for v in (a, b, rho)))
        assert abs(float(got) - ref) < 1e-6
    fm = fit_model(ModelSpec(CLS, 2, {}), np.asarray(datasets[CLS].X), np.asarray(datasets[CLS].y))
    R = torch.as_tensor(rng.random((15, 2)))
    t = float(norm.ppf(0.75))
    x = torch.tensor([[[0.4, 0.35]]], dtype=torch.float64)
    with torch.no_grad():
        eavc = float(EAVC(fm.model, fm.latent, fm.pending_noise, R, t)(x))
        mi = float(GlobalMI(fm.model, fm.latent, fm.pending_noise, R, t)(x))
        A = torch.cat([x[0], R])
        mu = fm.latent.mean(A).numpy()
        C = (fm.latent.covariance(A, A) + 1e-9 * torch.eye(16, dtype=torch.float64)).numpy()
    F = rng.multivariate_normal(mu, C, size=200_000)
    Y = rng.random(F.shape[0]) < norm.cdf(F[:, 0])
    H = F[:, 1:] > t
    P1, p, p1, p0 = Y.mean(), H.mean(0), H[Y].mean(0), H[~Y].mean(0)

    def h(q: np.ndarray) -> np.ndarray:
        q = np.clip(q, 1e-12, 1 - 1e-12)
        return -(q * np.log(q) + (1 - q) * np.log(1 - q))

    eavc_mc = P1 * abs(p1.mean() - p.mean()) + (1 - P1) * abs(p0.mean() - p.mean())
    mi_mc = float(np.mean(h(p) - P1 * h(p1) - (1 - P1) * h(p0)))
    assert eavc == pytest.approx(eavc_mc, rel=0.1, abs=5e-4)
    assert mi == pytest.approx(mi_mc, rel=0.1, abs=5e-4)


def test_observers() -> None:
    x_star = np.array([[0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]])
    assert ob.hartmann6(x_star)[0] == pytest.approx(-3.32237, abs=1e-4)
    assert ob.hartmann6_binary(x_star)[0] == pytest.approx(3 * 3.32237 - 2, abs=1e-3)
    c = np.linspace(-1, 1, 11)
    for problem, f in (("novel_detection", ob.novel_detection), ("novel_discrimination", ob.novel_discrimination)):
        a = ob.novel_threshold(c, 0.75, problem)
        inside = (a > -1) & (a < 1)
        np.testing.assert_allclose(ob.probability(f(np.stack([c, a], -1)))[inside], 0.75, atol=1e-9)

        def truth(raw: np.ndarray, f=f) -> np.ndarray:
            return ob.probability(f(raw))

        assert ob.threshold_contour_error(truth, problem) < 0.01
    y = ob.sample(np.zeros(4000), np.random.default_rng(0))
    assert set(np.unique(y)) <= {0.0, 1.0} and abs(y.mean() - 0.5) < 0.03
    assert ob.brier(np.array([1.0, 0.0]), np.array([1.0, 1.0])) == 0.5
    assert ob.mean_abs_prob_error(np.array([0.2, 0.4]), np.array([0.3, 0.3])) == pytest.approx(0.1)


def test_import_and_unpickle_without_torch(datasets: dict[str, TrainingData]) -> None:
    r = generate(GenerateJob(ModelSpec(REG, 2, {}), GeneratorSpec("MCPosteriorVariance", {}), datasets[REG], 1, seed=0))
    blob = pickle.dumps(r)
    code = (
        "import pickle, sys\n"
        "import psyserve.compute as c\n"
        "r = pickle.loads(sys.stdin.buffer.read())\n"
        "assert isinstance(r, c.GenerateResult) and r.points.shape == (1, 2), r\n"
        "assert 'EAVC' in c.KNOWN_ACQFS and c.acqf_supports('GPClassificationModel', 'EAVC')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=blob,
        capture_output=True,
        env={"PYTHONPATH": str(SERVER), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert isinstance(pickle.loads(blob), GenerateResult)
    assert isinstance(r.state, ModelState) and all(isinstance(v, list) for v in r.state.hyperparameters.values())


@pytest.mark.slow
def test_simulated_observer_novel_detection_threshold() -> None:
    """10 Sobol + 30 MCLevelSetEstimation trials (target 0.75, ProbitObjective) on novel_detection."""
    seed = 0
    rng = np.random.default_rng(seed)
    X = torch.quasirandom.SobolEngine(2, scramble=True, seed=seed).draw(10, dtype=torch.float64).numpy()
    y = ob.sample(ob.novel_detection(2 * X - 1), rng)
    spec = ModelSpec(CLS, 2, {})
    gen = GeneratorSpec("MCLevelSetEstimation", {"target": 0.75, "objective": "ProbitObjective"})
    state: ModelState | None = None
    for trial in range(30):
        r = generate(GenerateJob(spec, gen, TrainingData(X, y), 1, seed=seed * 1000 + trial, warm_state=state))
        state = r.state
        X = np.vstack([X, r.points])
        y = np.concatenate([y, ob.sample(ob.novel_detection(2 * r.points - 1), rng)])
    data = TrainingData(X, y)
    final, _ = fit_state(spec, data, seed=seed, warm_state=state)

    def p_hat(raw: np.ndarray) -> np.ndarray:
        return query(QueryJob(spec, data, final, "prediction", True, (raw + 1) / 2, None, {}, seed)).probability

    err = ob.threshold_contour_error(p_hat, "novel_detection", target=0.75)
    print(f"novel_detection 0.75-threshold contour error after 40 trials: {err:.4f}")
    # Measured (one torch thread): 0.0808 for this seed. Same protocol over seeds 0-11: mean 0.088, max 0.134;
    # 40 Sobol trials instead: mean 0.168, max 0.240. The tolerance covers every measured seed, since an
    # adaptive trajectory may shift with platform floating point, and stays below the Sobol mean.
    assert err < 0.15
    assert math.isfinite(err)
