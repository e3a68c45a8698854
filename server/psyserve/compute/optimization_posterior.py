"""A cached exact posterior for the Ax-style optimisation's noiseless fast path: fitted SingleTaskGPs'
marginal means and variances from each GP's Cholesky factor and ``K^-1 (y - m)`` computed once, as a
BoTorch Model the analytic acquisitions (and q = 1 MC ones) can evaluate at a fraction of GPyTorch's
per-call overhead. Imports torch/BoTorch/GPyTorch only; no server state or I/O, no other compute module."""

from __future__ import annotations

import torch
from botorch.models.model import Model


def _dense(value: object) -> torch.Tensor:
    """A kernel's forward result as a tensor (sum and product kernels return linear operators)."""
    return value if isinstance(value, torch.Tensor) else value.to_dense()  # type: ignore[attr-defined]


class CachedPosterior:
    """The exact marginal posterior (mean and variance per metric, metrics independent) of fitted
    SingleTaskGPs, with each GP's Cholesky factor and ``K^-1 (y - m)`` computed once. The analytic
    acquisitions need nothing more, and the optimiser evaluates them dozens of times per ask: this
    skips GPyTorch's lazy-tensor machinery per call (the same numbers, a fraction of the overhead).
    Built by `cached_model`, which returns None for a GP it cannot mirror (input transforms)."""

    def __init__(self, models: list) -> None:
        from linear_operator.utils.cholesky import psd_safe_cholesky

        self.parts = []
        with torch.no_grad():
            for gp in models:
                gp.requires_grad_(False)  # gradients flow to the candidate points only
                X = gp.train_inputs[0]
                noise = gp.likelihood.noise.reshape(-1)
                K = _dense(gp.covar_module.forward(X, X)) + torch.diag_embed(noise.expand(X.shape[0]))
                L = psd_safe_cholesky(K)
                prior = gp.mean_module(X)
                alpha = torch.cholesky_solve((gp.train_targets - prior).unsqueeze(-1), L).squeeze(-1)
                tf = gp.outcome_transform
                # BoTorch's default kernel (a plain ARD RBF: k(x, x) = 1) and constant mean are evaluated
                # here directly; other kernels and means through GPyTorch
                rbf: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
                if _plain_rbf(gp):
                    lengthscale = gp.covar_module.lengthscale.detach().reshape(-1)
                    rbf = (lengthscale, X / lengthscale, gp.mean_module.constant.detach().reshape(()))
                self.parts.append((gp.covar_module, gp.mean_module, X, L, alpha, tf.means.reshape(()), tf.stdvs.reshape(()), rbf))

    def mean_and_variance(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X: ``batch x q x d`` -> mean, variance ``batch x q x m`` (original outcome units)."""
        means, variances = [], []
        for kernel, mean_module, Xt, L, alpha, mu, sd, rbf in self.parts:
            if rbf is not None:
                lengthscale, scaled, constant = rbf
                k = torch.exp(-0.5 * ((X / lengthscale).unsqueeze(-2) - scaled).pow(2).sum(-1))  # batch x q x n
                prior_mean: torch.Tensor = constant
                prior_var: torch.Tensor | float = 1.0
            else:
                Xt_b = Xt.expand(*X.shape[:-2], *Xt.shape)
                k = _dense(kernel.forward(X, Xt_b))
                prior_mean, prior_var = mean_module(X), _dense(kernel.forward(X, X, diag=True))
            v = torch.linalg.solve_triangular(L, k.transpose(-1, -2), upper=False)  # batch x n x q
            mean = prior_mean + k @ alpha
            var = prior_var - v.pow(2).sum(-2)
            means.append(mean * sd + mu)
            variances.append(var.clamp_min(0.0) * sd**2)
        return torch.stack(means, -1), torch.stack(variances, -1)


def _plain_rbf(gp: object) -> bool:
    """Whether `gp` has exactly GPyTorch's RBFKernel over every input and a ConstantMean."""
    from gpytorch.kernels import RBFKernel
    from gpytorch.means import ConstantMean

    kernel, mean = getattr(gp, "covar_module", None), getattr(gp, "mean_module", None)
    return isinstance(kernel, RBFKernel) and type(kernel) is RBFKernel and kernel.active_dims is None and type(mean) is ConstantMean


def cached_model(models: list, signed_outputs: list[tuple[int, float]] | None = None) -> Model | None:
    """A BoTorch Model over `CachedPosterior` (independent Normal marginals; joint only for one
    point at a time: analytic acquisitions and q = 1 MC ones), or None when a GP has an input
    transform or a likelihood this does not mirror. ``signed_outputs`` ((metric index, sign), ...):
    the model's outputs are those metrics times their signs (analytic EHVI maximises every output)."""
    from botorch.acquisition.objective import PosteriorTransform
    from botorch.posteriors.posterior import Posterior
    from gpytorch.likelihoods import FixedNoiseGaussianLikelihood, GaussianLikelihood

    class IndependentNormal(Posterior):
        """Normal marginals ``batch x q x m``; samples from (quasi-random) standard normal base samples."""

        def __init__(self, mean: torch.Tensor, variance: torch.Tensor) -> None:
            self._mean, self._variance = mean, variance

        @property
        def mean(self) -> torch.Tensor:
            return self._mean

        @property
        def variance(self) -> torch.Tensor:
            return self._variance

        @property
        def device(self) -> torch.device:
            return self._mean.device

        @property
        def dtype(self) -> torch.dtype:
            return self._mean.dtype

        @property
        def base_sample_shape(self) -> torch.Size:
            return self._mean.shape

        @property
        def batch_range(self) -> tuple[int, int]:
            return (0, -2)

        def _extended_shape(self, sample_shape: torch.Size = torch.Size()) -> torch.Size:
            return sample_shape + self._mean.shape

        def rsample_from_base_samples(self, sample_shape: torch.Size, base_samples: torch.Tensor) -> torch.Tensor:
            return self._mean + self._variance.clamp_min(1e-30).sqrt() * base_samples

        def rsample(self, sample_shape: torch.Size | None = None) -> torch.Tensor:
            shape = self._extended_shape(sample_shape or torch.Size())
            return self.rsample_from_base_samples(shape, torch.randn(shape, dtype=self.dtype, device=self.device))

    for gp in models:
        if getattr(gp, "input_transform", None) is not None or not isinstance(
            gp.likelihood, (GaussianLikelihood, FixedNoiseGaussianLikelihood)
        ):
            return None
        if type(gp.outcome_transform).__name__ != "Standardize":
            return None
    cached = CachedPosterior(models)

    selected = None if signed_outputs is None else [i for i, _ in signed_outputs]
    signs = None if signed_outputs is None else torch.tensor([float(sg) for _, sg in signed_outputs], dtype=torch.double)

    class CachedModel(Model):
        num_outputs = len(models) if signed_outputs is None else len(signed_outputs)

        def posterior(
            self,
            X: torch.Tensor,
            output_indices: list[int] | None = None,
            observation_noise: bool | torch.Tensor = False,
            posterior_transform: PosteriorTransform | None = None,
        ) -> Posterior:
            if posterior_transform is not None or isinstance(observation_noise, torch.Tensor) or observation_noise:
                raise NotImplementedError("the cached posterior has no posterior transform or observation noise")
            mean, var = cached.mean_and_variance(X)
            if selected is not None and signs is not None:
                mean, var = mean[..., selected] * signs, var[..., selected]
            if output_indices is not None:
                mean, var = mean[..., output_indices], var[..., output_indices]
            return IndependentNormal(mean, var)

    return CachedModel()
