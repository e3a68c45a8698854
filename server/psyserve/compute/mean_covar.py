"""Mean and covariance modules from a model's factory options (AEPsych's mean/covariance factories).

Owns turning the factory options config.py reads from AEPsych's `default_mean_covar_factory`,
`song_mean_covar_factory` and `pairwise_mean_covar_factory` sections (flat ModelSpec options, see
FACTORY_OPTIONS) into GPyTorch mean and kernel modules, and the pairwise kernel that needs. Without
any of those options nothing here is used and every model keeps its own default modules (and its
hand-differentiated fitting). Must not fit models, read configs or know about acquisitions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from gpytorch.constraints import GreaterThan, Interval
from gpytorch.kernels import AdditiveKernel, Kernel, LinearKernel, MaternKernel, ProductKernel, RBFKernel, ScaleKernel
from gpytorch.means import ConstantMean, Mean
from gpytorch.priors import GammaPrior, LogNormalPrior, NormalPrior, Prior, SmoothedBoxPrior
from torch import Tensor

from psyserve.compute.numerics import DTYPE

#: A kernel in plain torch: (X1 ``... x q1 x d``, X2 ``... x q2 x d``, diag) -> ``... x q1 x q2`` (or ``... x q1``).
PlainKernel = Callable[[Tensor, Tensor, bool], Tensor]

#: ModelSpec options this module reads. `factory`: "default", "song" or "pairwise"; `mean`: "zero" or
#: "fixed" (at `mean_constant`, a latent value); `ls_prior`: "gamma", "lognormal" (with `ls_loc`,
#: `ls_scale`) or "invgamma"; `outputscale`: "fixed" (no amplitude), "box" or "gamma"; `kernel`: "rbf"
#: or "matern52"; song: `stim_dim` (an index into the parameters), `intensity_rbf` (0/1); pairwise:
#: `shared_dims` (comma-separated indices).
FACTORY_OPTIONS: frozenset[str] = frozenset(
    {"factory", "mean", "mean_constant", "ls_prior", "ls_loc", "ls_scale", "outputscale", "stim_dim", "intensity_rbf", "shared_dims"}
)

# AEPsych's documented prior parameters (its factories' defaults)
LOGNORMAL_LOC = math.sqrt(2.0)
LOGNORMAL_SCALE = math.sqrt(3.0)
INVGAMMA = (4.6, 1.0)  # concentration, rate of the Gamma prior on 1 / length scale
GAMMA = (3.0, 6.0)
OUTPUTSCALE_BOX = (1.0, 4.0)
OUTPUTSCALE_GAMMA = (2.0, 0.15)


def uses_factory(opts: Mapping[str, Any]) -> bool:
    """Whether any factory option is set (then the model is built here and fitted by BoTorch)."""
    return any(k in opts for k in FACTORY_OPTIONS)


def _reciprocal(x: Tensor) -> Tensor:
    return 1.0 / x


def length_scale_prior(name: str, d: int, loc: float | None = None, scale: float | None = None) -> tuple[Prior, float]:
    """(prior, initial length scale) for "gamma", "lognormal" or "invgamma" (AEPsych's meanings)."""
    if name == "gamma":
        conc, rate = GAMMA
        return GammaPrior(conc, rate), (conc - 1.0) / rate
    if name == "lognormal":
        loc = LOGNORMAL_LOC if loc is None else loc
        scale = LOGNORMAL_SCALE if scale is None else scale
        # the location grows with the dimension (longer length scales in more dimensions)
        return LogNormalPrior(loc + math.log(d) / 2.0, scale), math.exp(loc - scale**2)
    if name == "invgamma":
        conc, rate = INVGAMMA
        return GammaPrior(conc, rate, transform=_reciprocal), rate / (conc + 1.0)
    raise ValueError(f"unknown length-scale prior {name!r} (use gamma, lognormal or invgamma)")


def _base_kernel(kind: str, d: int, prior: Prior, initial: float, active_dims: list[int] | None = None) -> Kernel:
    kw: dict[str, Any] = dict(
        ard_num_dims=d,
        lengthscale_prior=prior,
        lengthscale_constraint=GreaterThan(1e-4, transform=None, initial_value=initial),
        active_dims=active_dims,
    )
    k = kind.lower().replace("-", "").replace("_", "")
    if k in ("rbf", "rbfkernel", "se"):
        return RBFKernel(**kw)
    if k in ("matern52", "matern", "maternkernel"):
        return MaternKernel(nu=2.5, **kw)
    raise ValueError(f"unknown kernel {kind!r} (use rbf or matern52)")


def _amplitude(base: Kernel, how: str | None, default_bounds: tuple[float, float]) -> Kernel:
    """The kernel's amplitude: none ("fixed"), AEPsych's box or gamma prior, or psyserve's own bounds."""
    if how == "fixed":
        return base
    if how == "box":
        return ScaleKernel(base, outputscale_prior=SmoothedBoxPrior(*OUTPUTSCALE_BOX), outputscale_constraint=GreaterThan(1e-4))
    if how == "gamma":
        return ScaleKernel(base, outputscale_prior=GammaPrior(*OUTPUTSCALE_GAMMA), outputscale_constraint=GreaterThan(1e-4))
    if how not in (None, ""):
        raise ValueError(f"unknown output-scale setting {how!r} (use fixed, box or gamma)")
    lo, hi = default_bounds
    return ScaleKernel(base, outputscale_constraint=Interval(lo, hi, transform=None, initial_value=min(max(2.0, lo), hi)))


def default_covar(d: int, opts: Mapping[str, Any], default_outputscale_bounds: tuple[float, float], active_dims: list[int] | None = None) -> Kernel:
    """AEPsych's default factory's kernel over `d` dims, with psyserve's defaults for what is not set
    (Gamma(3, 6) length scales, psyserve's output-scale bounds)."""
    ls = str(opts.get("ls_prior", "") or "gamma")
    loc, scale = opts.get("ls_loc"), opts.get("ls_scale")
    prior, initial = length_scale_prior(ls, d, None if loc is None else float(loc), None if scale is None else float(scale))
    base = _base_kernel(str(opts.get("kernel", "") or "rbf"), d, prior, initial, active_dims)
    return _amplitude(base, opts.get("outputscale"), default_outputscale_bounds)


def song_covar(d: int, stim_dim: int, intensity_rbf: bool) -> Kernel:
    """Song et al. (2018), as AEPsych's song factory: a linear kernel along the intensity dimension
    `stim_dim` plus an RBF over the other (context) dimensions (all of them with `intensity_rbf`),
    each with its own amplitude (box prior), inverse-gamma length-scale prior."""
    stim = stim_dim % d
    linear = ScaleKernel(LinearKernel(active_dims=[stim]), outputscale_prior=SmoothedBoxPrior(*OUTPUTSCALE_BOX))
    context = list(range(d)) if intensity_rbf else [i for i in range(d) if i != stim]
    if not context:
        return linear
    prior, initial = length_scale_prior("invgamma", len(context))
    rbf = ScaleKernel(_base_kernel("rbf", len(context), prior, initial, context), outputscale_prior=SmoothedBoxPrior(*OUTPUTSCALE_BOX))
    return rbf + linear


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


def pairwise_covar(d: int, opts: Mapping[str, Any], default_outputscale_bounds: tuple[float, float]) -> Kernel:
    """AEPsych's pairwise factory: the pairwise kernel over the non-shared dims (two halves, one per
    stimulus), times a default kernel over the shared ones (`shared_dims`) if any."""
    shared = [int(s) for s in str(opts.get("shared_dims", "") or "").split(",") if s.strip()]
    paired = [i for i in range(d) if i not in shared]
    if len(paired) < 2 or len(paired) % 2:
        raise ValueError(f"pairwise kernel: {len(paired)} non-shared dims, need an even number >= 2")
    pair = PairwiseKernel(default_covar(len(paired) // 2, opts, default_outputscale_bounds), active_dims=paired if shared else None)
    if not shared:
        return pair
    return pair * default_covar(len(shared), opts, default_outputscale_bounds, active_dims=shared)


def build_covar(d: int, opts: Mapping[str, Any], default_outputscale_bounds: tuple[float, float]) -> Kernel:
    """The covariance module the options ask for (in float64)."""
    factory = str(opts.get("factory", "") or "default")
    if factory == "song":
        covar = song_covar(d, int(opts.get("stim_dim", -1)), bool(int(opts.get("intensity_rbf", 0))))
    elif factory == "pairwise":
        covar = pairwise_covar(d, opts, default_outputscale_bounds)
    elif factory == "default":
        covar = default_covar(d, opts, default_outputscale_bounds)
    else:
        raise ValueError(f"unknown mean/covariance factory {factory!r}")
    return covar.to(DTYPE)


def build_mean(opts: Mapping[str, Any]) -> Mean:
    """A constant mean: fixed (not fitted) at `mean_constant` or 0 ("zero"), else fitted with
    psyserve's Normal(0, 2) prior."""
    how = str(opts.get("mean", "") or "")
    if how in ("fixed", "zero"):
        mean = ConstantMean().to(DTYPE)
        with torch.no_grad():
            mean.raw_constant.fill_(float(opts.get("mean_constant", 0.0)) if how == "fixed" else 0.0)
        mean.raw_constant.requires_grad_(False)  # not fitted (BoTorch optimises what requires grad)
        return mean
    if how:
        raise ValueError(f"unknown mean setting {how!r} (use fixed or zero)")
    return ConstantMean(constant_prior=NormalPrior(0.0, 2.0)).to(DTYPE)


def plain_kernel(module: Kernel, live: bool = False) -> PlainKernel | None:
    """The kernels built here (scaled RBF / Matern-5/2 / linear kernels on some dims, their sums and
    products, the pairwise kernel) as one plain-torch function: GPyTorch's lazy evaluation costs more
    than the arithmetic at these sizes. `live`: read the hyper-parameters at each call (differentiable:
    for fitting), else as they are now, detached (for a fitted model). None for any other kernel."""
    from psyserve.compute.kernels import stationary_kernel

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
