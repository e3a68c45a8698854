"""AEPsych 0.8's class and option names that psyserve knows of but does not (yet) honour.

Owns the catalogue behind config.py's refusals: a config AEPsych would accept but psyserve cannot
honour is refused at Configure naming its section and key, never silently run differently.
Pure data and lookups; knows nothing of parsing, strategies or compute.
"""

from __future__ import annotations

#: AEPsych model classes psyserve does not implement yet.
UNSUPPORTED_MODELS: frozenset[str] = frozenset(
    {
        "MonotonicRejectionGP",
        "GPBetaRegressionModel",
        "MultitaskGPModel",
        "IndependentMultitaskGPRModel",
    }
)

#: AEPsych generator classes psyserve does not implement yet.
UNSUPPORTED_GENERATORS: frozenset[str] = frozenset(
    {
        "MonotonicRejectionGenerator",
        "MonotonicThompsonSamplerGenerator",
        "PairwiseOptimizeAcqfGenerator",
        "PairwiseSobolGenerator",
        "AxSobolGenerator",
        "AxOptimizeAcqfGenerator",
        "AxRandomGenerator",
    }
)

#: AEPsych acquisition functions psyserve does not implement yet.
UNSUPPORTED_ACQFS: frozenset[str] = frozenset(
    {
        "MonotonicMCLSE",
        "MonotonicBernoulliMCMutualInformation",
        "MonotonicMCPosteriorVariance",
        "qExpectedImprovement",
        "ExpectedImprovement",
    }
)

#: Acquisition functions that aim at a level set and so need a `target`.
LEVEL_SET_ACQFS: frozenset[str] = frozenset(
    {"MCLevelSetEstimation", "EAVC", "GlobalMI", "GlobalSUR", "ApproxGlobalSUR", "LocalMI", "LocalSUR"}
)

#: Objectives psyserve honours, by the names a config may give (case-insensitive), -> canonical name.
SUPPORTED_OBJECTIVES: dict[str, str] = {
    "": "",
    "default": "",
    "probitobjective": "ProbitObjective",
    "identitymcobjective": "IdentityMCObjective",
    "identity": "IdentityMCObjective",
    "none": "IdentityMCObjective",
    # n-AFC guess rates: floor + (1 - floor) F(f), with `floor` from the objective's own section
    "floorprobitobjective": "FloorProbitObjective",
    "floorlogitobjective": "FloorLogitObjective",
    "floorgumbelobjective": "FloorGumbelObjective",
    # read-outs of the semi-parametric models (config.py checks the model)
    "semipthresholdobjective": "SemiPThresholdObjective",
    "semipprobabilityobjective": "SemiPProbabilityObjective",
}

#: AEPsych objectives psyserve does not implement yet.
UNSUPPORTED_OBJECTIVES: frozenset[str] = frozenset(
    {
        "AffinePosteriorTransform",
    }
)

#: Keys AEPsych honours in a strategy section that change which data or when a strategy stops.
UNSUPPORTED_STRATEGY_KEYS: dict[str, str] = {
    "keep_most_recent": "fitting the model on only the most recent trials is not supported",
    "min_post_range": "stopping on the posterior range is not supported",
}

#: Keys AEPsych honours in a model's class section that change the model psyserve would fit.
UNSUPPORTED_MODEL_KEYS: dict[str, str] = {
    # GPClassificationModel's constraints on the latent function (pseudo-observations, a mixed ELBO)
    "constraint_factory": "constraints on the latent function are not supported",
    "constraint_locations": "constraints on the latent function are not supported",
    "constraint_values": "constraints on the latent function are not supported",
    "constraint_strengths": "constraints on the latent function are not supported",
    "likelihood": (
        "only the models' default likelihoods (Bernoulli probit, Gaussian, pairwise probit, OrdinalLikelihood for "
        "OrdinalGPModel), for GPClassificationModel BernoulliObjectiveLikelihood with a floor objective, and for "
        "VariationalGPModel GaussianLikelihood, BernoulliLikelihood, BernoulliObjectiveLikelihood or OrdinalLikelihood are supported"
    ),
}

#: Factory names AEPsych configs may carry that psyserve cannot honour, -> why (AEPsych 0.8's own
#: default, song and pairwise factories are honoured: config.py maps them onto psyserve's kernels).
RETIRED_FACTORIES: dict[str, str] = {
    "monotonic_mean_covar_factory": (
        "deprecated in AEPsych 0.8 (with MonotonicRejectionGP, which psyserve does not implement); "
        "use default_mean_covar_factory"
    ),
    "ordinal_mean_covar_factory": "OrdinalGPModel's own factory, accepted with OrdinalGPModel only (where it is what psyserve fits)",
    "mixed_mean_covar_factory": "not a factory AEPsych 0.8 defines (it has default, song, pairwise and ordinal)",
}

#: Keys AEPsych honours in an acquisition's class section that psyserve does not.
UNSUPPORTED_ACQF_KEYS: dict[str, str] = {
    "posterior_transform": "posterior transforms are not supported",
}


def unsupported_class_message(kind: str, name: str, supported: list[str]) -> str:
    """`AEPsych's OrdinalGPModel is not supported by psyserve yet (supported: [...])`."""
    return f"AEPsych's {kind} {name} is not supported by psyserve yet (supported: {supported})"
