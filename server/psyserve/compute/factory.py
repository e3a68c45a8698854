"""The acquisition factory: an AEPsych acquisition name and a fitted model -> an acquisition function.

Owns the name dispatch, objectives and targets; must not optimise or know about jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.monte_carlo import qNoisyExpectedImprovement, qUpperConfidenceBound
from botorch.acquisition.objective import GenericMCObjective, MCAcquisitionObjective
from botorch.sampling.normal import SobolQMCNormalSampler
from torch import Tensor

from psyserve.compute.acquisition import BernoulliBALD, LevelSetStraddle, PairwisePosteriorVariance, PosteriorVariance
from psyserve.compute.bvn import norm_cdf, norm_icdf
from psyserve.compute.contract import (
    CLASSIFICATION,
    PAIRWISE,
    GeneratorSpec,
    acqf_supports,
    canonical_acqf,
    opt_float,
    opt_int,
)
from psyserve.compute.lookahead import EAVC, GlobalMI
from psyserve.compute.models import FittedModel
from psyserve.compute.numerics import sobol_draw


def _probit(samples: Tensor, X: Tensor | None = None) -> Tensor:
    return norm_cdf(samples[..., 0])


def _objective_is_probit(fitted: FittedModel, options: Mapping[str, Any]) -> bool:
    obj = str(options.get("objective", "") or "").strip()
    if obj.lower() in ("", "default"):
        return fitted.kind == CLASSIFICATION
    if "probit" in obj.lower():  # ProbitObjective (and AEPsych's Floor/ProbitObjective variants)
        return fitted.kind != PAIRWISE
    if obj.lower() in ("identitymcobjective", "identity", "none"):
        return False
    raise ValueError(f"unknown objective {obj!r} (use 'ProbitObjective', 'IdentityMCObjective' or '')")


def build_acquisition(name: str, fitted: FittedModel, generator: GeneratorSpec, seed: int) -> AcquisitionFunction:
    r"""Instantiate the acquisition function ``name`` (AEPsych name) for ``fitted``.

    Raises:
        ValueError: unknown name or unsupported model.
    """
    name = canonical_acqf(name)
    if not acqf_supports(fitted.kind, name):
        raise ValueError(f"acquisition function {name!r} does not support model {fitted.kind!r}")
    opts = generator.options
    probit = _objective_is_probit(fitted, opts)
    target = opt_float(opts, "target", 0.75)
    assert target is not None
    if fitted.kind == CLASSIFICATION or probit:
        if not 0.0 < target < 1.0:
            raise ValueError(f"target must be a probability in (0, 1), got {target!r}")
        t_latent = norm_icdf(target)
    else:
        t_latent = target
    model, latent, noise = fitted.model, fitted.latent, fitted.pending_noise
    if name == "MCLevelSetEstimation":
        beta = opt_float(opts, "beta", 3.84)
        assert beta is not None
        return LevelSetStraddle(model, latent, noise, t_latent, beta)
    if name == "MCPosteriorVariance":
        return PosteriorVariance(model, latent, noise, probability_space=probit)
    if name == "BernoulliMCMutualInformation":
        return BernoulliBALD(model, latent, noise)
    if name in ("EAVC", "GlobalMI"):
        ref = sobol_draw(fitted.dim, max(16, opt_int(opts, "lookahead_points", 500)), seed + 7919)
        cls = EAVC if name == "EAVC" else GlobalMI
        return cls(model, latent, noise, ref, t_latent)
    if name == "PairwiseMCPosteriorVariance":
        return PairwisePosteriorVariance(model, latent, noise)
    # BoTorch MC acquisitions
    assert model is not None
    mc = max(16, opt_int(opts, "mc_samples", 256))
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([mc]), seed=int(seed) % (2**31))
    objective: MCAcquisitionObjective | None = GenericMCObjective(_probit) if probit else None
    if name == "qUpperConfidenceBound":
        beta = opt_float(opts, "beta", 3.84)
        return qUpperConfidenceBound(model, beta=float(beta or 0.0), sampler=sampler, objective=objective)
    cls_ei = qNoisyExpectedImprovement if name == "qNoisyExpectedImprovement" else qLogNoisyExpectedImprovement
    return cls_ei(
        model,
        X_baseline=fitted.train_X,
        sampler=sampler,
        objective=objective,
        prune_baseline=True,
        cache_root=False,
    )
