"""The AEPsych INI grammar: parameter types, stopping rules, warnings and errors naming the key."""

from __future__ import annotations

import pytest

from psyserve.config import ACQFS, MODELS, ConfigError, parse_config
from psyserve.params import ParamType

FULL = """
[common]
parnames = [c, n, k, b, f]
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [init, opt]
target = 0.75
seed = 3
colour = blue

[c]
par_type = continuous
lower_bound = 0.01
upper_bound = 10
log_scale = True
[n]
par_type = integer
lower_bound = -2
upper_bound = 2
[k]
par_type = categorical
choices = [red, green]
[b]
par_type = binary
[f]
par_type = fixed
value = 0.5

[init]
generator = SobolGenerator
min_asks = 10
min_total_outcome_occurrences = 2
[opt]
generator = OptimizeAcqfGenerator
model = GPClassificationModel
max_asks = 30
min_total_tells = 25
refit_every = 3
[OptimizeAcqfGenerator]
acqf = MCLevelSetEstimation
restarts = 4
samps = 500
max_gen_time = 0.5
[MCLevelSetEstimation]
beta = 3.84
objective = ProbitObjective
[GPClassificationModel]
inducing_size = 50
unknown_knob = 1
[metadata]
experiment_name = test
participant_id = P7
"""


def test_full_config() -> None:
    spec = parse_config(FULL)
    types = [p.type for p in spec.space.parameters]
    assert types == [ParamType.CONTINUOUS, ParamType.INTEGER, ParamType.CATEGORICAL, ParamType.BINARY, ParamType.FIXED]
    assert spec.space.dim == 4 and spec.seed == 3
    c = spec.space.by_name["c"]
    assert c.log_scale and c.to_unit(10**-0.5) == pytest.approx(0.5)
    assert c.from_unit(0.5) == pytest.approx(10**-0.5) and c.to_unit(1.0) == pytest.approx(2 / 3)
    assert spec.space.by_name["n"].from_unit(0.6) == 0 and spec.space.by_name["k"].from_unit(0.9) == "green"
    init, opt = spec.phases
    assert init.min_asks == 10 and init.min_total_outcome_occurrences == 2
    assert opt.is_model_based and opt.model == "GPClassificationModel" and opt.acqf == "MCLevelSetEstimation"
    assert opt.max_asks == 30 and opt.min_total_tells == 25 and opt.refit_every == 3
    assert opt.generator_options == {
        "restarts": 4,
        "samps": 500,
        "max_gen_time": 0.5,
        "target": 0.75,
        "beta": 3.84,
        "objective": "ProbitObjective",
    }
    assert opt.model_options == {"inducing_size": 50}
    assert spec.metadata == {"experiment_name": "test", "participant_id": "P7"}
    assert sorted(spec.warnings) == [
        "[GPClassificationModel] unknown_knob is not used by psyserve",
        "[common] colour is not used by psyserve",
    ]


def test_legacy_bounds_acqf_in_strategy_and_seed_default() -> None:
    spec = parse_config(
        """
[common]
parnames = [x, y]
lb = [0, -1]
ub = [1, 1]
strategy_names = [s, m]
[s]
generator = RandomGenerator
n_trials = 5
[m]
generator = OptimizeAcqfGenerator
model = GPClassificationModel
acqf = EAVC
[EAVC]
target = 0.6
""",
        default_seed=11,
    )
    assert [(p.lower, p.upper) for p in spec.space.parameters] == [(0, 1), (-1, 1)]
    assert spec.phases[0].min_asks == 5 and spec.phases[0].seed == 11 and spec.phases[1].seed == 12
    assert spec.phases[1].acqf == "EAVC" and spec.phases[1].generator_options["target"] == 0.6


def test_manual_points_and_pairwise() -> None:
    spec = parse_config(
        """
[common]
parnames = [x, k]
stimuli_per_trial = 2
outcome_types = [binary]
strategy_names = [m]
[x]
lower_bound = 0
upper_bound = 1
[k]
par_type = categorical
choices = [a, b]
[m]
generator = ManualGenerator
points = [[[0.1, a], [0.2, b]], [[0.3, b], [0.4, a]]]
shuffle = True
"""
    )
    phase = spec.phases[0]
    assert phase.max_asks == 2 and phase.shuffle
    assert phase.manual_points[0] == ((0.1, "a"), (0.2, "b"))


@pytest.mark.parametrize(
    ("patch", "section", "key"),
    [
        ("[common]\nparnames = [x]\nstrategy_names = [s]\nstimuli_per_trial = 3\n", "common", "stimuli_per_trial"),
        ("[common]\nparnames = [x]\nstrategy_names = [s]\noutcome_types = [weird]\n", "common", "outcome_types"),
        ("[common]\nparnames = [x, x]\nstrategy_names = [s]\n", "common", "parnames"),
        (
            "[common]\nparnames = [x]\nstrategy_names = [s]\n[s]\ngenerator = SobolGenerator\nmin_asks = 5\nmax_asks = 2\n",
            "s",
            "max_asks",
        ),
        (
            "[common]\nparnames = [x]\nstrategy_names = [s]\n[s]\nmodel = GPRegressionModel\ngenerator = OptimizeAcqfGenerator\nacqf = EAVC\n",
            "s",
            "model",
        ),
        ("[common]\nparnames = [x]\nstrategy_names = [s]\n[x]\npar_type = wobbly\n", "x", "par_type"),
        ("[common]\nparnames = [x]\nstrategy_names = [s]\n[s]\ngenerator = ManualGenerator\npoints = [[7]]\n", "s", "points"),
    ],
)
def test_errors_name_section_and_key(patch: str, section: str, key: str) -> None:
    base = {"x": "[x]\nlower_bound = 0\nupper_bound = 1\n", "s": "[s]\ngenerator = SobolGenerator\n"}
    text = patch
    for name, block in base.items():
        if f"\n[{name}]\n" not in f"\n{text}":
            text += block
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert (err.value.section, err.value.key) == (section, key), str(err.value)


def test_acquisition_must_fit_the_model() -> None:
    text = FULL.replace("acqf = MCLevelSetEstimation", "acqf = PairwiseMCPosteriorVariance")
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert (err.value.section, err.value.key) == ("opt", "acqf") and "does not work with" in str(err.value)
    assert {"EAVC", "GlobalMI", "qLogNoisyExpectedImprovement"} <= ACQFS and "PairwiseProbitModel" in MODELS


def test_fitting_switches() -> None:
    """`elbo` (classification) and `laplace` (pairwise) choose psyserve's numpy fit or BoTorch's."""
    default = parse_config(FULL).phases[1].model_options
    assert "elbo" not in default  # the model's default ("fast") applies
    spec = parse_config(FULL.replace("inducing_size = 50", "inducing_size = 50\nelbo = BoTorch"))
    assert spec.phases[1].model_options["elbo"] == "botorch"
    # a switch the model does not read is not silently taken: it is an unused key
    other = parse_config(FULL.replace("inducing_size = 50", "inducing_size = 50\nlaplace = botorch"))
    assert "laplace" not in other.phases[1].model_options
    assert any("laplace" in w for w in other.warnings)
    with pytest.raises(ConfigError) as err:
        parse_config(FULL.replace("inducing_size = 50", "inducing_size = 50\nelbo = quick"))
    assert (err.value.section, err.value.key) == ("GPClassificationModel", "elbo") and "fast" in str(err.value)
