"""AEPsych config parity: inline comments, multi-line lists, AEPsych's semantic checks, and every
AEPsych setting psyserve cannot honour refused with an error naming its section and key."""

from __future__ import annotations

import pytest

from conftest import ServerThread
from psyserve.config import ConfigError, parse_config, strip_inline_comments

# Written the way AEPsych's documentation writes its example configs: comments after values.
COMMENTED = """
### Example config for a 2-d detection experiment
[common]
parnames = [par1, par2] # names of the parameters
stimuli_per_trial = 1 # the number of stimuli shown in each trial
outcome_types = [binary] # the type of response given by the participant
target = 0.75 # desired threshold
strategy_names = [init_strat,
                  # the model-based phase comes second
                  opt_strat] # the names of the strategies

; a comment line with a semicolon
[par1]
par_type = continuous # a continuous parameter
lower_bound = 0 # lower bound
upper_bound = 1 # upper bound

[par2]
par_type = continuous
lower_bound = -1 #no space after the hash is still a comment
upper_bound = 1

[init_strat]
min_asks = 10 # number of sobol trials
generator = SobolGenerator # the generator

[opt_strat]
min_asks = 20
refit_every = 5#not a comment: no whitespace before the hash
model = GPClassificationModel # the model
generator = OptimizeAcqfGenerator

[OptimizeAcqfGenerator]
acqf = MCLevelSetEstimation # the acquisition function
restarts = 2
samps = 100

[MCLevelSetEstimation]
objective = ProbitObjective # probit link

[metadata]
experiment_name = "Bob's study # 1" # the name keeps its hash
note = Bob's pilot # an apostrophe is not a quote
"""


def test_inline_comments_and_multiline_lists() -> None:
    text = COMMENTED.replace("refit_every = 5#not a comment: no whitespace before the hash\n", "")
    spec = parse_config(text)
    assert spec.space.names == ["par1", "par2"]
    assert [p.name for p in spec.phases] == ["init_strat", "opt_strat"]
    assert (spec.space.by_name["par2"].lower, spec.space.by_name["par2"].upper) == (-1, 1)
    assert spec.phases[0].min_asks == 10 and spec.phases[0].generator == "SobolGenerator"
    opt = spec.phases[1]
    assert opt.model == "GPClassificationModel" and opt.acqf == "MCLevelSetEstimation"
    assert opt.generator_options["target"] == 0.75 and opt.generator_options["objective"] == "ProbitObjective"
    assert spec.metadata == {"experiment_name": '"Bob\'s study # 1"', "note": "Bob's pilot"}
    assert spec.sections["par1"] == {"par_type": "continuous", "lower_bound": "0", "upper_bound": "1"}
    assert spec.warnings == ()


def test_hash_without_whitespace_is_part_of_the_value() -> None:
    # configparser (and so AEPsych) only starts an inline comment after whitespace
    with pytest.raises(ConfigError) as err:
        parse_config(COMMENTED)
    assert (err.value.section, err.value.key) == ("opt_strat", "refit_every")
    assert strip_inline_comments("a = 1#2  # c") == "a = 1#2"
    assert strip_inline_comments("# whole line\nb = 'x # y' # z\n  ; indented") == "b = 'x # y'"


BASE = """
[common]
parnames = [x, y]
strategy_names = [init, opt]
{common}
[x]
lower_bound = 0
upper_bound = 1
[y]
lower_bound = 0
upper_bound = 1
[init]
generator = SobolGenerator
min_asks = 5
[opt]
generator = OptimizeAcqfGenerator
model = {model}
acqf = {acqf}
min_asks = 5
{opt}
"""


def _parse(
    common: str = "target = 0.75", model: str = "GPClassificationModel", acqf: str = "MCLevelSetEstimation", opt: str = ""
) -> None:
    parse_config(BASE.format(common=common, model=model, acqf=acqf, opt=opt))


def test_base_config_is_accepted() -> None:
    _parse()  # the table below changes one thing each


@pytest.mark.parametrize(
    ("kwargs", "section", "key", "says"),
    [
        # a model whose outcome type does not match outcome_types
        ({"common": "target = 0.75\noutcome_types = [continuous]"}, "opt", "model", "needs binary outcomes"),
        ({"model": "GPRegressionModel", "acqf": "qLogNoisyExpectedImprovement"}, "opt", "model", "needs continuous outcomes"),
        ({"common": "outcome_types = [ordinal]"}, "opt", "model", "use OrdinalGPModel"),
        ({"model": "OrdinalGPModel", "acqf": "MCPosteriorVariance"}, "opt", "model", "needs ordinal outcomes"),
        ({"common": "target = 0.75\noutcome_types = [binary, continuous]"}, "common", "outcome_types", "IndependentGPsModel"),
        # a pairwise model with one stimulus per trial
        ({"model": "PairwiseProbitModel", "acqf": "PairwiseMCPosteriorVariance"}, "opt", "model", "two stimuli per trial"),
        # a level-set acquisition with no target anywhere
        ({"common": ""}, "MCLevelSetEstimation", "target", "needs a target"),
        ({"common": "", "acqf": "EAVC"}, "EAVC", "target", "needs a target"),
        # AEPsych classes psyserve does not implement yet
        ({"model": "MonotonicRejectionGP"}, "opt", "model", "not supported by psyserve yet"),
        ({"acqf": "MonotonicMCLSE"}, "opt", "acqf", "not supported by psyserve yet"),
        ({"common": "", "acqf": "GlobalSUR"}, "GlobalSUR", "target", "needs a target"),
        (
            {"opt": "objective = SemiPThresholdObjective"},  # a semi-p read-out on a plain GP
            "opt",
            "objective",
            "semi-parametric",
        ),
        (
            {"opt": "[MCLevelSetEstimation]\nobjective = AffinePosteriorTransform"},
            "MCLevelSetEstimation",
            "objective",
            "not supported",
        ),
        ({"opt": "[MCLevelSetEstimation]\nobjective = Wobbly"}, "MCLevelSetEstimation", "objective", "unknown objective"),
        # settings AEPsych honours that would change the model or the stopping rule
        ({"opt": "keep_most_recent = 20"}, "opt", "keep_most_recent", "most recent"),
        ({"opt": "min_post_range = 0.1"}, "opt", "min_post_range", "posterior range"),
        (
            {"opt": "[GPClassificationModel]\nconstraint_factory = my_constraints"},
            "GPClassificationModel",
            "constraint_factory",
            "constraints on the latent function",
        ),
        ({"opt": "[GPClassificationModel]\nmaxfun = 100"}, "GPClassificationModel", "maxfun", "maxiter and ftol only"),
        ({"opt": "[GPClassificationModel]\nmll_class = PredictiveLogLikelihood"}, "GPClassificationModel", "mll_class", "VariationalELBO"),
        (
            {"opt": "[GPClassificationModel]\ninducing_point_method = KMeans"},
            "GPClassificationModel",
            "inducing_point_method",
            "inducing",
        ),
        (
            {"opt": "[GPClassificationModel]\nmean_covar_factory = monotonic_mean_covar_factory"},
            "GPClassificationModel",
            "mean_covar_factory",
            "deprecated in AEPsych 0.8",
        ),
        (
            {"opt": "[default_mean_covar_factory]\nlengthscale_prior = wishart"},
            "default_mean_covar_factory",
            "lengthscale_prior",
            "expected one of",
        ),
        ({"acqf": "GlobalMI", "opt": "[GlobalMI]\nlookahead_type = sideways"}, "GlobalMI", "lookahead_type", "expected one of"),
    ],
)
def test_refused_naming_the_key(kwargs: dict[str, str], section: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(**kwargs)
    assert (err.value.section, err.value.key) == (section, key), str(err.value)
    assert says in str(err.value)


@pytest.mark.parametrize("generator", ["MonotonicRejectionGenerator", "PairwiseOptimizeAcqfGenerator"])
def test_unsupported_generators_are_named(generator: str) -> None:
    text = BASE.format(common="target = 0.75", model="GPClassificationModel", acqf="MCLevelSetEstimation", opt="").replace(
        "generator = OptimizeAcqfGenerator", f"generator = {generator}"
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert (err.value.section, err.value.key) == ("opt", "generator")
    assert f"AEPsych's generator {generator} is not supported by psyserve yet" in str(err.value)


def test_default_factory_named_explicitly_is_accepted() -> None:
    _parse(opt="[GPClassificationModel]\nmean_covar_factory = default_mean_covar_factory")
    _parse(common="", opt="[MCLevelSetEstimation]\ntarget = 0.6")  # a target in the acquisition's own section


def test_through_the_server_comments_and_the_drawn_seed(server: ServerThread) -> None:
    """An AEPsych-documented config runs as written; a drawn seed is reported and repeats the run."""
    import psyserve_client as pc

    text = COMMENTED.replace("refit_every = 5#not a comment: no whitespace before the hash\n", "")
    with pc.Client(server.address, timeout=10) as client:
        first = client.configure(config_str=text)
        assert first.warnings == [] and [p.name for p in first.parameters] == ["par1", "par2"]
        seed = first.summary.seed
        assert not first.summary.seed_from_config
        assert client.info(first.strategy_id).summary.seed == seed
        assert client.resume(config_id=first.strategy_id).seed == seed
        points = [client.ask(strategy_id=first.strategy_id).trials[0].params for _ in range(4)]

        again = client.configure(config_str=text.replace("[common]\n", f"[common]\nseed = {seed}\n", 1))
        assert again.summary.seed == seed and again.summary.seed_from_config
        assert [client.ask(strategy_id=again.strategy_id).trials[0].params for _ in range(4)] == points

        with pytest.raises(pc.InvalidArgumentError) as err:
            client.configure(config_str=text.replace("objective = ProbitObjective", "objective = SemiPProbabilityObjective"))
        assert err.value.field == "config_ini[MCLevelSetEstimation].objective"  # a semi-p read-out on a plain GP


def test_extended_interpolation_and_keys_without_values() -> None:
    text = BASE.format(common="target = 0.75\nhalf = 0.5", model="GPClassificationModel", acqf="MCLevelSetEstimation", opt="")
    text = text.replace("upper_bound = 1\n[y]", "upper_bound = ${common:half}\n[y]")
    spec = parse_config(text)
    assert spec.space.by_name["x"].upper == 0.5
    with pytest.raises(ConfigError) as err:
        parse_config(text.replace("${common:half}", "${common:nothing}"))
    assert (err.value.section, err.value.key) == ("x", "upper_bound") and "reference" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config(text.replace("min_asks = 5\n[opt]", "min_asks\n[opt]"))
    assert (err.value.section, err.value.key) == ("init", "min_asks")


def test_straddle_is_read() -> None:
    """MCLevelSetEstimation's straddle (psyserve's switch: latent by default, or AEPsych's probability form)."""
    text = BASE.format(common="target = 0.75", model="GPClassificationModel", acqf="MCLevelSetEstimation", opt="")
    opt = parse_config(text + "[MCLevelSetEstimation]\nstraddle = Probability\n").phases[1]
    assert opt.generator_options["straddle"] == "probability"
    assert "straddle" not in parse_config(text).phases[1].generator_options  # the default: latent
    with pytest.raises(ConfigError) as err:
        parse_config(text + "[MCLevelSetEstimation]\nstraddle = sideways\n")
    assert (err.value.section, err.value.key) == ("MCLevelSetEstimation", "straddle")
