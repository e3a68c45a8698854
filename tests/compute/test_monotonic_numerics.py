"""compute/monotonic.py: MonotonicProjectionGP's projected posterior is AEPsych's projection of the
GP classification posterior, monotone along the named dimension, accurate on a monotone truth, and
drives the acquisitions to valid points."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import scipy.stats
import torch

from psyserve.compute.contract import KNOWN_ACQFS, GenerateJob, GeneratorSpec, ModelSpec, QueryJob, TrainingData, acqf_supports
from psyserve.compute.jobs import generate, query
from psyserve.compute.models import fit_model
from psyserve.compute.monotonic import FIXED_GRID, ProjectedLatent

MONO = "MonotonicProjectionGP"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def truth(X: np.ndarray) -> np.ndarray:
    """Monotone (non-decreasing) in dimension 0, with flat ends where a GP tends to wiggle; not in dimension 1."""
    return 2.0 * np.tanh(6.0 * (X[:, 0] - 0.5)) + 0.8 * np.sin(2.0 * np.pi * X[:, 1])


def _data(n: int, seed: int) -> TrainingData:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 2))
    return TrainingData(X, (rng.random(n) < scipy.stats.norm.cdf(truth(X))).astype(float))


def _slices(latent: object, link: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent means and response probabilities along dimension 0 at 11 values of dimension 1."""
    g = np.linspace(0.0, 1.0, 101)
    X = np.concatenate([np.stack([g, np.full_like(g, c)], 1) for c in np.linspace(0.0, 1.0, 11)])
    with torch.no_grad():
        mu, var = latent.mean_variance(torch.as_tensor(X))  # type: ignore[attr-defined]
        p = link.expected_prob(mu, var)  # type: ignore[attr-defined]
    return X, mu.numpy().reshape(11, 101), p.numpy().reshape(11, 101)


def test_monotone_along_the_named_dimension_and_accurate() -> None:
    data = _data(60, seed=1)
    plain = fit_model(ModelSpec("GPClassificationModel", 2, {}), data.X, data.y)
    mono = fit_model(ModelSpec(MONO, 2, {"monotonic_dims": "0"}), data.X, data.y)
    assert isinstance(mono.latent, ProjectedLatent)
    X, mu_plain, p_plain = _slices(plain.latent, plain.link)
    _, mu_mono, p_mono = _slices(mono.latent, mono.link)
    drop_plain = float(np.maximum(0.0, -np.diff(mu_plain, axis=1)).max())
    drop_mono = float(np.maximum(0.0, -np.diff(mu_mono, axis=1)).max())
    p_true = scipy.stats.norm.cdf(truth(X)).reshape(11, 101)
    err_plain, err_mono = float(np.abs(p_plain - p_true).mean()), float(np.abs(p_mono - p_true).mean())
    print(f"largest decrease of the latent mean along dim 0: plain GP {drop_plain:.4f}, projected {drop_mono:.4f}; "
          f"mean |p error|: plain {err_plain:.3f}, projected {err_mono:.3f}")
    assert drop_plain > 0.05  # the plain GP does go down along the monotone dimension here ...
    assert drop_mono < 5e-3  # ... the projection does not, up to its grids' discretisation (0.017 without the fixed grid)
    assert err_mono < 0.12 and err_mono <= err_plain + 0.01


def test_projection_is_aepsychs_quantile_heuristic() -> None:
    """Recomputed here from the base posterior: mean = max over the sweep from 0 to x (and the fixed grid
    below x), sd = (ub - lb) / 4."""
    data = _data(30, seed=2)
    lat = fit_model(ModelSpec(MONO, 2, {"monotonic_dims": "0,1", "monotonic_grid_size": 7, "min_f_val": -1.0}), data.X, data.y).latent
    assert isinstance(lat, ProjectedLatent)
    X = np.array([[0.3, 0.8], [0.9, 0.1], [0.0, 0.5]])
    mu_p, var_p = (t.numpy() for t in lat.mean_variance(torch.as_tensor(X)))
    for i, x in enumerate(X):
        pts = [x]
        for d in (0, 1):
            for j in range(7):
                z = x.copy()
                z[d] = x[d] * j / 7
                pts.append(z)
            for g in np.linspace(0.0, 1.0, FIXED_GRID):
                z = x.copy()
                z[d] = min(g, x[d])
                pts.append(z)
        mu, var = (t.numpy() for t in lat.base.mean_variance(torch.as_tensor(np.array(pts))))
        sd = np.sqrt(var)
        m = max(mu.max(), -1.0)
        lb = max((mu - 2 * sd).max(), -1.0)
        ub = max(mu[0] + 2 * sd[0], m)
        assert mu_p[i] == pytest.approx(m, abs=1e-12)
        assert np.sqrt(var_p[i]) == pytest.approx(max((ub - lb) / 4, 1e-4), abs=1e-12)


def test_generators_and_queries_give_valid_points() -> None:
    data = _data(25, seed=3)
    spec = ModelSpec(MONO, 2, {"monotonic_dims": "0"})
    supported = sorted(a for a in KNOWN_ACQFS if acqf_supports(MONO, a))
    assert {"MCLevelSetEstimation", "BernoulliMCMutualInformation", "MCPosteriorVariance", "EAVC"} <= set(supported)
    assert not acqf_supports(MONO, "qNoisyExpectedImprovement")  # needs a BoTorch posterior: the projection is not one
    pairs = [("MCLevelSetEstimation", "optimize"), ("MCLevelSetEstimation", "grid"), ("BernoulliMCMutualInformation", "optimize"), ("MCPosteriorVariance", "thompson"), ("EAVC", "optimize")]
    for acqf, method in pairs:
        opts = {"target": 0.75, "restarts": 3, "samps": 128, "lookahead_points": 32, "method": method}
        res = generate(GenerateJob(spec, GeneratorSpec(acqf, opts), data, 2, seed=4, fixed={1: 0.25} if method == "grid" else {}))
        assert res.points.shape == (2, 2) and np.all((res.points >= 0) & (res.points <= 1)), (acqf, method)
        if method == "grid":
            assert np.all(res.points[:, 1] == 0.25)
    inv = query(QueryJob(spec, data, None, "inverse", True, None, 0.75, {1: 0.5}, seed=0))
    assert inv.x[0, 1] == 0.5 and abs(float(inv.probability[0]) - 0.75) < 0.02
    with pytest.raises(ValueError, match="monotonic"):
        fit_model(ModelSpec(MONO, 2, {"monotonic_dims": "2"}), data.X, data.y)
