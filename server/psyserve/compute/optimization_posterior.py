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
                self.parts.append((gp.covar_module, gp.mean_module, X, L, alpha, tf.means.reshape(()), tf.stdvs.reshape(())))

    def mean_and_variance(self, X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X: ``batch x q x d`` -> mean, variance ``batch x q x m`` (original outcome units)."""
        means, variances = [], []
        for kernel, mean_module, Xt, L, alpha, mu, sd in self.parts:
            Xt_b = Xt.expand(*X.shape[:-2], *Xt.shape)
            k = _dense(kernel.forward(X, Xt_b))  # batch x q x n
            v = torch.linalg.solve_triangular(L, k.transpose(-1, -2), upper=False)  # batch x n x q
            mean = mean_module(X) + k @ alpha
            var = _dense(kernel.forward(X, X, diag=True)) - v.pow(2).sum(-2)
            means.append(mean * sd + mu)
            variances.append(var.clamp_min(0.0) * sd**2)
        return torch.stack(means, -1), torch.stack(variances, -1)


def cached_model(models: list) -> Model | None:
    """A BoTorch Model over `CachedPosterior` (independent Normal marginals; joint only for one
    point at a time: analytic acquisitions and q = 1 MC ones), or None when a GP has an input
    transform or a likelihood this does not mirror."""
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
        if getattr(gp, "input_transform", None) is not None or not isinstance(gp.likelihood, (GaussianLikelihood, FixedNoiseGaussianLikelihood)):
            return None
        if type(gp.outcome_transform).__name__ != "Standardize":
            return None
    cached = CachedPosterior(models)

    class CachedModel(Model):
        num_outputs = len(models)

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
            if output_indices is not None:
                mean, var = mean[..., output_indices], var[..., output_indices]
            return IndependentNormal(mean, var)

    return CachedModel()
