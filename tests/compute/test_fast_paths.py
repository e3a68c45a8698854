"""The hand-derived gradients and numpy fast paths agree with autograd and with BoTorch's generic optimiser."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from gpytorch.mlls import VariationalELBO

import observers as ob
from psyserve.compute import GeneratorSpec, ModelSpec
from psyserve.compute.elbo import PackedElbo, variational_elbo_closure
from psyserve.compute.factory import build_acquisition
from psyserve.compute.models import fit_model
from psyserve.compute.optimize import _optimize, _optimize_moments

CLS = "GPClassificationModel"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 2))
    return X, ob.sample(ob.novel_detection(2 * X - 1), rng)


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_packed_elbo_matches_autograd(kernel: str) -> None:
    X, y = _data(15, 0)
    model = fit_model(ModelSpec(CLS, 2, {"kernel": kernel}), X, y).model
    assert model is not None
    model.train()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move away from the optimum so that every gradient entry is non-trivial
        vd = model.model.variational_strategy._variational_distribution
        vd.variational_mean.add_(0.3 * torch.randn(vd.variational_mean.shape, generator=gen, dtype=torch.float64))
        noise = 0.1 * torch.randn(vd.chol_variational_covar.shape, generator=gen, dtype=torch.float64)
        vd.chol_variational_covar.copy_((vd.chol_variational_covar + noise).tril())
        model.model.covar_module.base_kernel.raw_lengthscale.mul_(1.3)
        model.model.covar_module.raw_outputscale.add_(0.4)
        model.model.mean_module.raw_constant.add_(0.2)
    mll = VariationalELBO(model.likelihood, model.model, num_data=len(y))
    assert PackedElbo.supports(model, mll)
    packed = PackedElbo(model, mll, torch.as_tensor(X), torch.as_tensor(y))
    loss, grad = packed(packed.get())
    ref = variational_elbo_closure(model, mll, torch.as_tensor(X), torch.as_tensor(y))
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
    assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-12)
    np.testing.assert_allclose(grad, expected, atol=1e-10)
    # packing round-trips through the model's parameters
    moved = packed.get() + 0.01
    packed.set(moved)
    np.testing.assert_array_equal(packed.get(), moved)


@pytest.mark.parametrize("kernel", ["rbf", "matern52"])
def test_posterior_moment_gradients_match_autograd(kernel: str) -> None:
    X, y = _data(25, 2)
    latent = fit_model(ModelSpec(CLS, 2, {"kernel": kernel}), X, y).latent
    assert latent.analytic_grad
    Xq = torch.rand(7, 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    # the one-node autograd Function against the op-by-op graph
    assert torch.autograd.gradcheck(lambda x: latent.mean_variance(x), (Xq,))
    mu, var = latent._mean_variance(Xq)
    d_mu = torch.autograd.grad(mu.sum(), Xq, retain_graph=True)[0].squeeze(1).numpy()
    d_var = torch.autograd.grad(var.sum(), Xq)[0].squeeze(1).numpy()
    # the numpy moments used by the acquisition optimiser
    m_np, v_np, dm_np, dv_np = latent.moments_np(Xq.detach().squeeze(1).numpy())
    np.testing.assert_allclose(m_np, mu.detach().squeeze(-1).numpy(), atol=1e-10)
    np.testing.assert_allclose(v_np, var.detach().squeeze(-1).numpy(), atol=1e-10)
    np.testing.assert_allclose(dm_np, d_mu, atol=1e-8)
    np.testing.assert_allclose(dv_np, d_var, atol=1e-8)


MOMENT_ACQFS = [
    ("MCLevelSetEstimation", "ProbitObjective"),
    ("MCPosteriorVariance", "IdentityMCObjective"),
    ("MCPosteriorVariance", "ProbitObjective"),
    ("BernoulliMCMutualInformation", "ProbitObjective"),
]


@pytest.mark.parametrize(("acqf", "objective"), MOMENT_ACQFS)
def test_acquisition_moment_derivatives_match_autograd(acqf: str, objective: str) -> None:
    """``from_moments`` (numpy, hand-derived) against the torch forward differentiated by autograd,
    over means and variances from confident to very uncertain."""
    X, y = _data(20, 6)
    fitted = fit_model(ModelSpec(CLS, 2, {}), X, y)
    acq = build_acquisition(acqf, fitted, GeneratorSpec(acqf, {"target": 0.75, "objective": objective}), seed=0)
    mu_grid, var_grid = np.meshgrid(np.linspace(-4.0, 4.0, 17), np.geomspace(1e-4, 30.0, 13))
    mu = torch.tensor(mu_grid.ravel(), requires_grad=True)
    var = torch.tensor(var_grid.ravel(), requires_grad=True)

    class Moments:  # the acquisition's forward on given moments instead of a posterior
        analytic_grad = False

        def mean_variance(self, _: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return mu.reshape(-1, 1), var.reshape(-1, 1)

    acq.post = Moments()  # type: ignore[attr-defined]
    ref = acq(torch.zeros(mu.shape[0], 1, 2, dtype=torch.float64))
    g_mu, g_var = (
        torch.zeros_like(mu) if g is None else g for g in torch.autograd.grad(ref.sum(), (mu, var), allow_unused=True)
    )
    value, d_mu, d_var = acq.from_moments(mu_grid.ravel(), var_grid.ravel())  # type: ignore[attr-defined]
    np.testing.assert_allclose(value, ref.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(d_mu, g_mu.numpy(), atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(d_var, g_var.numpy(), atol=1e-6, rtol=1e-5)


NUMPY_ACQFS = [*MOMENT_ACQFS, ("EAVC", "ProbitObjective"), ("GlobalMI", "ProbitObjective")]


@pytest.mark.parametrize(("kernel", "pending"), [("rbf", False), ("matern52", False), ("rbf", True)])
@pytest.mark.parametrize(("acqf", "objective"), NUMPY_ACQFS)
def test_numpy_acquisition_values_and_gradients_match_autograd(acqf: str, objective: str, kernel: str, pending: bool) -> None:
    """``value_grad_np`` (what the numpy optimiser evaluates) against the torch forward on the real
    posterior, differentiated by autograd: the moments' and cross-covariances' input gradients and
    the acquisitions' derivatives in them together; with pending points (the posterior
    conditioned on them, as for the later points of a batch) too."""
    X, y = _data(25, 7)
    fitted = fit_model(ModelSpec(CLS, 2, {"kernel": kernel}), X, y)
    options = {"target": 0.75, "objective": objective, "lookahead_points": 64}
    acq = build_acquisition(acqf, fitted, GeneratorSpec(acqf, options), seed=3)
    if pending:
        acq.set_X_pending(torch.tensor([[0.2, 0.7], [0.6, 0.4]], dtype=torch.float64))
    assert acq.numpy_ready()  # type: ignore[operator]
    Xq = torch.rand(40, 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8), requires_grad=True)
    ref = acq(Xq)
    (g,) = torch.autograd.grad(ref.sum(), Xq)
    value, grad = acq.value_grad_np(Xq.detach().squeeze(1).numpy())  # type: ignore[operator]
    np.testing.assert_allclose(value, ref.detach().numpy(), atol=1e-9)
    np.testing.assert_allclose(grad, g.squeeze(1).numpy(), atol=1e-6, rtol=1e-5)
    value_only, none = acq.value_grad_np(Xq.detach().squeeze(1).numpy(), grad=False)  # type: ignore[operator]
    assert none is None
    np.testing.assert_array_equal(value_only, value)


@pytest.mark.parametrize(("acqf", "objective"), NUMPY_ACQFS)
def test_numpy_acquisition_optimiser_matches_botorch(acqf: str, objective: str) -> None:
    X, y = _data(30, 4)
    fitted = fit_model(ModelSpec(CLS, 2, {}), X, y)
    options: dict[str, float | int | str] = {"target": 0.75, "objective": objective}
    acq = build_acquisition(acqf, fitted, GeneratorSpec(acqf, options), seed=0)
    for fixed in ({}, {1: 0.25}):
        fast = _optimize_moments(acq, 2, fixed, restarts=10, raw_samples=1000, maxiter=100, timeout=None, seed=5, ftol=1e-9)  # type: ignore[arg-type]
        assert fast is not None
        generic = _optimize(acq, 2, 1, fixed, 10, 1000, 100, None, 5, None, 1e-9)
        with torch.no_grad():
            a_fast, a_generic = float(acq(fast.unsqueeze(0))), float(acq(generic.unsqueeze(0)))
        assert a_fast >= a_generic - 1e-4 * max(1.0, abs(a_generic))
        assert float(fast.min()) >= 0.0 and float(fast.max()) <= 1.0
        for i, v in fixed.items():
            assert float(fast[0, i]) == v


def test_banded_bivariate_normal_rule_matches_the_full_rule() -> None:
    """Genz's node counts by |rho| (what large look-ahead batches use) against 20 nodes everywhere
    (small batches), both with and without autograd."""
    from psyserve.compute.bvn import _bvn_gl, bvn_excess

    gen = torch.Generator().manual_seed(0)
    a = 2.0 * torch.randn(3000, dtype=torch.float64, generator=gen)
    b = 2.0 * torch.randn(3000, dtype=torch.float64, generator=gen)
    rho = 1.85 * torch.rand(3000, dtype=torch.float64, generator=gen) - 0.925
    full = _bvn_gl(a, b, torch.asin(rho), 20)
    banded = bvn_excess(a, b, rho)
    torch.testing.assert_close(banded, full, rtol=0.0, atol=1e-13)
    rho_g = rho.clone().requires_grad_()
    banded_g = bvn_excess(a, b, rho_g)
    assert banded_g.requires_grad
    torch.testing.assert_close(banded_g.detach(), banded, rtol=0.0, atol=1e-15)


def _pairwise_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, 2, 2))
    u = -3.0 * ((X - 0.3) ** 2).sum(-1)
    return X, (rng.random(n) < ob.probability((u[:, 0] - u[:, 1]) / np.sqrt(2.0))).astype(float)


def _pairwise_model(X: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
    from botorch.models import PairwiseGP
    from botorch.models.pairwise_gp import PairwiseLaplaceMarginalLogLikelihood

    from psyserve.compute.kernels import pairwise_kernel
    from psyserve.compute.models import pairwise_to_comparisons

    datapoints, comps = pairwise_to_comparisons(X, y)
    np.random.seed(0)  # BoTorch starts its mode search from a randomised point (global RNG)
    # a tight fsolve tolerance: BoTorch's reference gradient then holds to ~1e-9
    model = PairwiseGP(datapoints, comps, covar_module=pairwise_kernel(2), xtol=1e-12)
    return model, PairwiseLaplaceMarginalLogLikelihood(model.likelihood, model)


def test_packed_pairwise_laplace_matches_botorch_autograd() -> None:
    """The numpy Laplace evidence and its hand-derived gradient (explicit and implicit-mode
    terms) against BoTorch's PairwiseLaplaceMarginalLogLikelihood differentiated by autograd."""
    from botorch.optim.closures import get_loss_closure_with_grads
    from botorch.optim.utils import get_parameters_and_bounds

    from psyserve.compute.laplace import PackedPairwiseLaplace

    X, y = _pairwise_data(25, 0)
    model, mll = _pairwise_model(X, y)
    assert PackedPairwiseLaplace.supports(model, mll)
    clamped = []
    # (length-scale, raw output scale): output scale ~100 puts some z beyond the +-3 clamp; the other two
    # sit inside the SmoothedBox(1, 4) prior (outside it, its steep tails spoil central differences)
    for lengthscale, raw_outputscale in ((0.25, 0.0), (0.36, -4.0), (0.83, -5.0)):
        with torch.no_grad():
            model.covar_module.base_kernel.raw_lengthscale.fill_(lengthscale)
            model.covar_module.raw_outputscale.fill_(raw_outputscale)
        packed = PackedPairwiseLaplace(model, mll)
        mll.train()
        params = {k: v for k, v in get_parameters_and_bounds(mll)[0].items() if v.requires_grad}
        ref_loss, ref_grads = get_loss_closure_with_grads(mll, params)()
        by_name = {name.rsplit(".", 1)[-1]: g.detach().numpy().reshape(-1) for name, g in zip(params, ref_grads)}
        loss, grad = packed(packed.get())
        clamped.append(bool(np.any(np.abs(packed.D @ packed.f) / np.sqrt(2.0) > 3.0)))
        assert loss == pytest.approx(float(ref_loss.detach()), rel=1e-10)
        np.testing.assert_allclose(grad, np.concatenate([by_name["raw_lengthscale"], by_name["raw_outputscale"]]), rtol=1e-7, atol=1e-8)
        if not clamped[-1]:  # unclamped, it is the exact gradient: central differences agree tightly
            # (with clamped z, BoTorch's mode equation keeps the clamped terms that S drops, so
            # its gradient, mirrored here, is not quite the objective's)
            x, eps = packed.get(), 1e-6
            fd = [(packed(x + eps * e)[0] - packed(x - eps * e)[0]) / (2 * eps) for e in np.eye(3)]
            np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)
    assert clamped == [True, False, False]


def test_packed_pairwise_fit_is_at_least_as_good_as_botorch() -> None:
    from psyserve.compute.laplace import PackedPairwiseLaplace

    X, y = _pairwise_data(30, 3)
    optima = {}
    for mode in ("botorch", "fast"):
        np.random.seed(1)  # BoTorch's randomised mode-search start (global RNG)
        fitted = fit_model(ModelSpec("PairwiseProbitModel", 2, {"laplace": mode}), X, y)
        cm = fitted.model.covar_module  # type: ignore[union-attr]
        optima[mode] = np.concatenate([cm.base_kernel.raw_lengthscale.detach().numpy().ravel(), cm.raw_outputscale.detach().numpy().ravel()])
    model, mll = _pairwise_model(X, y)
    objective = PackedPairwiseLaplace(model, mll)
    assert objective(optima["fast"])[0] <= objective(optima["botorch"])[0] + 1e-3
