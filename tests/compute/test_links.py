"""Floor objectives' links (n-AFC guess rates): the hand-derived numerics against scipy, autograd and Monte Carlo."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from gpytorch.mlls import VariationalELBO

import observers as ob
from psyserve.compute import GeneratorSpec, ModelSpec
from psyserve.compute.elbo import PackedElbo, variational_elbo_closure
from psyserve.compute.factory import build_acquisition
from psyserve.compute.links import Link
from psyserve.compute.models import fit_model

CLS = "GPClassificationModel"
CDFS = {"probit": scipy.stats.norm.cdf, "logit": scipy.special.expit, "gumbel": scipy.stats.gumbel_l.cdf}
LOG_SFS = {"probit": scipy.stats.norm.logsf, "logit": lambda f: scipy.special.log_expit(-f), "gumbel": scipy.stats.gumbel_l.logsf}


@pytest.mark.parametrize("kind", ["probit", "logit", "gumbel"])
@pytest.mark.parametrize("floor", [0.0, 0.5])
def test_link_loglik_and_inverse_against_scipy(kind: str, floor: float) -> None:
    link = Link(kind, floor)
    f = np.linspace(-6.0, 4.0, 41)
    p = floor + (1 - floor) * CDFS[kind](f)
    for y, want in ((1.0, np.log(p)), (0.0, np.log1p(-floor) + LOG_SFS[kind](f))):
        ll, dll = link.loglik_np(f, np.full_like(f, y))
        np.testing.assert_allclose(ll, want, rtol=1e-9, atol=1e-12)
        ft = torch.tensor(f, dtype=torch.float64, requires_grad=True)
        lt = link.loglik(ft, torch.full_like(ft, y))
        np.testing.assert_allclose(lt.detach().numpy(), want, rtol=1e-9, atol=1e-12)
        (grad,) = torch.autograd.grad(lt.sum(), ft)
        np.testing.assert_allclose(dll, grad.numpy(), rtol=1e-7, atol=1e-10)
    for q in (floor + 0.05, 0.75, 0.95):
        level = link.latent_level(q)
        assert float(link.prob(torch.tensor(level, dtype=torch.float64))) == pytest.approx(q, abs=1e-10)
    with pytest.raises(ValueError, match="target"):
        link.latent_level(floor if floor > 0 else 0.0)


@pytest.mark.parametrize("kind", ["probit", "logit", "gumbel"])
def test_expected_probability_and_variance_against_monte_carlo(kind: str) -> None:
    link = Link(kind, 0.5)
    mu = torch.tensor([-1.5, 0.0, 0.7, 2.0], dtype=torch.float64)
    var = torch.tensor([0.2, 1.0, 2.5, 0.05], dtype=torch.float64)
    rng = np.random.default_rng(0)
    f = mu.numpy()[:, None] + np.sqrt(var.numpy())[:, None] * rng.standard_normal((4, 400_000))
    p = 0.5 + 0.5 * CDFS[kind](f)
    np.testing.assert_allclose(link.expected_prob(mu, var).numpy(), p.mean(1), atol=3e-3)
    np.testing.assert_allclose(link.prob_variance(mu, var).numpy(), p.var(1), atol=1e-3)


@pytest.mark.parametrize("kind", ["probit", "logit", "gumbel"])
def test_packed_elbo_with_a_floor_matches_autograd(kind: str) -> None:
    rng = np.random.default_rng(1)
    X = rng.random((15, 2))
    y = ob.sample(ob.novel_detection(2 * X - 1), rng)
    link = Link(kind, 0.5)
    model = fit_model(ModelSpec(CLS, 2, {"link": kind, "floor": 0.5}), X, y).model
    assert model is not None
    model.train()
    with torch.no_grad():  # away from the optimum: every gradient entry non-trivial
        vd = model.model.variational_strategy._variational_distribution
        vd.variational_mean.add_(0.3)
        model.model.covar_module.raw_outputscale.add_(0.4)
    mll = VariationalELBO(model.likelihood, model.model, num_data=len(y))
    assert PackedElbo.supports(model, mll)
    packed = PackedElbo(model, mll, torch.as_tensor(X), torch.as_tensor(y), link)
    loss, grad = packed(packed.get())
    ref = variational_elbo_closure(model, mll, torch.as_tensor(X), torch.as_tensor(y), link)
    ref_loss, ref_grads = ref()
    by_name = {name.rsplit(".", 1)[-1]: g.detach().numpy() for name, g in zip(ref.parameters, ref_grads)}
    expected = np.concatenate(
        [
            by_name["raw_lengthscale"].reshape(-1),
            by_name["raw_outputscale"].reshape(-1),
            by_name["raw_constant"].reshape(-1),
            by_name["variational_mean"],
            by_name["chol_variational_covar"][packed.tril],
        ]
    )
    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-10)
    np.testing.assert_allclose(grad, expected, atol=1e-9)
    # and the expected log-likelihood itself against GPyTorch's own (quadrature) for the link's likelihood
    with torch.no_grad():
        q = model.model(torch.as_tensor(X))
        gp_ell = float(model.likelihood.expected_log_prob(torch.as_tensor(y), q).sum())
        gh_x, gh_w = np.polynomial.hermite.hermgauss(40)
        nodes = q.mean.numpy()[:, None] + np.sqrt(2 * q.variance.numpy())[:, None] * gh_x
        mine = float((link.loglik_np(nodes, y[:, None])[0] @ gh_w).sum() / np.sqrt(np.pi))
    assert mine == pytest.approx(gp_ell, rel=1e-3)  # GPyTorch: 20 nodes, here 40


def test_floor_acquisitions_against_monte_carlo() -> None:
    """BALD and posterior variance with a floor link equal their definitions estimated by sampling."""
    rng = np.random.default_rng(2)
    X = rng.random((20, 1))
    p_true = 0.5 + 0.5 * scipy.stats.norm.cdf((X[:, 0] - 0.5) / 0.15)
    y = (rng.random(20) < p_true).astype(float)
    fitted = fit_model(ModelSpec(CLS, 1, {"link": "gumbel", "floor": 0.5}), X, y)
    link = fitted.link
    grid = torch.linspace(0.05, 0.95, 7, dtype=torch.float64).reshape(-1, 1, 1)
    mu, var = fitted.latent.mean_variance(grid)
    f = mu.detach().numpy().reshape(-1, 1) + np.sqrt(var.detach().numpy().reshape(-1, 1)) * rng.standard_normal((7, 200_000))
    p = 0.5 + 0.5 * scipy.stats.gumbel_l.cdf(f)

    def h(q: np.ndarray) -> np.ndarray:
        q = np.clip(q, 1e-12, 1 - 1e-12)
        return -(q * np.log(q) + (1 - q) * np.log1p(-q))

    bald = build_acquisition("BernoulliMCMutualInformation", fitted, GeneratorSpec("BernoulliMCMutualInformation", {}), 0)
    np.testing.assert_allclose(bald(grid).detach().numpy(), h(p.mean(1)) - h(p).mean(1), atol=3e-3)
    pv = build_acquisition(
        "MCPosteriorVariance",
        fitted,
        GeneratorSpec("MCPosteriorVariance", {"objective": "FloorGumbelObjective", "floor": 0.5}),
        0,
    )
    np.testing.assert_allclose(pv(grid).detach().numpy(), p.var(1), atol=1e-3)
    # the straddle's level is the latent value whose floored probability is the target
    lse = build_acquisition("MCLevelSetEstimation", fitted, GeneratorSpec("MCLevelSetEstimation", {"target": 0.75}), 0)
    assert lse.target == pytest.approx(np.log(-np.log(0.5)))  # Gumbel: F(t) = (0.75 - 0.5) / 0.5
    assert link.latent_level(0.75) == pytest.approx(lse.target)
    with pytest.raises(ValueError, match="same link"):
        build_acquisition(
            "MCPosteriorVariance", fitted, GeneratorSpec("MCPosteriorVariance", {"objective": "FloorProbitObjective"}), 0
        )


def test_lookahead_family_with_a_floor_against_monte_carlo() -> None:
    """GlobalMI, GlobalSUR, LocalMI and LocalSUR on a FloorProbitObjective model equal their
    definitions (level-set posteriors before / after y at x, y ~ floor + (1 - floor) Phi(f(x)))
    estimated by sampling the latent posterior jointly."""
    from psyserve.compute.lookahead import GlobalMI, GlobalSUR, LocalMI, LocalSUR

    rng = np.random.default_rng(3)
    X = rng.random((30, 2))
    y = (rng.random(30) < 0.5 + 0.5 * scipy.stats.norm.cdf((X[:, 0] - 0.5) / 0.15)).astype(float)  # level set x0 = 0.5
    fm = fit_model(ModelSpec(CLS, 2, {"link": "probit", "floor": 0.5}), X, y)
    t = fm.link.latent_level(0.75)
    args = (fm.model, fm.latent, fm.pending_noise)
    # SUR is non-zero only where one outcome can move a level-set probability across 1/2: a candidate
    # and reference points near the estimated level set
    cand = torch.as_tensor(rng.random((400, 2)))
    with torch.no_grad():
        m, v = fm.latent.mean_variance(cand)
    near = torch.argsort(((m - t) / v.sqrt()).abs())
    x = cand[near[:1]].reshape(1, 1, 2)
    R = cand[near[1:13]]
    with torch.no_grad():
        got = {
            "gmi": float(GlobalMI(*args, R, t, 0.5)(x)),
            "gsur": float(GlobalSUR(*args, R, t, 0.5)(x)),
            "lmi": float(LocalMI(*args, t, 0.5)(x)),
            "lsur": float(LocalSUR(*args, t, 0.5)(x)),
        }
        A = torch.cat([x[0], R])
        mu = fm.latent.mean(A).numpy()
        C = (fm.latent.covariance(A, A) + 1e-9 * torch.eye(13, dtype=torch.float64)).numpy()
    F = rng.multivariate_normal(mu, C, size=300_000)
    Y = rng.random(F.shape[0]) < 0.5 + 0.5 * scipy.stats.norm.cdf(F[:, 0])

    def h(q: np.ndarray) -> np.ndarray:
        q = np.clip(q, 1e-12, 1 - 1e-12)
        return -(q * np.log(q) + (1 - q) * np.log(1 - q))

    def e(q: np.ndarray) -> np.ndarray:
        return np.minimum(q, 1 - q)

    P1 = Y.mean()
    want = {}
    for key, cols in (("g", slice(1, None)), ("l", slice(0, 1))):
        H = F[:, cols] > t
        p, p1, p0 = H.mean(0), H[Y].mean(0), H[~Y].mean(0)
        want[key + "mi"] = float(np.mean(h(p) - P1 * h(p1) - (1 - P1) * h(p0)))
        want[key + "sur"] = float(np.mean(e(p) - P1 * e(p1) - (1 - P1) * e(p0)))
    assert min(want.values()) > 2e-3, want  # a candidate where every quantity is far from zero
    for k in got:
        assert got[k] == pytest.approx(want[k], rel=0.15, abs=1e-3), (k, got, want)
