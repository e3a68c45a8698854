"""compute/semip.py: the semi-parametric models recover a simulated observer's threshold and slope along
the intensity dimension, their posterior moments and probability read-out match Monte Carlo of q, warm
starts and reuse behave, and IntensityAwareSemiPGenerator / every supported acquisition give valid points."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from psyserve.compute.contract import KNOWN_ACQFS, GenerateJob, GeneratorSpec, ModelSpec, QueryJob, TrainingData, acqf_supports
from psyserve.compute.jobs import generate, query
from psyserve.compute.models import fit_model
from psyserve.compute.semip import ProductLatent, threshold_readout

KINDS = ("SemiParametricGPModel", "HadamardSemiPModel")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Run like a pool worker (one torch thread): many threads on 2 busy cores cost ten times more here."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)
CONTEXTS = np.linspace(0.05, 0.95, 10)


def offset(c: np.ndarray) -> np.ndarray:
    return 0.35 + 0.15 * np.sin(2.0 * np.pi * c)  # where f = 0 along the intensity


def slope(c: np.ndarray) -> np.ndarray:
    return 6.0 + 4.0 * c


def observer(X: np.ndarray, floor: float = 0.0, link: str = "probit") -> np.ndarray:
    f = slope(X[:, 0]) * (X[:, 1] - offset(X[:, 0]))
    F = scipy.stats.norm.cdf(f) if link == "probit" else scipy.special.expit(f)
    return floor + (1.0 - floor) * F


def _data(n: int, seed: int, floor: float = 0.0, link: str = "probit") -> TrainingData:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 2))
    return TrainingData(X, (rng.random(n) < observer(X, floor, link)).astype(float))


@pytest.mark.parametrize("kind", KINDS)
def test_threshold_and_slope_recovery(kind: str) -> None:
    data = _data(150, seed=1)
    fitted = fit_model(ModelSpec(kind, 2, {"stim_dim": 1, "slope_mean": 5.0}), data.X, data.y)
    assert isinstance(fitted.latent, ProductLatent)
    ctx = np.stack([CONTEXTS, np.zeros_like(CONTEXTS)], 1)
    thr, var = threshold_readout(fitted.latent, ctx, 0.75)
    truth = offset(CONTEXTS) + scipy.stats.norm.ppf(0.75) / slope(CONTEXTS)
    with torch.no_grad():
        k_hat = fitted.latent.k.mean_var(torch.as_tensor(CONTEXTS).reshape(-1, 1))[0].numpy()
    thr_err = np.abs(thr - truth)
    slope_err = np.abs(k_hat - slope(CONTEXTS)) / slope(CONTEXTS)
    print(f"{kind}: threshold |error| mean {thr_err.mean():.3f} max {thr_err.max():.3f}; slope rel. error mean {slope_err.mean():.2f}")
    assert thr_err.mean() < 0.04 and thr_err.max() < 0.1
    assert slope_err.mean() < 0.3
    assert np.all(var > 0) and np.all(np.sqrt(var) < 0.2)


def test_floor_link_recovery_2afc() -> None:
    """A 2AFC observer (logistic link, 0.5 guess rate: HadamardSemiPModel's AEPsych default): the 0.75
    point of a floored logistic is where f = 0, i.e. the offset. Half the answers carry no information,
    so 250 random trials pin it down less well than 150 yes/no trials."""
    data = _data(250, seed=2, floor=0.5, link="logit")
    fitted = fit_model(ModelSpec("HadamardSemiPModel", 2, {"stim_dim": 1, "slope_mean": 5.0, "link": "logit", "floor": 0.5}), data.X, data.y)
    thr, _ = threshold_readout(fitted.latent, np.stack([CONTEXTS, CONTEXTS], 1), 0.75)
    err = np.abs(thr - offset(CONTEXTS))
    print(f"2AFC threshold |error| mean {err.mean():.3f} max {err.max():.3f}")
    assert err.mean() < 0.12 and err.max() < 0.25
    with torch.no_grad():
        p = fitted.latent.probability(torch.as_tensor([[0.5, 0.0], [0.5, 1.0]]).unsqueeze(-2)).squeeze(-1).numpy()
    assert p.min() >= 0.5 and p[0] < 0.65 and p[1] > 0.9  # never below the guess rate (truth 0.53, 1.0)


@pytest.mark.parametrize("kind", KINDS)
def test_moments_and_probability_match_monte_carlo(kind: str) -> None:
    data = _data(40, seed=3)
    lat = fit_model(ModelSpec(kind, 2, {"stim_dim": 1}), data.X, data.y).latent
    assert isinstance(lat, ProductLatent)
    X = torch.tensor([[0.2, 0.3], [0.25, 0.6], [0.8, 0.5]], dtype=torch.float64)
    Xc = X[:, :1]
    g = torch.Generator().manual_seed(0)
    samples = []
    for part in (lat.o, lat.k):  # joint draws of each GP at the three contexts from q
        mu, _, _ = part.mean_var(Xc)
        C = part.cov(Xc, Xc) + 1e-10 * torch.eye(3, dtype=torch.float64)
        samples.append(mu + torch.randn(200_000, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(C).mT)
    o, k = samples
    f = k * (X[:, 1] - o)
    mean, var = lat.mean_variance(X)
    np.testing.assert_allclose(mean.numpy(), f.mean(0).numpy(), atol=0.03)
    np.testing.assert_allclose(var.numpy(), f.var(0).numpy(), rtol=0.03)
    np.testing.assert_allclose(lat.covariance(X, X).numpy(), np.cov(f.numpy().T), rtol=0.05, atol=0.01)
    with torch.no_grad():
        p = lat.probability(X.unsqueeze(-2)).squeeze(-1).numpy()
    mc = lat.link.prob(f).mean(0).numpy()
    if kind == "SemiParametricGPModel":  # exact quadrature over (o, k)
        np.testing.assert_allclose(p, mc, atol=3e-3)
    else:  # the moment-matched normal: close, not exact
        np.testing.assert_allclose(p, mc, atol=0.05)


def test_warm_start_and_reuse() -> None:
    spec = ModelSpec("SemiParametricGPModel", 2, {"stim_dim": 1})
    data = _data(60, seed=4)
    first = fit_model(spec, data.X[:59], data.y[:59])
    cold = fit_model(spec, data.X, data.y)
    warm = fit_model(spec, data.X, data.y, warm_state=first.state)
    ctx = np.stack([CONTEXTS, CONTEXTS], 1)
    a, _ = threshold_readout(cold.latent, ctx, 0.75)
    b, _ = threshold_readout(warm.latent, ctx, 0.75)
    assert np.abs(a - b).max() < 0.02  # the same optimum, reached from the previous fit
    again = fit_model(spec, data.X, data.y, warm_state=warm.state, refit=False)  # same data: reused as it is
    c, _ = threshold_readout(again.latent, ctx, 0.75)
    np.testing.assert_array_equal(b, c)
    assert again.fit_seconds < warm.fit_seconds


@pytest.mark.parametrize("kind", KINDS)
def test_generators_give_valid_points(kind: str) -> None:
    data = _data(30, seed=5)
    spec = ModelSpec(kind, 2, {"stim_dim": 1, "link": "probit"})
    cheap = {"restarts": 3, "samps": 128, "lookahead_points": 64}
    # IntensityAwareSemiPGenerator with ThresholdBALV: the best context's threshold as the intensity
    opts = {**cheap, "method": "semip_intensity", "objective": "SemiPThresholdObjective", "target": 0.75}
    res = generate(GenerateJob(spec, GeneratorSpec("MCPosteriorVariance", opts), data, 2, seed=1))
    assert res.points.shape == (2, 2) and np.all((res.points >= 0) & (res.points <= 1))
    fitted = fit_model(spec, data.X, data.y)
    thr, _ = threshold_readout(fitted.latent, res.points, 0.75)
    np.testing.assert_allclose(res.points[:, 1], thr, atol=1e-9)
    fixed = generate(GenerateJob(spec, GeneratorSpec("MCPosteriorVariance", opts), data, 1, seed=1, fixed={0: 0.3}))
    assert fixed.points[0, 0] == 0.3 and 0 <= fixed.points[0, 1] <= 1
    # every acquisition the models support, through the plain optimiser, as a batch of two
    supported = sorted(a for a in KNOWN_ACQFS if acqf_supports(kind, a))
    assert {"MCLevelSetEstimation", "BernoulliMCMutualInformation", "MCPosteriorVariance", "EAVC"} <= set(supported)
    if kind == "HadamardSemiPModel":  # the same posterior interface: the look-ahead family once is enough (CI time)
        supported = ["MCLevelSetEstimation", "BernoulliMCMutualInformation", "GlobalMI"]
    for acqf in supported:
        res = generate(GenerateJob(spec, GeneratorSpec(acqf, {**cheap, "target": 0.75}), data, 2, seed=2))
        assert res.points.shape == (2, 2) and np.all((res.points >= 0) & (res.points <= 1)), acqf
    empty = TrainingData(np.zeros((0, 2)), np.zeros(0))  # no data yet: seeded Sobol points
    res = generate(GenerateJob(spec, GeneratorSpec("MCPosteriorVariance", opts), empty, 2, seed=1))
    assert res.points.shape == (2, 2) and np.all((res.points >= 0) & (res.points <= 1))


def test_inverse_query_is_the_threshold_of_the_probability_read_out() -> None:
    spec = ModelSpec("SemiParametricGPModel", 2, {"stim_dim": 1})
    data = _data(60, seed=6)
    inv = query(QueryJob(spec, data, None, "inverse", True, None, 0.75, {0: 0.4}, seed=0))
    assert inv.x[0, 0] == 0.4
    np.testing.assert_allclose(inv.probability, 0.75, atol=1e-6)
    truth = offset(np.array([0.4])) + scipy.stats.norm.ppf(0.75) / slope(np.array([0.4]))
    assert abs(inv.x[0, 1] - truth[0]) < 0.1
    with pytest.raises(ValueError, match="stim_dim"):
        fit_model(ModelSpec("HadamardSemiPModel", 2, {"stim_dim": 2}), data.X, data.y)
    with pytest.raises(ValueError, match="binary"):
        query(QueryJob(spec, TrainingData(data.X, data.y + 0.5), None, "prediction", True, data.X[:2], None, {}, seed=0))
