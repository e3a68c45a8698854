"""MCLevelSetEstimation's straddle: in probability space (AEPsych's form, `straddle = probability`) it
equals the Monte Carlo straddle of AEPsych's definition, sqrt(beta Var[p(f)]) - |E[p(f)] - target|;
both forms' numpy derivatives agree with autograd, and the default is the latent form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

import observers as ob
from psyserve.compute import GeneratorSpec, ModelSpec
from psyserve.compute.acquisition import PROB_STRADDLE_MIN_VAR, LevelSetStraddle, ProbabilityStraddle
from psyserve.compute.factory import build_acquisition
from psyserve.compute.links import Link
from psyserve.compute.models import fit_model

CLS = "GPClassificationModel"
MU = np.linspace(-3.0, 3.0, 7)
VAR = np.geomspace(1e-3, 20.0, 5)


class _Moments:  # the acquisition's forward on given moments instead of a posterior
    analytic_grad = False

    def __init__(self, mu: torch.Tensor, var: torch.Tensor) -> None:
        self.mu, self.var = mu, var

    def mean_variance(self, _: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu.reshape(-1, 1), self.var.reshape(-1, 1)


def _fitted(options: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    X = rng.random((20, 2))
    return fit_model(ModelSpec(CLS, 2, dict(options or {})), X, ob.sample(ob.novel_detection(2 * X - 1), rng))


@pytest.mark.parametrize("floor", [0.0, 0.5])
def test_probability_straddle_is_aepsychs_monte_carlo_straddle(floor: float) -> None:
    options: dict[str, object] = {"link": "probit", "floor": floor} if floor else {}
    fitted = _fitted(options)
    objective = "FloorProbitObjective" if floor else "ProbitObjective"
    acq = build_acquisition(
        "MCLevelSetEstimation",
        fitted,
        GeneratorSpec(
            "MCLevelSetEstimation", {"target": 0.75, "objective": objective, "floor": floor, "straddle": "probability"}
        ),
        0,
    )
    assert isinstance(acq, ProbabilityStraddle)
    mu_g, var_g = (a.ravel() for a in np.meshgrid(MU, VAR))
    acq.post = _Moments(torch.tensor(mu_g), torch.tensor(var_g))  # type: ignore[assignment]
    value = acq(torch.zeros(len(mu_g), 1, 2, dtype=torch.float64)).detach().numpy()
    z = np.random.default_rng(0).standard_normal(100_000)
    for i in range(len(mu_g)):
        p = floor + (1 - floor) * norm.cdf(mu_g[i] + np.sqrt(var_g[i]) * z)
        mc = np.sqrt(3.84 * max(p.var(), PROB_STRADDLE_MIN_VAR)) - abs(p.mean() - 0.75)
        assert value[i] == pytest.approx(mc, abs=5e-3), (mu_g[i], var_g[i])
    numpy_value = acq.from_moments(mu_g, var_g)[0]
    np.testing.assert_allclose(numpy_value, value, atol=1e-10)


@pytest.mark.parametrize("straddle", ["probability", "latent"])
def test_straddle_moment_derivatives_match_autograd(straddle: str) -> None:
    fitted = _fitted()
    options = {"target": 0.75, "objective": "ProbitObjective", "straddle": straddle}
    acq = build_acquisition("MCLevelSetEstimation", fitted, GeneratorSpec("MCLevelSetEstimation", options), 0)
    assert isinstance(acq, ProbabilityStraddle if straddle == "probability" else LevelSetStraddle)
    default = build_acquisition("MCLevelSetEstimation", fitted, GeneratorSpec("MCLevelSetEstimation", {"target": 0.75}), 0)
    assert isinstance(default, LevelSetStraddle)
    mu_g, var_g = (a.ravel() for a in np.meshgrid(MU, VAR))
    mu = torch.tensor(mu_g, requires_grad=True)
    var = torch.tensor(var_g, requires_grad=True)
    acq.post = _Moments(mu, var)  # type: ignore[assignment]
    ref = acq(torch.zeros(len(mu_g), 1, 2, dtype=torch.float64))
    g_mu, g_var = torch.autograd.grad(ref.sum(), (mu, var))
    value, d_mu, d_var = acq.from_moments(mu_g, var_g)
    np.testing.assert_allclose(value, ref.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(d_mu, g_mu.numpy(), atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(d_var, g_var.numpy(), atol=1e-6, rtol=1e-5)


def test_logit_floor_straddle_goes_through_quadrature() -> None:
    """Logit / Gumbel links have no closed form: the torch forward (Gauss-Hermite) is used."""
    fitted = _fitted({"link": "logit", "floor": 0.5})
    opts = {"target": 0.75, "objective": "FloorLogitObjective", "floor": 0.5, "straddle": "probability"}
    acq = build_acquisition("MCLevelSetEstimation", fitted, GeneratorSpec("MCLevelSetEstimation", opts), 0)
    assert isinstance(acq, ProbabilityStraddle) and not acq.numpy_ready()
    link = Link("logit", 0.5)
    acq.post = _Moments(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.1]))  # type: ignore[assignment]
    value = acq(torch.zeros(2, 1, 2, dtype=torch.float64)).detach().numpy()
    z = np.random.default_rng(1).standard_normal(100_000)
    for i, (m, v) in enumerate([(0.0, 1.0), (2.0, 0.1)]):
        p = link.prob(torch.tensor(m + np.sqrt(v) * z)).numpy()
        mc = np.sqrt(3.84 * max(p.var(), PROB_STRADDLE_MIN_VAR)) - abs(p.mean() - 0.75)
        assert value[i] == pytest.approx(mc, abs=5e-3)
