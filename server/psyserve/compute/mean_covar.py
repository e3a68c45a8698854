"""Mean and covariance modules from a model's factory options (AEPsych's mean/covariance factories).

Owns turning the factory options config.py reads from AEPsych's `default_mean_covar_factory`,
`song_mean_covar_factory` and `pairwise_mean_covar_factory` sections (flat ModelSpec options, see
FACTORY_OPTIONS) into GPyTorch mean and kernel modules (kernels.py evaluates them). Without
any of those options nothing here is used and every model keeps its own default modules (and its
hand-differentiated fitting). Must not fit models, read configs or know about acquisitions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from gpytorch.constraints import GreaterThan, Interval
from gpytorch.kernels import Kernel, LinearKernel, MaternKernel, RBFKernel, ScaleKernel
from gpytorch.means import ConstantMean, Mean
from gpytorch.priors import GammaPrior, LogNormalPrior, NormalPrior, Prior, SmoothedBoxPrior
from torch import Tensor

from psyserve.compute.kernels import PairwiseKernel
from psyserve.compute.numerics import DTYPE

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

