"""Each model type end to end through the server: pairwise probit (2 stimuli a trial), GP
regression with noisy-EI optimisation, several points per ask and fixed parameters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import psyserve_client as pc
from conftest import ServerThread
from psyserve.app import ServerOptions

PAIRWISE = """
[common]
parnames = [x, y]
stimuli_per_trial = 2
outcome_types = [binary]
strategy_names = [init, opt]
seed = 4
[x]
lower_bound = 0
upper_bound = 1
[y]
par_type = integer
lower_bound = 0
upper_bound = 10
[init]
generator = SobolGenerator
min_asks = 6
[opt]
generator = OptimizeAcqfGenerator
model = PairwiseProbitModel
acqf = PairwiseMCPosteriorVariance
min_asks = 3
"""

REGRESSION = """
[common]
parnames = [lr, layers, act]
outcome_types = [continuous]
strategy_names = [init, opt]
seed = 5
[lr]
lower_bound = 0.0001
upper_bound = 0.1
log_scale = True
[layers]
par_type = integer
lower_bound = 1
upper_bound = 8
[act]
par_type = categorical
choices = [relu, tanh]
[init]
generator = SobolGenerator
min_asks = 6
[opt]
generator = OptimizeAcqfGenerator
model = GPRegressionModel
acqf = qLogNoisyExpectedImprovement
min_asks = 4
"""


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    srv = ServerThread(ServerOptions(port=0, db=str(Path(tmp_path_factory.mktemp("types")) / "t.db"), workers=2))
    yield srv
    srv.stop()


def test_pairwise(model_server: ServerThread) -> None:
    with pc.Client(model_server.address, timeout=120) as client:
        client.configure(config_str=PAIRWISE)
        finished = False
        count = 0
        while not finished:
            ask = client.ask()
            trial = ask.trials[0]
            assert len(trial.stimuli) == 2
            first, second = trial.stimuli
            assert isinstance(first["y"], int) and 0 <= float(first["x"]) <= 1  # type: ignore[arg-type]
            # the observer prefers larger x + y/10
            prefers_first = float(first["x"]) + int(first["y"]) / 10 > float(second["x"]) + int(second["y"]) / 10  # type: ignore[arg-type]
            client.tell(trial_id=trial.trial_id, outcome=int(prefers_first))
            finished = ask.is_finished
            count += 1
            assert count < 20
        assert count == 9 and ask.phase_name == "opt"
        # AEPsych-shaped config for pairwise: one [a, b] pair per trial
        assert all(len(v[0]) == 2 for v in ask.config.values())
        best = client.query("max").predictions[0]
        assert float(best.x["x"]) > 0.3  # type: ignore[arg-type]


def test_regression_several_points_and_fixed(model_server: ServerThread) -> None:
    with pc.Client(model_server.address, timeout=120) as client:
        client.configure(config_str=REGRESSION)
        for _ in range(6):
            trial = client.ask().trials[0]
            score = -abs(float(trial.params["lr"]) - 0.01) * 10 + int(trial.params["layers"]) / 8  # type: ignore[arg-type]
            client.tell(trial_id=trial.trial_id, outcome=score, sem=0.01)
        ask = client.ask(num_points=2, fixed_pars={"act": "tanh"})
        assert ask.phase_name == "opt" and len(ask.trials) == 2
        for trial in ask.trials:
            assert trial.params["act"] == "tanh"
            assert 0.0001 <= float(trial.params["lr"]) <= 0.1 and isinstance(trial.params["layers"], int)  # type: ignore[arg-type]
            client.tell(trial_id=trial.trial_id, outcome=0.5)
        assert ask.fit_seconds > 0 and ask.generate_seconds > 0
        best = client.query("max").predictions[0]
        assert set(best.x) == {"lr", "layers", "act"}
