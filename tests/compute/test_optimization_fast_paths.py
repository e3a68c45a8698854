"""The Ax-style optimisation's cached posterior agrees with BoTorch's models: means, variances and
gradients of the acquisitions built on it (LogEI, LogConstrainedEI, qLogEHVI)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from botorch.acquisition.analytic import LogConstrainedExpectedImprovement, LogExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.objective import WeightedMCMultiOutputObjective
from botorch.models import ModelListGP, SingleTaskGP
from botorch.sampling.normal import SobolQMCNormalSampler
from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning

from psyserve.compute.optimization import MetricData, MetricObjective, OptimizationProblem
from psyserve.compute.optimization_numerics import _fit, no_kernel_compilation
from psyserve.compute.optimization_posterior import cached_model as _cached_model

DTYPE = torch.double


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _models(noiseless: bool, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    X = rng.random((18, 3))
    Y = np.stack([np.sin(6 * X[:, 0]) + X[:, 1] ** 2 + 0.05 * rng.standard_normal(18), 3 * X[:, 2] - X[:, 0]], axis=-1)
    Yvar = np.zeros_like(Y) if noiseless else np.full_like(Y, np.nan)
    problem = OptimizationProblem(3, ("a", "b"), (MetricObjective(0, True), MetricObjective(1, False)))
    models, _ = _fit(problem, MetricData(X, Y, Yvar), None, 200)
    return models


@pytest.mark.parametrize("noiseless", [True, False])
def test_cached_posterior_matches_gpytorch(noiseless: bool) -> None:
    models = _models(noiseless)
    reference = ModelListGP(*models)
    cached = _cached_model(models)
    assert cached is not None
    X = torch.rand(7, 1, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(3))
    want = reference.posterior(X)
    got = cached.posterior(X)
    torch.testing.assert_close(got.mean, want.mean, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(got.variance, want.variance, rtol=1e-5, atol=1e-9)
    # at a training point of a noiseless metric the variance collapses, as in GPyTorch
    Xt = models[0].train_inputs[0][:2].unsqueeze(1)
    torch.testing.assert_close(cached.posterior(Xt).variance, reference.posterior(Xt).variance, rtol=1e-3, atol=1e-8)


def _value_and_grad(acqf: torch.nn.Module, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    X = X.clone().requires_grad_(True)
    value = acqf(X)
    (grad,) = torch.autograd.grad(value.sum(), X)
    return value.detach(), grad


def test_analytic_acquisitions_on_cached_posterior_match() -> None:
    models = _models(True, seed=1)
    cached = _cached_model(models)
    X = torch.rand(9, 1, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(4))
    best = float(models[0].outcome_transform.untransform(models[0].train_targets.unsqueeze(-1))[0].min())
    pairs = [
        (LogExpectedImprovement(_cached_model(models[:1]), best_f=best, maximize=False), LogExpectedImprovement(models[0], best_f=best, maximize=False)),
        (
            LogConstrainedExpectedImprovement(cached, best_f=best, objective_index=0, constraints={1: (None, 0.5)}, maximize=False),
            LogConstrainedExpectedImprovement(ModelListGP(*models), best_f=best, objective_index=0, constraints={1: (None, 0.5)}, maximize=False),
        ),
    ]
    for fast, slow in pairs:
        v_fast, g_fast = _value_and_grad(fast, X)
        v_slow, g_slow = _value_and_grad(slow, X)
        torch.testing.assert_close(v_fast, v_slow, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(g_fast, g_slow, rtol=1e-4, atol=1e-6)


def test_qlogehvi_on_cached_posterior_matches() -> None:
    no_kernel_compilation()  # as in the server's workers
    models = _models(True, seed=2)
    Y = torch.stack([m.outcome_transform.untransform(m.train_targets.unsqueeze(-1))[0].squeeze(-1) for m in models], -1)
    weights = torch.tensor([-1.0, 1.0], dtype=DTYPE)
    signed = Y * weights
    ref = signed.min(0).values - 0.1
    X = torch.rand(6, 1, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(5))

    def acqf(model: object) -> qLogExpectedHypervolumeImprovement:
        return qLogExpectedHypervolumeImprovement(
            model=model,
            ref_point=ref.tolist(),
            partitioning=FastNondominatedPartitioning(ref_point=ref, Y=signed),
            sampler=SobolQMCNormalSampler(torch.Size([1024]), seed=0),
            objective=WeightedMCMultiOutputObjective(weights=weights, outcomes=[0, 1]),
        )

    fast, slow = acqf(_cached_model(models)), acqf(ModelListGP(*models))
    with torch.no_grad():
        # different base-sample layouts: equal up to Monte-Carlo error (1,024 QMC samples)
        torch.testing.assert_close(fast(X).exp(), slow(X).exp(), rtol=0.05, atol=1e-4)


def test_analytic_ehvi_on_cached_posterior_matches_botorch_and_mc() -> None:
    """The signed cached model gives BoTorch's analytic EHVI on the GPs themselves (objectives
    maximised there, so the minimised one is a negated copy) and qLogEHVI's value up to MC error."""
    from botorch.acquisition.multi_objective.analytic import ExpectedHypervolumeImprovement
    from botorch.models.transforms.outcome import Standardize

    models = _models(True, seed=2)
    Y = torch.stack([m.outcome_transform.untransform(m.train_targets.unsqueeze(-1))[0].squeeze(-1) for m in models], -1)
    weights = torch.tensor([-1.0, 1.0], dtype=DTYPE)
    signed = Y * weights
    ref = signed.min(0).values - 0.1
    partitioning = FastNondominatedPartitioning(ref_point=ref, Y=signed)
    fast = ExpectedHypervolumeImprovement(_cached_model(models, [(0, -1.0), (1, 1.0)]), ref.tolist(), partitioning)  # type: ignore[arg-type]
    # the same first GP on the negated metric: identical hyper-parameters, negated targets
    negated = SingleTaskGP(models[0].train_inputs[0], -Y[:, :1], train_Yvar=torch.full_like(Y[:, :1], 1e-6 * float(Y[:, 0].var())), outcome_transform=Standardize(m=1))
    negated.load_state_dict({k: v for k, v in models[0].state_dict().items() if "outcome_transform" not in k}, strict=False)
    with torch.no_grad():
        negated.mean_module.constant = -models[0].mean_module.constant  # the standardised targets are negated too
    negated.eval()
    slow = ExpectedHypervolumeImprovement(ModelListGP(negated, models[1]), ref.tolist(), partitioning)  # type: ignore[arg-type]
    X = torch.rand(8, 1, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(6))
    v_fast, g_fast = _value_and_grad(fast, X)
    v_slow, g_slow = _value_and_grad(slow, X)
    torch.testing.assert_close(v_fast, v_slow, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-3, atol=1e-7)
    assert bool((v_fast > 0).any())
    mc = qLogExpectedHypervolumeImprovement(
        model=_cached_model(models),
        ref_point=ref.tolist(),
        partitioning=partitioning,
        sampler=SobolQMCNormalSampler(torch.Size([4096]), seed=0),
        objective=WeightedMCMultiOutputObjective(weights=weights, outcomes=[0, 1]),
    )
    with torch.no_grad():
        torch.testing.assert_close(mc(X).exp(), v_fast, rtol=0.08, atol=1e-3)


def test_log_ehvi_is_the_log_of_botorchs_ehvi_and_qlogehvis_limit() -> None:
    """LogEHVI (the default for several noiseless objectives) equals the log of BoTorch's analytic
    EHVI where that is representable, with the same gradients (relative), stays finite with finite
    gradients far from the front where EHVI underflows to 0, and equals qLogEHVI up to MC error."""
    from botorch.acquisition.multi_objective.analytic import ExpectedHypervolumeImprovement

    from psyserve.compute.optimization_ehvi import LogEHVI

    models = _models(True, seed=2)
    Y = torch.stack([m.outcome_transform.untransform(m.train_targets.unsqueeze(-1))[0].squeeze(-1) for m in models], -1)
    weights = torch.tensor([-1.0, 1.0], dtype=DTYPE)
    signed = Y * weights
    ref = signed.min(0).values - 0.1
    model = _cached_model(models, [(0, -1.0), (1, 1.0)])
    assert model is not None
    log_ehvi = LogEHVI(model, ref, signed)
    ehvi = ExpectedHypervolumeImprovement(model, ref.tolist(), FastNondominatedPartitioning(ref_point=ref, Y=signed))  # type: ignore[arg-type]
    X = torch.rand(64, 1, 3, dtype=DTYPE, generator=torch.Generator().manual_seed(6))
    v_log, g_log = _value_and_grad(log_ehvi, X)
    v, g = _value_and_grad(ehvi, X)
    usable = v > 1e-10  # where BoTorch's EHVI is not lost to round-off
    assert int(usable.sum()) >= 32
    torch.testing.assert_close(v_log[usable], v[usable].log(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_log[usable], (g / v.reshape(-1, 1, 1))[usable], rtol=1e-4, atol=1e-6)
    # at the most dominated observation (the posterior there is that value, to within its tiny
    # noise) EHVI underflows to exactly 0; its log is finite, very negative, with a gradient
    scaled = (signed - signed.mean(0)) / signed.std(0)
    far = models[0].train_inputs[0][int(scaled.sum(-1).argmin())].reshape(1, 1, 3)
    v_far, g_far = _value_and_grad(log_ehvi, far)
    with torch.no_grad():
        assert float(ehvi(far)) == 0.0
    assert torch.isfinite(v_far).all() and float(v_far) < -50 and torch.isfinite(g_far).all() and float(g_far.abs().sum()) > 0
    mc = qLogExpectedHypervolumeImprovement(
        model=_cached_model(models),
        ref_point=ref.tolist(),
        partitioning=FastNondominatedPartitioning(ref_point=ref, Y=signed),
        sampler=SobolQMCNormalSampler(torch.Size([4096]), seed=0),
        objective=WeightedMCMultiOutputObjective(weights=weights, outcomes=[0, 1]),
    )
    with torch.no_grad():
        close = v_log > -6  # qLogEHVI's smoothing dominates where the improvement is tiny
        torch.testing.assert_close(mc(X[:16])[close[:16]], v_log[:16][close[:16]], rtol=0.0, atol=0.08)


def test_log_ehvi_is_the_default_for_noiseless_objectives() -> None:
    """LogEHVI is chosen for several noiseless objectives (one point, nothing pending, no outcome
    constraints), never once an observation is noisy or a point is pending; generate_points
    proposes in-cube points with it."""
    from psyserve.compute.optimization import OptimizationGenerateJob
    from psyserve.compute.optimization_ehvi import LogEHVI
    from psyserve.compute.optimization_numerics import _noiseless_ehvi, generate_points

    rng = np.random.default_rng(3)
    X = rng.random((12, 2))
    Y = np.stack([(X[:, 0] - 0.3) ** 2 + X[:, 1], (X[:, 0] - 0.8) ** 2 + (1 - X[:, 1])], axis=-1)
    problem = OptimizationProblem(2, ("a", "b"), (MetricObjective(0, True), MetricObjective(1, True)))
    sampler = SobolQMCNormalSampler(torch.Size([64]), seed=0)
    noiseless, noisy = MetricData(X, Y, np.zeros_like(Y)), MetricData(X, Y, np.full_like(Y, 1e-4))
    models, _ = _fit(problem, noiseless, None, 200)
    assert isinstance(_noiseless_ehvi(problem, noiseless, models, None, 1, sampler, None, "auto"), LogEHVI)
    assert _noiseless_ehvi(problem, noisy, models, None, 1, sampler, None, "auto") is None
    pending = torch.tensor([[0.5, 0.5]], dtype=DTYPE)
    assert _noiseless_ehvi(problem, noiseless, models, pending, 1, sampler, None, "auto") is None
    assert not isinstance(_noiseless_ehvi(problem, noiseless, models, None, 1, sampler, None, "qlogehvi"), LogEHVI)
    job = OptimizationGenerateJob(problem, noiseless, np.zeros((0, 2)), 1, seed=5, options={"restarts": 4, "samps": 64})
    points = generate_points(job).points
    assert points.shape == (1, 2) and bool(((points >= 0) & (points <= 1)).all())


def test_bilog_of_constrained_metrics_is_axs_bilog_y() -> None:
    """Ax 1.3's BilogY: only outcome-constraint metrics that are not objectives are transformed,
    b + sign(y - b) log(1 + |y - b|); the bound maps to itself (so feasibility is unchanged); a
    known SEM follows the 95% interval's width; SEM 0 stays 0, unknown (NaN) stays unknown."""
    from psyserve.compute.optimization import OutcomeBound
    from psyserve.compute.optimization_numerics import _bilog_constrained

    problem = OptimizationProblem(
        1, ("obj", "c", "d"), (MetricObjective(0, True),), outcome_constraints=(OutcomeBound(1, True, 1.25), OutcomeBound(0, True, 9.0))
    )
    y_c = np.array([0.25, 1.25, 2.25, 5.0])
    Y = np.stack([np.array([3.0, -1.0, 0.5, 2.0]), y_c, np.array([7.0, 8.0, 9.0, 10.0])], axis=-1)
    Yvar = np.stack([np.zeros(4), np.array([0.0, 0.04, np.nan, 1.0]), np.zeros(4)], axis=-1)
    out = _bilog_constrained(problem, MetricData(np.zeros((4, 1)), Y, Yvar))
    np.testing.assert_array_equal(out.Y[:, [0, 2]], Y[:, [0, 2]])  # the objective (even constrained) and the tracked metric
    np.testing.assert_array_equal(out.Yvar[:, [0, 2]], Yvar[:, [0, 2]])
    expected = [1.25 - math.log(2.0), 1.25, 1.25 + math.log(2.0), 1.25 + math.log(4.75)]
    np.testing.assert_allclose(out.Y[:, 1], expected, rtol=1e-12)
    assert out.Yvar[0, 1] == 0.0 and math.isnan(out.Yvar[2, 1])
    z = 1.959963984540054
    for row, y, sem in ((1, 1.25, 0.2), (3, 5.0, 1.0)):  # the interval [y - z sem, y + z sem] mapped through the transform
        lo, hi = (1.25 + math.copysign(math.log1p(abs(v - 1.25)), v - 1.25) for v in (y - z * sem, y + z * sem))
        assert out.Yvar[row, 1] == pytest.approx(((hi - lo) / (2 * z)) ** 2, rel=1e-12)
    assert ((out.Y[:, 1] <= 1.25) == (y_c <= 1.25)).all()


@pytest.mark.parametrize("noiseless", [True, False])
def test_fast_fit_is_botorchs_fit(noiseless: bool) -> None:
    """optimization_fit's hand-written marginal likelihood equals GPyTorch's (value and gradient),
    and its fit reaches the optimum BoTorch's fit_gpytorch_mll reaches from the same start."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from psyserve.compute.optimization_fit import _Objective, fast_fit, fits_fast

    rng = np.random.default_rng(7)
    X = torch.tensor(rng.random((22, 3)), dtype=DTYPE)
    y = torch.sin(5 * X[:, :1]) + X[:, 1:2] ** 2 + (0.0 if noiseless else 0.1 * torch.tensor(rng.standard_normal((22, 1)), dtype=DTYPE))

    def model() -> SingleTaskGP:
        extra = {"train_Yvar": torch.full_like(y, 1e-6)} if noiseless else {}
        return SingleTaskGP(X, y, outcome_transform=Standardize(m=1), **extra)

    def botorch_loss(m: SingleTaskGP) -> float:
        m.train()
        mll = ExactMarginalLogLikelihood(m.likelihood, m)
        return -float(mll(m(*m.train_inputs), m.train_targets).detach())

    m = model()
    assert fits_fast(m)
    objective = _Objective(m)
    for x in (objective.default(m), objective.default(m) * 1.7 + 0.05):
        value, grad = objective.value_and_grad(x)
        objective.write(m, x)
        assert value == pytest.approx(botorch_loss(m), rel=1e-7, abs=1e-9)
        eps = 1e-6
        numeric = [(objective.value_and_grad(x + eps * e)[0] - objective.value_and_grad(x - eps * e)[0]) / (2 * eps) for e in np.eye(len(x))]
        np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)
    reference = model()
    fit_gpytorch_mll(ExactMarginalLogLikelihood(reference.likelihood, reference))
    fitted = model()
    loss = fast_fit(fitted, 200, warm=False)
    assert loss == pytest.approx(botorch_loss(reference), abs=1e-6)
    np.testing.assert_allclose(fitted.covar_module.lengthscale.detach().numpy(), reference.covar_module.lengthscale.detach().numpy(), rtol=1e-2)
    assert not fits_fast(SingleTaskGP(X, y, input_transform=__import__("botorch.models.transforms.input", fromlist=["Normalize"]).Normalize(d=3)))
