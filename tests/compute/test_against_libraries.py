"""Every hand-derived formula of psyserve.compute checked against the library computation it replaces.

- the packed classification ELBO and its fused closure against GPyTorch's VariationalELBO with a
  BernoulliLikelihood, on the same (perturbed) variational and hyper-parameters: value and gradient
  (to 1e-7 with an exact log Phi in GPyTorch's quadrature; to 2e-5 as GPyTorch computes it, whose
  LogNormalCDF is a rational approximation)
- bvn_excess against BoTorch's bivariate normal (botorch.utils.probability.bvn) over |rho| <= 0.9995
- the exact pairwise posterior variance against BoTorch's PairwiseMCPosteriorVariance (QMC)
- ConditionedLatentGP against an exact GP's condition_on_observations
- BALD against a Monte Carlo estimate of the mutual information
- the shared numerics (Gauss-Hermite tables, Gamma log-prior, numpy kernel forms) against NumPy /
  GPyTorch / torch autograd
The botorch and gpytorch versions these passed on are pinned in pyproject.toml.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from botorch.acquisition.active_learning import PairwiseMCPosteriorVariance
from botorch.acquisition.objective import GenericMCObjective
from botorch.sampling.normal import SobolQMCNormalSampler
from botorch.utils.probability.bvn import bvnu
from gpytorch.mlls import VariationalELBO
from gpytorch.priors import GammaPrior
from scipy.stats import norm

import observers as ob
from psyserve.compute import ModelSpec
from psyserve.compute.acquisition import BernoulliBALD, PairwisePosteriorVariance
from psyserve.compute.bvn import bvn_excess
from psyserve.compute.elbo import PackedElbo, variational_elbo_closure
from psyserve.compute.kernels import kernel_input_grad_np, kernel_lengthscale_grad_np, stationary_kernel
from psyserve.compute.models import fit_model
from psyserve.compute.numerics import GH20_W, GH20_X, GH32_W, GH32_X, gamma_log_prior

CLS, REG, PAIR = "GPClassificationModel", "GPRegressionModel", "PairwiseProbitModel"
DT = torch.float64


def _classification_model(kernel: str, prior: str = "lognormal") -> tuple:
    rng = np.random.default_rng(0)
    X = rng.random((15, 2))
    y = ob.sample(ob.novel_detection(2 * X - 1), rng)
    model = fit_model(ModelSpec(CLS, 2, {"kernel": kernel, "lengthscale_prior": prior}), X, y).model
    assert model is not None
    model.train()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the optimum: every gradient entry is non-trivial
        vd = model.model.variational_strategy._variational_distribution
        vd.variational_mean.add_(0.3 * torch.randn(vd.variational_mean.shape, generator=gen, dtype=DT))
        vd.chol_variational_covar.copy_(
            (vd.chol_variational_covar + 0.1 * torch.randn(vd.chol_variational_covar.shape, generator=gen, dtype=DT)).tril()
        )
        model.model.covar_module.base_kernel.raw_lengthscale.mul_(1.3)
        model.model.covar_module.raw_outputscale.add_(0.4)
        model.model.mean_module.raw_constant.add_(0.2)
    return model, torch.as_tensor(X), torch.as_tensor(y)


def _gpytorch_loss(model: Any, mll: VariationalELBO, X: torch.Tensor, y: torch.Tensor, exact_log_cdf: bool) -> torch.Tensor:
    """-ELBO / n from GPyTorch's own pieces: VariationalELBO as it is, or (exact_log_cdf) the same with
    GPyTorch's Gauss-Hermite quadrature of log Phi(+-f) taken with torch's exact log_ndtr instead of
    GPyTorch's LogNormalCDF, a rational approximation good to ~1e-6."""
    if not exact_log_cdf:
        return -mll(model.model(X), y)
    dist = model.model(X)
    sign = 2.0 * y - 1.0
    ell = model.likelihood.quadrature(lambda f: torch.special.log_ndtr(f * sign), dist).sum()
    kl = model.model.variational_strategy.kl_divergence().sum()
    log_prior = sum(prior.log_prob(closure(module)).sum() for _, module, prior, closure, _ in mll.named_priors())
    return -(ell - kl + log_prior) / len(y)


@pytest.mark.parametrize("prior", ["lognormal", "gamma"])
@pytest.mark.parametrize("exact_log_cdf", [True, False])
@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_packed_elbo_and_closure_match_gpytorch_variational_elbo(kernel: str, exact_log_cdf: bool, prior: str) -> None:
    model, X, y = _classification_model(kernel, prior)
    mll = VariationalELBO(model.likelihood, model.model, num_data=len(y))
    closure = variational_elbo_closure(model, mll, X, y)
    names = list(closure.parameters)
    for p in closure.parameters.values():
        p.grad = None
    loss = _gpytorch_loss(model, mll, X, y, exact_log_cdf)
    loss.backward()
    lib_loss = float(loss.detach())
    lib_grads = {n: closure.parameters[n].grad.detach().clone() for n in names}
    ours_loss, ours_grads = closure()
    packed = PackedElbo(model, mll, X, y)
    packed_loss, _ = packed(packed.get())  # (its gradient: test_fast_paths, against the closure)
    # GPyTorch's LogNormalCDF is a rational approximation: its error depends on where the model sits
    # (measured: 7e-6 relative on the Gamma-prior fit, 2.6e-4 on the LogNormal one); exact: 1e-8
    rel, atol = (1e-7, 1e-8) if exact_log_cdf else (5e-4, 1e-4)
    assert float(ours_loss.detach()) == pytest.approx(lib_loss, rel=rel)
    assert packed_loss == pytest.approx(lib_loss, rel=rel)
    for n, g in zip(names, ours_grads, strict=True):
        torch.testing.assert_close(g.detach(), lib_grads[n], rtol=rel, atol=atol)


@pytest.mark.parametrize(("lo", "hi", "tol"), [(0.0, 0.75, 1e-12), (0.75, 0.925, 1e-10), (0.925, 0.9995, 2e-6)])
def test_bvn_excess_matches_botorch_bvn(lo: float, hi: float, tol: float) -> None:
    """Phi2(a, b; rho) - Phi(a) Phi(b), with BoTorch's Phi2(a, b; rho) = bvnu(rho, -a, -b)."""
    gen = torch.Generator().manual_seed(3)
    n = 4000
    a = 3.0 * torch.randn(n, generator=gen, dtype=DT)
    b = 3.0 * torch.randn(n, generator=gen, dtype=DT)
    sign = torch.where(torch.rand(n, generator=gen, dtype=DT) < 0.5, -1.0, 1.0)
    rho = sign * (lo + (hi - lo) * torch.rand(n, generator=gen, dtype=DT))
    rho[:3] = torch.tensor([hi, -hi, lo], dtype=DT)
    ours = bvn_excess(a, b, rho)
    phi = torch.distributions.Normal(torch.zeros((), dtype=DT), torch.ones((), dtype=DT)).cdf
    lib = bvnu(rho, -a, -b) - phi(a) * phi(b)
    assert float((ours - lib).abs().max()) < tol


def _pairwise_fit() -> tuple:
    rng = np.random.default_rng(4)
    X = rng.random((14, 2, 2))
    u = -((X - 0.3) ** 2).sum(-1)
    y = (u[:, 0] > u[:, 1]).astype(float)
    fitted = fit_model(ModelSpec(PAIR, 2, {}), X, y)
    assert fitted.model is not None
    return fitted


def test_pairwise_posterior_variance_matches_botorch_mc() -> None:
    fitted = _pairwise_fit()
    pairs = torch.as_tensor(np.random.default_rng(5).random((6, 2, 2)), dtype=DT)
    ours = PairwisePosteriorVariance(fitted.model, fitted.latent, fitted.pending_noise)
    # AEPsych's setup: ProbitObjective on the sampled utility difference
    probit = GenericMCObjective(lambda samples, X=None: torch.distributions.Normal(0.0, 1.0).cdf(samples[..., 0]))
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([2**14]), seed=0)
    lib = PairwiseMCPosteriorVariance(fitted.model, objective=probit, sampler=sampler)
    with torch.no_grad():
        exact, mc = ours(pairs), lib(pairs)
    assert float(exact.min()) > 1e-3  # informative pairs, not all at zero
    torch.testing.assert_close(exact, mc, rtol=0.02, atol=2e-4)


def test_conditioned_latent_gp_matches_exact_conditioning() -> None:
    """A pending point with the model's noise: ConditionedLatentGP's covariance equals the exact GP's
    after condition_on_observations (at the posterior mean: means unchanged as well)."""
    rng = np.random.default_rng(6)
    X = rng.random((20, 2))
    y = np.sin(5 * X[:, 0]) + X[:, 1] ** 2 + 0.05 * rng.standard_normal(20)
    fitted = fit_model(ModelSpec(REG, 2, {}), X, y)
    assert fitted.model is not None
    P = torch.as_tensor(rng.random((3, 2)), dtype=DT)
    G = torch.as_tensor(rng.random((8, 2)), dtype=DT)
    conditioned = fitted.latent.condition(P, noise=fitted.pending_noise)
    model = fitted.model
    model.eval()
    with torch.no_grad():
        model.posterior(P)  # prediction caches, which condition_on_observations needs
        mean_P = model.posterior(P).mean
        fantasy = model.condition_on_observations(P, mean_P)
        post = fantasy.posterior(G)
        mu, var = conditioned.mean_variance(G)
        cov = conditioned.covariance(G, G)
    torch.testing.assert_close(mu, post.mean.squeeze(-1), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(var, post.variance.squeeze(-1), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(cov, post.mvn.covariance_matrix, rtol=1e-5, atol=2e-6)  # GPyTorch adds 1e-6 jitter


def test_bald_matches_monte_carlo() -> None:
    rng = np.random.default_rng(7)
    X = rng.random((25, 2))
    y = ob.sample(ob.novel_detection(2 * X - 1), rng)
    fitted = fit_model(ModelSpec(CLS, 2, {}), X, y)
    bald = BernoulliBALD(fitted.model, fitted.latent, fitted.pending_noise)
    x = torch.as_tensor(rng.random((5, 1, 2)), dtype=DT)
    with torch.no_grad():
        ours = bald(x).numpy()
        mu, var = fitted.latent.mean_variance(x)
    f = rng.standard_normal((400_000, 1)) * np.sqrt(var.numpy().reshape(1, -1)) + mu.numpy().reshape(1, -1)
    p = norm.cdf(f)

    def h(q: np.ndarray) -> np.ndarray:
        q = np.clip(q, 1e-12, 1 - 1e-12)
        return -(q * np.log(q) + (1 - q) * np.log(1 - q))

    mc = h(p.mean(0)) - h(p).mean(0)
    np.testing.assert_allclose(ours, mc, rtol=0.01, atol=1e-3)


def test_shared_numerics_match_their_libraries() -> None:
    for n, (x, w) in ((20, (GH20_X, GH20_W)), (32, (GH32_X, GH32_W))):
        ref_x, ref_w = np.polynomial.hermite.hermgauss(n)
        np.testing.assert_array_equal(x, ref_x)
        np.testing.assert_array_equal(w, ref_w)
        assert float(w @ x**2) == pytest.approx(math.sqrt(math.pi) / 2, rel=1e-12)  # int x^2 e^{-x^2}
    ls = np.array([0.2, 0.5, 1.7])
    value, grad = gamma_log_prior(ls, 3.0, 6.0)
    t = torch.tensor(ls, requires_grad=True)
    lib = GammaPrior(torch.tensor(3.0, dtype=DT), torch.tensor(6.0, dtype=DT)).log_prob(t).sum()
    lib.backward()
    assert value == pytest.approx(float(lib.detach()), rel=1e-12)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-12)
    # the numpy kernel forms against the torch kernel and its autograd, for every kind the code uses
    rng = np.random.default_rng(8)
    A, Xq, lsd = rng.random((4, 2)), rng.random((3, 2)), np.array([0.3, 0.7])
    for kind, nu in (("rbf", 2.5), ("matern", 2.5), ("matern", 1.5)):
        Xt = torch.tensor(Xq, requires_grad=True)
        lt = torch.tensor(lsd, requires_grad=True)
        K_ref = stationary_kernel(torch.as_tensor(A), Xt, lt, torch.tensor(1.3, dtype=DT), kind, nu)
        K, diff, Kp = kernel_input_grad_np(A, Xq, lsd, 1.3, kind, nu)
        np.testing.assert_allclose(K, K_ref.detach().numpy(), rtol=1e-13)
        d_x = np.einsum("ab,abd->bd", Kp, diff / lsd**2)  # d sum_a k(a, x_b) / d x_b
        d_x_ref, d_l_ref = torch.autograd.grad(K_ref.sum(), (Xt, lt))
        np.testing.assert_allclose(d_x, d_x_ref.numpy(), rtol=1e-10, atol=1e-13)
        k_unit, dk_dl = kernel_lengthscale_grad_np((A[:, None, :] - Xq[None, :, :]) ** 2, lsd, kind, nu)
        np.testing.assert_allclose(1.3 * k_unit, K, rtol=1e-13)
        np.testing.assert_allclose(1.3 * dk_dl.sum((0, 1)), d_l_ref.numpy(), rtol=1e-10, atol=1e-13)
