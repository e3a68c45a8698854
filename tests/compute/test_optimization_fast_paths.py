"""The Ax-style optimisation's cached posterior agrees with BoTorch's models: means, variances and
gradients of the acquisitions built on it (LogEI, LogConstrainedEI, qLogEHVI)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from botorch.acquisition.analytic import LogConstrainedExpectedImprovement, LogExpectedImprovement
from botorch.acquisition.multi_objective.logei import qLogExpectedHypervolumeImprovement
from botorch.acquisition.multi_objective.objective import WeightedMCMultiOutputObjective
from botorch.models import ModelListGP
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
