"""Kernels: the GPyTorch kernel builders and their detached evaluation (torch and numpy forms).

Owns how a fitted kernel and prior mean are evaluated outside GPyTorch (also the kernels AEPsych's
factories build, compute/mean_covar.py, and their pairwise kernel); must not fit models or know
about acquisitions or jobs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from gpytorch.constraints import GreaterThan, Interval
from gpytorch.kernels import AdditiveKernel, Kernel, LinearKernel, MaternKernel, ProductKernel, RBFKernel, ScaleKernel
from gpytorch.means import ConstantMean, Mean
from gpytorch.priors import GammaPrior, LogNormalPrior, SmoothedBoxPrior
from torch import Tensor

from psyserve.compute.numerics import DTYPE

#: A kernel in plain torch: (X1 ``... x q1 x d``, X2 ``... x q2 x d``, diag) -> ``... x q1 x q2`` (or ``... x q1``).
PlainKernel = Callable[[Tensor, Tensor, bool], Tensor]

#: Output-scale bounds of the classification kernel (latent variance).
OUTPUTSCALE_BOUNDS = (1.0, 4.0)


def make_kernel(
    d: int,
    kind: str = "rbf",
    lengthscale_prior: tuple[float, float] = (3.0, 6.0),
    outputscale_bounds: tuple[float, float] = OUTPUTSCALE_BOUNDS,
    prior: str = "gamma",
) -> ScaleKernel:
    r"""ARD RBF / Matern-5/2 kernel for ``d``-dim unit-cube inputs.

    ``prior="gamma"``: a Gamma(a, b) length-scale prior (default Gamma(3, 6): mean 0.5, mode 1/3);
    ``prior="lognormal"``: AEPsych 0.8's dimension-scaled LogNormal(sqrt 2 + log(d) / 2, sqrt 3),
    started at its ``exp(sqrt 2 - 3)``. A ScaleKernel whose output scale is constrained to
    ``outputscale_bounds``.
    """
    conc, rate = lengthscale_prior
    if prior == "lognormal":  # dimension-scaled: LogNormal(sqrt 2 + log(d) / 2, sqrt 3)
        loc, sd = math.sqrt(2.0) + math.log(d) / 2.0, math.sqrt(3.0)
        ls_prior: Any = LogNormalPrior(torch.tensor(loc, dtype=DTYPE), torch.tensor(sd, dtype=DTYPE))
        mode = math.exp(math.sqrt(2.0) - 3.0)
    elif prior == "gamma":
        ls_prior = GammaPrior(conc, rate)
        mode = (conc - 1.0) / rate
    else:
        raise ValueError(f"unknown length-scale prior {prior!r} (use 'lognormal' or 'gamma')")
    ls_kw: dict[str, Any] = dict(
        ard_num_dims=d,
        lengthscale_prior=ls_prior,
        lengthscale_constraint=GreaterThan(1e-3, transform=None, initial_value=mode),
    )
    k = kind.lower().replace("-", "").replace("_", "")
    if k in ("rbf", "se", "squaredexponential"):
        base: Kernel = RBFKernel(**ls_kw)
    elif k in ("matern52", "matern"):
        base = MaternKernel(nu=2.5, **ls_kw)
    else:
        raise ValueError(f"unknown kernel {kind!r} (use 'rbf' or 'matern52')")
    lo, hi = outputscale_bounds
    init = min(max(2.0, lo), hi)
    sk = ScaleKernel(
        base,
        # transform=None: a box constraint handed to L-BFGS-B (a sigmoid transform lets the
        # raw value run off towards infinity when the ELBO pushes against the bound).
        outputscale_constraint=Interval(lo, hi, transform=None, initial_value=init),
    )
    return sk.to(DTYPE)


def stationary_kernel(X1: Tensor, X2: Tensor, lengthscale: Tensor, scale: Tensor, kind: str, nu: float = 2.5) -> Tensor:
    r"""Scaled ARD RBF (``kind="rbf"``) or Matern-``nu`` kernel, broadcasting.

    ``X1``: ``... x q1 x d``, ``X2``: ``... x q2 x d``, ``lengthscale``: ``d`` (or 1) ->
    ``... x q1 x q2``. Differentiable in the inputs and the hyper-parameters.
    """
    diff = (X1 / lengthscale).unsqueeze(-2) - (X2 / lengthscale).unsqueeze(-3)
    d2 = diff.pow(2).sum(-1)
    if kind == "rbf":
        return scale * torch.exp(-0.5 * d2)
    r = d2.clamp_min(1e-30).sqrt()
    if nu == 0.5:
        k = torch.exp(-r)
    elif nu == 1.5:
        s = math.sqrt(3.0) * r
        k = (1.0 + s) * torch.exp(-s)
    else:
        s = math.sqrt(5.0) * r
        k = (1.0 + s + s.pow(2) / 3.0) * torch.exp(-s)
    return scale * k


def stationary_np(q: np.ndarray, kind: str, nu: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    r"""The unit-scale stationary kernel as a function of ``q = sum_d (a_d - x_d)^2 / l_d^2``, in numpy:
    ``k(q)`` and ``k'(q) = -2 dk/dq``, from which both gradient forms follow:

        input:        d k(a, x) / d x   = k' (a - x) / l^2
        length-scale: d k(a, x) / d l_d = k' (a_d - x_d)^2 / l_d^3

    RBF (``kind="rbf"``): ``k = exp(-q / 2)``, ``k' = k``; Matern-5/2: ``r = sqrt(5 q)``,
    ``k = (1 + r + r^2 / 3) e^{-r}``, ``k' = 5/3 (1 + r) e^{-r}``; Matern-3/2: ``r = sqrt(3 q)``,
    ``k = (1 + r) e^{-r}``, ``k' = 3 e^{-r}``. The same kernel as ``stationary_kernel`` (torch).
    """
    if kind == "rbf":
        k = np.exp(-0.5 * q)
        return k, k
    r = np.sqrt(np.maximum(q, 1e-30))
    if nu == 2.5:
        s = math.sqrt(5.0) * r
        e = np.exp(-s)
        return (1.0 + s + s**2 / 3.0) * e, (5.0 / 3.0) * (1.0 + s) * e
    if nu == 1.5:
        s = math.sqrt(3.0) * r
        e = np.exp(-s)
        return (1.0 + s) * e, 3.0 * e
    raise ValueError(f"no numpy form for a Matern-{nu} kernel")


def kernel_input_grad_np(
    A: np.ndarray, X: np.ndarray, lengthscale: np.ndarray, scale: float, kind: str, nu: float = 2.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""``K = k(A, X)`` (``a x b``), ``A - X`` (``a x b x d``) and ``K'`` with ``d k(a_j, x_b) / d x_b =
    K'_jb (a_j - x_b) / l^2`` (scaled by the output scale)."""
    diff = A[:, None, :] - X[None, :, :]
    k, kp = stationary_np(((diff / lengthscale) ** 2).sum(-1), kind, nu)
    return scale * k, diff, scale * kp


def kernel_lengthscale_grad_np(
    D2: np.ndarray, lengthscale: np.ndarray, kind: str, nu: float = 2.5
) -> tuple[np.ndarray, np.ndarray]:
    r"""Unit-scale ``k`` and ``d k / d l_d`` (``... x d``) from squared differences ``D2`` (``... x d``)."""
    k, kp = stationary_np((D2 / lengthscale**2).sum(-1), kind, nu)
    return k, kp[..., None] * D2 / lengthscale**3


class KernelFn:
    r"""Detached, broadcasting evaluation of a fitted GPyTorch kernel.

    ``k(X1, X2)``: ``... x q1 x d`` and ``... x q2 x d`` -> ``... x q1 x q2``, with the
    batch dims broadcast. Differentiable w.r.t. the inputs. Fast paths for
    (Scale)RBF / (Scale)Matern kernels; other kernels go through GPyTorch.
    """

    def __init__(self, covar_module: Kernel) -> None:
        self.module = covar_module
        scale: Tensor | None = None
        base = covar_module
        if isinstance(base, ScaleKernel):
            scale = base.outputscale.detach().reshape(())
            base = base.base_kernel
        self.scale = torch.ones((), dtype=DTYPE) if scale is None else scale.to(DTYPE)
        self.kind: str = "generic"
        self.nu = 0.0
        if isinstance(base, RBFKernel) and base.active_dims is None:
            self.kind = "rbf"
        elif isinstance(base, MaternKernel) and base.active_dims is None:
            self.kind = "matern"
            self.nu = float(base.nu)
        self.lengthscale = (
            base.lengthscale.detach().reshape(-1).to(DTYPE) if self.kind != "generic" else torch.ones(1, dtype=DTYPE)
        )
        # the factories' kernels (compute.mean_covar) in plain torch
        self.plain = plain_kernel(covar_module) if self.kind == "generic" else None

    def __call__(self, X1: Tensor, X2: Tensor) -> Tensor:
        if self.plain is not None:
            return self.plain(X1, X2, False)
        if self.kind == "generic":
            shape = torch.broadcast_shapes(X1.shape[:-2], X2.shape[:-2])
            X1b = X1.expand(*shape, *X1.shape[-2:])
            X2b = X2.expand(*shape, *X2.shape[-2:])
            return self.module(X1b, X2b).to_dense()
        return stationary_kernel(X1, X2, self.lengthscale, self.scale, self.kind, self.nu)

    def diag(self, X: Tensor) -> Tensor:
        r"""Prior variance ``k(x, x)``: ``... x q x d`` -> ``... x q``."""
        if self.plain is not None:
            return self.plain(X, X, True)
        if self.kind == "generic":
            return self.module(X, X, diag=True).to_dense()
        return self.scale.expand(X.shape[:-1])


class ConstantMeanFn:
    r"""A constant prior mean ``c``: ``... x q x d`` -> ``... x q`` (no dependence on ``x``)."""

    def __init__(self, c: Tensor) -> None:
        self.c = c.detach().reshape(()).to(DTYPE)

    def __call__(self, X: Tensor) -> Tensor:
        return self.c.expand(X.shape[:-1])


def prior_mean_fn(mean_module: Mean | None) -> Callable[[Tensor], Tensor]:
    r"""Detached prior mean ``... x q x d`` -> ``... x q``."""
    if mean_module is None:
        return ConstantMeanFn(torch.zeros((), dtype=DTYPE))
    if isinstance(mean_module, ConstantMean):
        return ConstantMeanFn(mean_module.constant)
    return lambda X: mean_module(X).detach()


def pairwise_kernel(d: int) -> ScaleKernel:
    r"""AEPsych 0.8's pairwise kernel (default_mean_covar_factory for two stimuli per trial): ARD RBF
    over ``d`` with Gamma(3, 6) length scales and a SmoothedBox(1, 4) output-scale prior.

    BoTorch's PairwiseGP defaults (Gamma(2.4, 2.7), SmoothedBox(0.01, 100)), which psyserve used
    before, let the utility's scale run off with few comparisons (a fitted utility 2.4x the true
    one on the benchmark's preference problem): over-confident preference probabilities."""
    conc, rate = 3.0, 6.0
    return ScaleKernel(
        RBFKernel(
            ard_num_dims=d,
            lengthscale_prior=GammaPrior(conc, rate),
            lengthscale_constraint=GreaterThan(1e-4, transform=None, initial_value=(conc - 1) / rate),
        ),
        outputscale_prior=SmoothedBoxPrior(a=1.0, b=4.0),
        outputscale_constraint=Interval(5e-3, 2e2, initial_value=1.0),
    ).to(DTYPE)


class PairwiseKernel(Kernel):
    r"""A kernel on concatenated pairs ``x = (a, b)``: the covariance of ``f(a) - f(b)`` for a latent
    ``f`` with kernel ``base`` over one stimulus,

        k((a, b), (a', b')) = k(a, a') + k(b, b') - k(a, b') - k(b, a'),

    so a classification model over the pair's 2h parameters learns a preference of a over b."""

    def __init__(self, base: Kernel, active_dims: list[int] | None = None) -> None:
        super().__init__(active_dims=torch.tensor(active_dims) if active_dims is not None else None)
        self.base = base

    def forward(self, x1: Tensor, x2: Tensor, diag: bool = False, **params: Any) -> Tensor:
        h = x1.shape[-1] // 2
        a1, b1, a2, b2 = x1[..., :h], x1[..., h:], x2[..., :h], x2[..., h:]
        k = self.base
        if diag:
            return k(a1, a2, diag=True) + k(b1, b2, diag=True) - k(a1, b2, diag=True) - k(b1, a2, diag=True)
        return (k(a1, a2) + k(b1, b2) - k(a1, b2) - k(b1, a2)).to_dense()


def plain_kernel(module: Kernel, live: bool = False) -> PlainKernel | None:
    """The kernels built here (scaled RBF / Matern-5/2 / linear kernels on some dims, their sums and
    products, the pairwise kernel) as one plain-torch function: GPyTorch's lazy evaluation costs more
    than the arithmetic at these sizes. `live`: read the hyper-parameters at each call (differentiable:
    for fitting), else as they are now, detached (for a fitted model). None for any other kernel."""
    def value(get: Callable[[], Tensor]) -> Callable[[], Tensor]:
        if live:
            return get
        fixed = get().detach()
        return lambda: fixed

    def build(k: Kernel, own_dims: bool = True) -> PlainKernel | None:
        # GPyTorch selects a kernel's active dims when it is called, but a ScaleKernel (which takes
        # over its base kernel's) runs the base's forward on what it selected
        dims = k.active_dims if own_dims else None

        def cut(X: Tensor) -> Tensor:
            return X if dims is None else X.index_select(-1, dims.to(X.device))

        if isinstance(k, ScaleKernel):
            scaled = build(k.base_kernel, own_dims=False)
            if scaled is None:
                return None
            under: PlainKernel = scaled
            scale = value(lambda: k.outputscale.reshape(()))
            return lambda X1, X2, diag: scale() * under(cut(X1), cut(X2), diag)
        if isinstance(k, (RBFKernel, MaternKernel)):
            nu = float(getattr(k, "nu", 2.5))
            if isinstance(k, MaternKernel) and nu not in (0.5, 1.5, 2.5):
                return None
            kind = "rbf" if isinstance(k, RBFKernel) else "matern"
            ls = value(lambda: k.lengthscale.reshape(-1))
            one = torch.ones((), dtype=DTYPE)

            def stationary(X1: Tensor, X2: Tensor, diag: bool) -> Tensor:
                A, B = cut(X1), cut(X2)
                if diag:  # k(a_i, b_i): the pairwise kernel asks for it with a != b
                    return stationary_kernel(A.unsqueeze(-2), B.unsqueeze(-2), ls(), one, kind, nu)[..., 0, 0]
                return stationary_kernel(A, B, ls(), one, kind, nu)

            return stationary
        if isinstance(k, LinearKernel):
            variance = value(lambda: k.variance.reshape(-1))

            def linear(X1: Tensor, X2: Tensor, diag: bool) -> Tensor:
                A, B = cut(X1), cut(X2)
                v = variance()
                return (A * A * v).sum(-1) if diag else (A * v) @ B.mT

            return linear
        if isinstance(k, (AdditiveKernel, ProductKernel)):
            parts = [build(c) for c in k.kernels]
            if any(p is None for p in parts):
                return None
            known = [p for p in parts if p is not None]
            add = isinstance(k, AdditiveKernel)

            def combined(X1: Tensor, X2: Tensor, diag: bool) -> Tensor:
                A, B = cut(X1), cut(X2)
                out = known[0](A, B, diag)
                for part in known[1:]:
                    out = out + part(A, B, diag) if add else out * part(A, B, diag)
                return out

            return combined
        if isinstance(k, PairwiseKernel):
            base = build(k.base)
            if base is None:
                return None
            inner = base

            def pairwise(X1: Tensor, X2: Tensor, diag: bool) -> Tensor:
                A, B = cut(X1), cut(X2)
                h = A.shape[-1] // 2
                a1, b1, a2, b2 = A[..., :h], A[..., h:], B[..., :h], B[..., h:]
                return inner(a1, a2, diag) + inner(b1, b2, diag) - inner(a1, b2, diag) - inner(b1, a2, diag)

            return pairwise
        return None

    return build(module)
