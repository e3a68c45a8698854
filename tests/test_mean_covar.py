"""AEPsych's mean/covariance factories (default, song, pairwise) and `lookahead_type`: each option
read from the config reaches the fitted model and changes it as it should, a model phase runs
through the server with each factory, and what cannot be honoured is refused naming the key."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from gpytorch.kernels import LinearKernel, MaternKernel, ScaleKernel
from gpytorch.priors import GammaPrior, LogNormalPrior

import psyserve_client as pc
from conftest import ServerThread, spawn_server
from psyserve.app import ServerOptions
from psyserve.compute.contract import GeneratorSpec, ModelSpec
from psyserve.compute.factory import build_acquisition
from psyserve.compute.kernels import PairwiseKernel, plain_kernel
from psyserve.compute.mean_covar import build_covar
from psyserve.compute.models import fit_model
from psyserve.compute.predict import predict
from psyserve.config import ConfigError, parse_config

PROBIT_75 = 0.6744897501960817  # Phi^-1(0.75)

BASE = """
[common]
parnames = [{parnames}]
stimuli_per_trial = 1
outcome_types = [{outcome}]
strategy_names = [init_strat, opt_strat]
target = 0.75
seed = 3
{params}
[init_strat]
generator = SobolGenerator
min_asks = 8

[opt_strat]
generator = OptimizeAcqfGenerator
model = {model}
acqf = {acqf}
min_asks = 3
{extra}
"""


def config(extra: str = "", model: str = "GPClassificationModel", acqf: str = "MCLevelSetEstimation", names: tuple[str, ...] = ("context", "intensity"), outcome: str = "binary") -> str:
    params = "".join(f"[{n}]\npar_type = continuous\nlower_bound = 0\nupper_bound = 1\n" for n in names)
    return BASE.format(parnames=", ".join(names), outcome=outcome, params=params, model=model, acqf=acqf, extra=extra)


def model_options(text: str) -> dict[str, float | int | str]:
    return dict(parse_config(text).phases[1].model_options)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """As in the compute workers: small tensors, one thread (several threads are far slower on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------- config -> options
def test_default_factory_options_become_model_options() -> None:
    opts = model_options(
        config(
            "[GPClassificationModel]\nmean_covar_factory = default_mean_covar_factory\n"
            "[default_mean_covar_factory]\nfixed_mean = True\nlengthscale_prior = lognormal\nls_loc = 0.5\nls_scale = 1.0\n"
            "kernel = MaternKernel\nfixed_kernel_amplitude = False\noutputscale_prior = gamma\n"
        )
    )
    assert opts["factory"] == "default" and opts["mean"] == "fixed"
    assert opts["mean_constant"] == pytest.approx(PROBIT_75)  # the target comes from [common]
    assert (opts["ls_prior"], opts["ls_loc"], opts["ls_scale"], opts["kernel"], opts["outputscale"]) == ("lognormal", 0.5, 1.0, "matern52", "gamma")
    # the factory's section alone is enough (AEPsych's models use the default factory unless told otherwise)
    assert model_options(config("[default_mean_covar_factory]\nzero_mean = True\nfixed_kernel_amplitude = True\n")) == {
        "factory": "default",
        "mean": "zero",
        "outputscale": "fixed",
    }
    # naming the default factory without options keeps every model's own mean, kernel and fast fitting
    assert model_options(config("[GPClassificationModel]\nmean_covar_factory = default_mean_covar_factory\n")) == {}
    regression = config("[GPRegressionModel]\nmean_covar_factory = default_mean_covar_factory\n", model="GPRegressionModel", acqf="qUpperConfidenceBound", outcome="continuous")
    assert model_options(regression) == {}
    assert model_options(config()) == {}


def test_song_and_pairwise_factories_become_model_options() -> None:
    song = model_options(config("[GPClassificationModel]\nmean_covar_factory = song_mean_covar_factory\n[song_mean_covar_factory]\ntarget = 0.6\n"))
    assert song == {"factory": "song", "mean": "fixed", "mean_constant": pytest.approx(0.2533471), "stim_dim": 1, "intensity_rbf": 0}
    song0 = model_options(config("[GPClassificationModel]\nmean_covar_factory = song_mean_covar_factory\n[song_mean_covar_factory]\nstim_dim = 0\nintensity_RBF = True\n"))
    assert (song0["stim_dim"], song0["intensity_rbf"], song0["mean_constant"]) == (0, 1, pytest.approx(PROBIT_75))
    four = ("a1", "b1", "a2", "b2")
    pair = model_options(config("[GPClassificationModel]\nmean_covar_factory = pairwise_mean_covar_factory\n", names=four))
    assert pair == {"factory": "pairwise", "mean": "zero"}
    shared = model_options(
        config(
            "[GPClassificationModel]\nmean_covar_factory = pairwise_mean_covar_factory\n"
            "[pairwise_mean_covar_factory]\nshared_dims = [0]\nzero_mean = False\n",
            names=("s", "a1", "a2"),
        )
    )
    assert shared == {"factory": "pairwise", "shared_dims": "0"}


REFUSED = [
    ("[default_mean_covar_factory]\nfixed_mean = True\n", "BASE_NO_TARGET", "default_mean_covar_factory", "target"),
    ("[default_mean_covar_factory]\nlengthscale_prior = wishart\n", "", "default_mean_covar_factory", "lengthscale_prior"),
    ("[default_mean_covar_factory]\nkernel = PeriodicKernel\n", "", "default_mean_covar_factory", "kernel"),
    ("[default_mean_covar_factory]\noutputscale_prior = uniform\n", "", "default_mean_covar_factory", "outputscale_prior"),
    ("[default_mean_covar_factory]\nlb = [0, 0, 0]\n", "", "default_mean_covar_factory", "lb"),
    ("[GPClassificationModel]\nmean_covar_factory = monotonic_mean_covar_factory\n", "deprecated", "GPClassificationModel", "mean_covar_factory"),
    ("[GPClassificationModel]\nmean_covar_factory = mixed_mean_covar_factory\n", "not a factory", "GPClassificationModel", "mean_covar_factory"),
    ("[GPClassificationModel]\nmean_covar_factory = my_factory\n", "unknown", "GPClassificationModel", "mean_covar_factory"),
    ("[GPClassificationModel]\nmean_covar_factory = song_mean_covar_factory\n[song_mean_covar_factory]\nstim_dim = 2\n", "", "song_mean_covar_factory", "stim_dim"),
    ("[GPClassificationModel]\nmean_covar_factory = song_mean_covar_factory\n[song_mean_covar_factory]\ntarget = 1.5\n", "", "song_mean_covar_factory", "target"),
    ("[GPClassificationModel]\nmean_covar_factory = pairwise_mean_covar_factory\n", "equal halves", "pairwise_mean_covar_factory", "shared_dims"),
    (
        "[GPClassificationModel]\nmean_covar_factory = pairwise_mean_covar_factory\n[pairwise_mean_covar_factory]\nbase_mean_covar_factory = song_mean_covar_factory\n",
        "",
        "pairwise_mean_covar_factory",
        "base_mean_covar_factory",
    ),
    (
        "[GlobalMI]\nlookahead_type = posterior\nobjective = FloorProbitObjective\n[FloorProbitObjective]\nfloor = 0.5\n",
        "GLOBALMI",
        "GlobalMI",
        "lookahead_type",
    ),
    ("[GlobalMI]\nlookahead_type = sideways\n", "GLOBALMI", "GlobalMI", "lookahead_type"),
]


@pytest.mark.parametrize(("extra", "hint", "section", "key"), REFUSED)
def test_what_cannot_be_honoured_is_refused_naming_the_key(extra: str, hint: str, section: str, key: str) -> None:
    names = ("a", "b", "c") if hint == "equal halves" else ("context", "intensity")
    text = config(extra, acqf="GlobalMI" if hint == "GLOBALMI" else "MCLevelSetEstimation", names=names)
    if hint == "BASE_NO_TARGET":
        text = text.replace("target = 0.75\n", "").replace("acqf = MCLevelSetEstimation", "acqf = MCPosteriorVariance")
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert (err.value.section, err.value.key) == (section, key), str(err.value)
    if hint and hint.islower():
        assert hint in str(err.value)


def test_factories_refused_where_they_cannot_apply() -> None:
    with pytest.raises(ConfigError) as err:  # song fixes the mean at a response probability's probit
        parse_config(config("[GPRegressionModel]\nmean_covar_factory = song_mean_covar_factory\n", model="GPRegressionModel", acqf="qUpperConfidenceBound", outcome="continuous"))
    assert (err.value.section, err.value.key) == ("GPRegressionModel", "mean_covar_factory")
    with pytest.raises(ConfigError) as err:
        parse_config(config("[default_mean_covar_factory]\nfixed_mean = True\n", model="GPRegressionModel", acqf="qUpperConfidenceBound", outcome="continuous"))
    assert (err.value.section, err.value.key) == ("default_mean_covar_factory", "fixed_mean")
    pairwise = config("[default_mean_covar_factory]\nzero_mean = True\n", model="PairwiseProbitModel", acqf="PairwiseMCPosteriorVariance")
    pairwise = pairwise.replace("stimuli_per_trial = 1", "stimuli_per_trial = 2")
    with pytest.raises(ConfigError) as err:
        parse_config(pairwise)
    assert (err.value.section, err.value.key) == ("default_mean_covar_factory", "zero_mean")
    # OrdinalGPModel: its own factory (and the default one, named) is what psyserve fits; options are not
    ordinal = config("[OrdinalGPModel]\nmean_covar_factory = ordinal_mean_covar_factory\n", model="OrdinalGPModel", acqf="MCPosteriorVariance", outcome="ordinal")
    assert parse_config(ordinal).phases[1].model_options["n_levels"] == 5
    with pytest.raises(ConfigError) as err:
        parse_config(ordinal + "[default_mean_covar_factory]\nfixed_mean = True\n")
    assert (err.value.section, err.value.key) == ("OrdinalGPModel", "mean_covar_factory")
    with pytest.raises(ConfigError) as err:  # the ordinal factory elsewhere
        parse_config(config("[GPClassificationModel]\nmean_covar_factory = ordinal_mean_covar_factory\n"))
    assert "OrdinalGPModel only" in str(err.value)
    # a look-ahead type on an acquisition without look-ahead changes nothing: a warning, as AEPsych ignores it
    spec = parse_config(config("[MCLevelSetEstimation]\nlookahead_type = posterior\n"))
    assert spec.warnings == ("[MCLevelSetEstimation] lookahead_type is not used by psyserve",)
    assert parse_config(config("[GlobalMI]\nlookahead_type = levelset\n", acqf="GlobalMI")).warnings == ()
    posterior = parse_config(config("[LocalMI]\nlookahead_type = posterior\n", acqf="LocalMI").replace("target = 0.75\n", ""))
    assert posterior.warnings == () and posterior.phases[1].generator_options["lookahead_type"] == "posterior"  # no target needed


# ---------------------------------------------------------------------- options -> fitted model
def observer_data(n: int, seed: int, d: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.random((n, d))
    p = 1 / (1 + np.exp(-(X[:, -1] - 0.4 - 0.2 * np.sin(5 * X[:, 0])) / 0.1))
    return X, (rng.random(n) < p).astype(float)


def fit(options: dict[str, float | int | str], X: np.ndarray, y: np.ndarray, kind: str = "GPClassificationModel") -> object:
    return fit_model(ModelSpec(kind, X.shape[1], options), X, y)


def test_fixed_mean_stays_fixed_and_priors_and_amplitude_are_the_ones_asked_for() -> None:
    X, y = observer_data(30, 1)
    y[:] = 1.0  # all yes: a fitted constant mean climbs, a fixed one cannot
    fitted_mean = fit({}, X, y).model.model.mean_module.constant.item()  # type: ignore[attr-defined]
    fixed = fit({"factory": "default", "mean": "fixed", "mean_constant": PROBIT_75}, X, y)
    gp = fixed.model.model  # type: ignore[attr-defined]
    assert gp.mean_module.constant.item() == PROBIT_75 and fitted_mean > PROBIT_75 + 0.2
    assert isinstance(gp.covar_module, ScaleKernel)  # psyserve's default amplitude where not set

    X, y = observer_data(30, 2)
    model = fit({"factory": "default", "ls_prior": "lognormal", "outputscale": "fixed", "kernel": "matern52"}, X, y).model.model  # type: ignore[attr-defined]
    assert isinstance(model.covar_module, MaternKernel)  # no amplitude at all
    prior = model.covar_module.lengthscale_prior
    assert isinstance(prior, LogNormalPrior) and float(prior.loc) == pytest.approx(math.sqrt(2) + math.log(2) / 2)
    model = fit({"factory": "default", "ls_prior": "invgamma", "outputscale": "gamma"}, X, y).model.model  # type: ignore[attr-defined]
    ls_prior, os_prior = model.covar_module.base_kernel.lengthscale_prior, model.covar_module.outputscale_prior
    assert isinstance(ls_prior, GammaPrior) and float(ls_prior.concentration) == pytest.approx(4.6)
    assert isinstance(os_prior, GammaPrior) and float(os_prior.rate) == pytest.approx(0.15)


def test_song_kernel_is_linear_along_the_intensity_dimension() -> None:
    X, y = observer_data(40, 3)
    fitted = fit({"factory": "song", "mean": "fixed", "mean_constant": PROBIT_75, "stim_dim": 1, "intensity_rbf": 0}, X, y)
    kernels = fitted.model.model.covar_module.kernels  # type: ignore[attr-defined]
    linear = [k.base_kernel for k in kernels if isinstance(k.base_kernel, LinearKernel)]
    assert len(linear) == 1 and linear[0].active_dims.tolist() == [1]
    t = np.linspace(0, 1, 7)
    for context in (0.1, 0.5, 0.9):
        mean = predict(fitted, np.c_[np.full(7, context), t], False)["mean"]  # type: ignore[arg-type]
        assert np.abs(np.diff(mean, 2)).max() < 1e-8 * max(1.0, np.abs(mean).max())  # affine in intensity
        assert mean[-1] > mean[0]  # more intensity, more "yes"
    c = np.linspace(0, 1, 7)
    across = predict(fitted, np.c_[c, np.full(7, 0.5)], False)["mean"]  # type: ignore[arg-type]
    assert np.abs(np.diff(across, 2)).max() > 1e-3  # the context dimension is not linear
    # with intensity_RBF the intensity dimension has the RBF too: no longer affine
    curved = fit({"factory": "song", "mean": "fixed", "mean_constant": PROBIT_75, "stim_dim": 1, "intensity_rbf": 1}, X, y)
    mean = predict(curved, np.c_[np.full(7, 0.5), t], False)["mean"]  # type: ignore[arg-type]
    assert np.abs(np.diff(mean, 2)).max() > 1e-4


def test_pairwise_kernel_models_a_preference() -> None:
    rng = np.random.default_rng(4)
    X = rng.random((40, 4))  # (a1, a2) against (b1, b2); the observer prefers the larger first coordinate
    y = (rng.random(40) < 1 / (1 + np.exp(-(X[:, 0] - X[:, 2]) / 0.1))).astype(float)
    fitted = fit({"factory": "pairwise", "mean": "zero"}, X, y)
    assert isinstance(fitted.model.model.covar_module, PairwiseKernel)  # type: ignore[attr-defined]
    a, b = rng.random((5, 2)), rng.random((5, 2))
    ab = predict(fitted, np.c_[a, b], False)["mean"]  # type: ignore[arg-type]
    ba = predict(fitted, np.c_[b, a], False)["mean"]  # type: ignore[arg-type]
    same = predict(fitted, np.c_[a, a], True)  # type: ignore[arg-type]
    np.testing.assert_allclose(ab, -ba, atol=1e-9)  # swapping the stimuli flips the preference
    np.testing.assert_allclose(same["mean"], 0.0, atol=1e-9)  # a stimulus against itself: no preference
    np.testing.assert_allclose(same["probability"], 0.5, atol=1e-9)
    hi, lo = predict(fitted, np.array([[0.9, 0.5, 0.1, 0.5]]), True), predict(fitted, np.array([[0.1, 0.5, 0.9, 0.5]]), True)  # type: ignore[arg-type]
    assert hi["probability"][0] > 0.7 > 0.3 > lo["probability"][0]


@pytest.mark.parametrize(
    ("d", "options"),
    [
        (2, {"factory": "song", "stim_dim": 1, "intensity_rbf": 0}),
        (3, {"factory": "song", "stim_dim": 0, "intensity_rbf": 1}),
        (4, {"factory": "pairwise"}),
        (3, {"factory": "pairwise", "shared_dims": "0"}),
        (2, {"factory": "default", "outputscale": "fixed", "kernel": "matern52"}),
    ],
)
def test_plain_torch_kernels_equal_gpytorch(d: int, options: dict[str, float | int | str]) -> None:
    """The plain-torch evaluation behind fitting, predictions and acquisitions is GPyTorch's kernel."""
    covar = build_covar(d, options, (1.0, 4.0))
    plain = plain_kernel(covar)
    assert plain is not None
    A, B = torch.rand(2, 5, d, dtype=torch.float64), torch.rand(2, 7, d, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(plain(A, B, False), covar(A, B).to_dense(), atol=1e-12, rtol=0)
        torch.testing.assert_close(plain(A, A, True), covar(A, A, diag=True).to_dense(), atol=1e-12, rtol=0)


def test_regression_zero_mean_is_not_fitted() -> None:
    rng = np.random.default_rng(5)
    X = rng.random((20, 2))
    y = 3.0 + np.sin(4 * X[:, 0])
    model = fit({"factory": "default", "mean": "zero", "outputscale": "box"}, X, y, "GPRegressionModel").model  # type: ignore[attr-defined]
    assert model.mean_module.constant.item() == 0.0 and not model.mean_module.raw_constant.requires_grad
    assert isinstance(model.covar_module, ScaleKernel)


def _bvn(a: float, b: float, rho: float) -> float:
    return float(scipy.stats.multivariate_normal(mean=[0.0, 0.0], cov=[[1.0, rho], [rho, 1.0]]).cdf([a, b]))


def _h(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def test_posterior_look_ahead_is_the_mutual_information_with_the_responses() -> None:
    """lookahead_type = posterior: GlobalMI is the mutual information between the response at x and
    the responses at the reference points (y = 1 iff f + e > 0), checked against a direct bivariate
    normal computation; LocalMI the one with a second response at x itself; both differ from the
    level-set look-ahead."""
    X, y = observer_data(25, 6)
    fitted = fit({}, X, y)
    latent = fitted.latent  # type: ignore[attr-defined]
    x = torch.tensor([[0.3, 0.55]], dtype=torch.float64)
    values = {}
    for kind in ("levelset", "posterior"):
        spec = GeneratorSpec("GlobalMI", {"target": 0.75, "lookahead_points": 16, "lookahead_type": kind})
        acq = build_acquisition("GlobalMI", fitted, spec, 1)  # type: ignore[arg-type]
        values[kind] = float(acq(x.unsqueeze(0)).detach())
        if kind == "posterior":
            ref = acq.reference  # type: ignore[attr-defined]
            if acq.numpy_ready():  # type: ignore[attr-defined]  # the closed-form numpy path agrees
                assert float(acq.value_grad_np(x.numpy(), grad=False)[0][0]) == pytest.approx(values[kind], rel=1e-6)  # type: ignore[attr-defined]
    mu, var = (t.detach().reshape(-1) for t in latent.mean_variance(torch.cat([x, ref])))
    cov = latent.covariance(x, ref).detach().reshape(-1)
    s = math.sqrt(1 + float(var[0]))
    a = float(mu[0]) / s
    P1 = float(scipy.stats.norm.cdf(a))
    mi = []
    for r in range(ref.shape[0]):
        sr = math.sqrt(1 + float(var[r + 1]))
        b = float(mu[r + 1]) / sr
        joint, pr = _bvn(a, b, float(cov[r]) / (s * sr)), float(scipy.stats.norm.cdf(b))
        mi.append(_h(pr) - P1 * _h(joint / P1) - (1 - P1) * _h((pr - joint) / (1 - P1)))
    assert values["posterior"] == pytest.approx(float(np.mean(mi)), rel=1e-4, abs=1e-7)
    assert abs(values["posterior"] - values["levelset"]) > 1e-4

    local = build_acquisition("LocalMI", fitted, GeneratorSpec("LocalMI", {"target": 0.75, "lookahead_type": "posterior"}), 1)  # type: ignore[arg-type]
    m, v = (float(t.detach().reshape(-1)[0]) for t in latent.mean_variance(x))
    a = m / math.sqrt(1 + v)
    p = float(scipy.stats.norm.cdf(a))
    joint = _bvn(a, a, v / (1 + v))
    expected = _h(p) - p * _h(joint / p) - (1 - p) * _h((p - joint) / (1 - p))
    assert float(local(x.unsqueeze(0)).detach()) == pytest.approx(expected, rel=1e-4, abs=1e-7)


# ---------------------------------------------------------------------- through the server
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = ServerThread(ServerOptions(port=0, db=str(tmp_path_factory.mktemp("mc") / "mc.db"), workers=1))
    yield srv
    srv.stop()


SERVER_RUNS = {
    "default": (
        config(
            "[GPClassificationModel]\nmean_covar_factory = default_mean_covar_factory\n"
            "[default_mean_covar_factory]\nfixed_mean = True\nlengthscale_prior = lognormal\nkernel = MaternKernel\n"
        ),
        ("context", "intensity"),
    ),
    "song": (config("[GPClassificationModel]\nmean_covar_factory = song_mean_covar_factory\n"), ("context", "intensity")),
    "pairwise": (config("[GPClassificationModel]\nmean_covar_factory = pairwise_mean_covar_factory\n", names=("a1", "a2", "b1", "b2")), ("a1", "a2", "b1", "b2")),
    "posterior look-ahead": (config("[GlobalMI]\nlookahead_type = posterior\nquery_set_size = 64\n", acqf="GlobalMI"), ("context", "intensity")),
}


@pytest.mark.parametrize("factory", sorted(SERVER_RUNS))
def test_model_phase_runs_through_the_server(server: ServerThread, factory: str) -> None:
    text, names = SERVER_RUNS[factory]
    rng = random.Random(7)
    with pc.Client(server.address, timeout=120) as client:
        configured = client.configure(config_str=text)
        assert configured.warnings == []
        sid = configured.strategy_id
        for _ in range(11):  # 8 Sobol trials, 3 model trials (speculation on)
            trial = client.ask(strategy_id=sid).trials[0]
            values = [float(trial.params[n]) for n in names]  # type: ignore[arg-type]
            assert all(0.0 <= v <= 1.0 for v in values)
            yes = values[-1] > 0.4 if factory != "pairwise" else values[0] > values[2]
            client.tell(trial_id=trial.trial_id, outcome=int(yes) if rng.random() > 0.1 else int(not yes), strategy_id=sid)
        info = client.info(strategy_id=sid)
        assert info.current_strat_name == "opt_strat" and info.current_strat_data_pts == 11
        if factory == "song":  # the server's model is linear along the intensity
            grid = [{"context": 0.3, "intensity": float(t)} for t in np.linspace(0, 1, 5)]
            mean = np.array([p.mean for p in client.query("prediction", x=grid, strategy_id=sid).predictions])
            assert np.abs(np.diff(mean, 2)).max() < 1e-6 * max(1.0, np.abs(mean).max())
        if factory == "pairwise":  # a stimulus against itself: no preference
            same = client.query("prediction", probability_space=True, x=[{"a1": 0.3, "a2": 0.6, "b1": 0.3, "b2": 0.6}], strategy_id=sid)
            assert same.predictions[0].probability == pytest.approx(0.5, abs=1e-6)
        best = client.query("max", probability_space=True, strategy_id=sid).predictions[0]
        assert 0.0 <= best.probability <= 1.0 and all(0.0 <= float(best.x[n]) <= 1.0 for n in names)  # type: ignore[arg-type]


@pytest.mark.slow
def test_factory_survives_sigkill_and_restart(tmp_path: Path) -> None:
    """A song-kernel strategy killed mid model phase: after the restart (journal replay, a fresh fit
    without warm start) every trial is there and the refitted model is still the song factory's
    (linear along the intensity), and its asks go on."""
    db, log = str(tmp_path / "song.db"), tmp_path / "server.log"
    text = config("[GPClassificationModel]\nmean_covar_factory = song_mean_covar_factory\n")
    rng = random.Random(11)

    def run(client: pc.Client, sid: int, n: int) -> None:
        for _ in range(n):
            trial = client.ask(strategy_id=sid).trials[0]
            yes = float(trial.params["intensity"]) > 0.4  # type: ignore[arg-type]
            client.tell(trial_id=trial.trial_id, outcome=int(yes) if rng.random() > 0.1 else int(not yes), strategy_id=sid)

    def linear_along_intensity(client: pc.Client, sid: int) -> bool:
        grid = [{"context": 0.3, "intensity": float(t)} for t in np.linspace(0, 1, 5)]
        mean = np.array([p.mean for p in client.query("prediction", x=grid, strategy_id=sid).predictions])
        return bool(np.abs(np.diff(mean, 2)).max() < 1e-6 * max(1.0, np.abs(mean).max()) and np.ptp(mean) > 1e-3)

    proc = spawn_server(db, log, "--workers", "1")  # speculation on: a speculative fit is in flight at the kill
    try:
        with pc.Client(proc.address, timeout=120) as client:
            sid = client.configure(config_str=text).strategy_id
            run(client, sid, 10)  # 8 Sobol trials, 2 model trials
            pending = client.ask(strategy_id=sid).trials[0]  # asked, not yet told, when the server dies
            assert linear_along_intensity(client, sid)
        proc.kill()
        proc = spawn_server(db, log, "--workers", "1", port=proc.port)
        with pc.Client(proc.address, timeout=120) as client:
            info = client.info(strategy_id=sid)
            assert info.current_strat_name == "opt_strat" and info.current_strat_data_pts == 10
            assert linear_along_intensity(client, sid)  # refitted from the journal with the same factory
            client.tell(trial_id=pending.trial_id, outcome=1, strategy_id=sid)  # the trial asked before the kill
            run(client, sid, 1)
            assert client.info(strategy_id=sid).current_strat_data_pts == 12
    finally:
        proc.kill()
