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

from psyserve.compute.acquisition import (
    BernoulliBALD,
    LevelSetStraddle,
    PairwisePosteriorVariance,
    PosteriorVariance,
    ProbabilityStraddle,
)
from psyserve.compute.bvn import norm_cdf
from psyserve.compute.contract import (
    BINARY_MODELS,
    LOOKAHEAD_ACQFS,
    OBJECTIVE_LINKS,
    ORDINAL,
    PAIRWISE,
    SEMIP_MODELS,
    GeneratorSpec,
    acqf_supports,
    canonical_acqf,
    opt_float,
    opt_int,
    opt_str,
)
from psyserve.compute.links import PROBIT, Link
from psyserve.compute.lookahead import EAVC, GlobalMI, GlobalSUR, LocalMI, LocalSUR
from psyserve.compute.models import FittedModel
from psyserve.compute.numerics import sobol_draw

#: Where MCLevelSetEstimation measures its straddle when an objective maps to a probability:
#: "probability" (AEPsych's: sqrt(beta Var[p(f)]) - |E[p(f)] - target|) or "latent" (psyserve's
#: earlier form, sqrt(beta Var[f]) - |E[f] - F^-1(target)|). A generator option, not a config key.
DEFAULT_STRADDLE = "latent"


def _probit(samples: Tensor, X: Tensor | None = None) -> Tensor:
    return norm_cdf(samples[..., 0])


def _link_objective(link: Link) -> Any:
    def objective(samples: Tensor, X: Tensor | None = None) -> Tensor:
        return link.prob(samples[..., 0])

    return objective


def _objective_link(fitted: FittedModel, options: Mapping[str, Any]) -> Link | None:
    r"""The link the acquisition's objective maps latent values through, or ``None`` (latent / identity).

    A floor objective must be the classification model's own link (its fit used it), so that the
    acquisition and the read-outs agree; ProbitObjective on a model with a floor link is refused.
    """
    obj = str(options.get("objective", "") or "").strip()
    if fitted.family == ORDINAL and obj.lower() not in ("", "default", "identitymcobjective", "identity", "none"):
        raise ValueError(f"objective {obj} does not apply to OrdinalGPModel: its acquisitions work on the latent f (IdentityMCObjective)")
    if obj.lower() in ("", "default"):
        return fitted.link if fitted.family in BINARY_MODELS else None
    if obj in OBJECTIVE_LINKS:
        want = Link(OBJECTIVE_LINKS[obj], float(opt_float(options, "floor", 0.5) or 0.0))
        if fitted.family not in BINARY_MODELS or fitted.link != want:
            raise ValueError(
                f"objective {obj} (floor {want.floor:g}) needs a GPClassificationModel fitted with the same link "
                f"(model link: {fitted.link.kind}, floor {fitted.link.floor:g})"
            )
        return want
    if obj.lower() == "probitobjective":
        if fitted.kind == PAIRWISE:
            return None
        if fitted.kind in SEMIP_MODELS:  # AEPsych's semi-p examples pair it with a floor likelihood: the model's link
            return fitted.link
        if not fitted.link.is_plain_probit:
            raise ValueError(f"objective ProbitObjective does not match the model's {fitted.link.kind} link with floor {fitted.link.floor:g}")
        return PROBIT
    if obj.lower() in ("identitymcobjective", "identity", "none"):
        return None
    if obj in ("SemiPProbabilityObjective", "SemiPThresholdObjective"):
        if fitted.kind not in SEMIP_MODELS:
            raise ValueError(f"objective {obj} needs a semi-parametric model (SemiParametricGPModel, HadamardSemiPModel)")
        return fitted.link
    raise ValueError(f"unknown objective {obj!r} (use 'ProbitObjective', 'IdentityMCObjective', a floor objective or '')")


def build_acquisition(name: str, fitted: FittedModel, generator: GeneratorSpec, seed: int) -> AcquisitionFunction:
    r"""Instantiate the acquisition function ``name`` (AEPsych name) for ``fitted``.

    Raises:
        ValueError: unknown name or unsupported model.
    """
    name = canonical_acqf(name)
    if not acqf_supports(fitted.family, name):
        raise ValueError(f"acquisition function {name!r} does not support model {fitted.kind!r}")
    opts = generator.options
    link = _objective_link(fitted, opts)
    probit = link is not None
    target = opt_float(opts, "target", 0.75)
    assert target is not None
    if fitted.family in BINARY_MODELS or link is not None:
        # the level set of the response probability, moved to the latent level: F^-1((t - floor) / (1 - floor))
        t_latent = (link or fitted.link).latent_level(target)
    else:
        t_latent = target
    model, latent, noise = fitted.model, fitted.latent, fitted.pending_noise
    if str(opts.get("objective", "") or "") == "SemiPThresholdObjective":
        if name != "MCPosteriorVariance":
            raise ValueError(f"SemiPThresholdObjective is read by MCPosteriorVariance (the threshold's variance), not {name}")
        from psyserve.compute.semip import ProductLatent, ThresholdVariance

        assert isinstance(latent, ProductLatent)
        return ThresholdVariance(latent, target)
    if name == "MCLevelSetEstimation":
        beta = opt_float(opts, "beta", 3.84)
        assert beta is not None
        space = opt_str(opts, "straddle", DEFAULT_STRADDLE)
        if space not in ("probability", "latent"):
            raise ValueError(f"straddle must be 'probability' or 'latent', got {space!r}")
        if space == "probability" and link is not None:
            return ProbabilityStraddle(model, latent, noise, target, beta, link)
        return LevelSetStraddle(model, latent, noise, t_latent, beta)
    if name == "MCPosteriorVariance":
        return PosteriorVariance(model, latent, noise, probability_space=probit, link=link or PROBIT)
    if name == "BernoulliMCMutualInformation":
        return BernoulliBALD(model, latent, noise, link=fitted.link)
    if name in LOOKAHEAD_ACQFS:
        if fitted.link.kind != "probit":
            raise ValueError(f"{name}'s look-ahead is exact for a probit link only, not {fitted.link.kind}")
        floor = fitted.link.floor
        kind = str(opts.get("lookahead_type", "levelset") or "levelset")
        if kind not in ("levelset", "posterior"):
            raise ValueError(f"lookahead_type must be levelset or posterior, got {kind!r}")
        posterior = kind == "posterior"
        if name in ("LocalMI", "LocalSUR"):
            return (LocalMI if name == "LocalMI" else LocalSUR)(model, latent, noise, t_latent, floor, posterior)
        ref = sobol_draw(fitted.dim, max(16, opt_int(opts, "lookahead_points", 500)), seed + 7919)
        cls = {"EAVC": EAVC, "GlobalMI": GlobalMI}.get(name, GlobalSUR)
        return cls(model, latent, noise, ref, t_latent, floor, posterior)
    if name == "PairwiseMCPosteriorVariance":
        return PairwisePosteriorVariance(model, latent, noise)
    # BoTorch MC acquisitions
    assert model is not None
    mc = max(16, opt_int(opts, "mc_samples", 256))
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([mc]), seed=int(seed) % (2**31))
    objective: MCAcquisitionObjective | None = None
    if link is not None:
        objective = GenericMCObjective(_probit) if link.is_plain_probit else GenericMCObjective(_link_objective(link))
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
