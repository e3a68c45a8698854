"""SobolGenerator's sequence is torch's scrambled Sobol engine (AEPsych's and Ax's): the numpy port
against torch itself, and through the server, a seeded config's initial trials (single stimuli
and pairs) against ``torch.quasirandom.SobolEngine(k * d, scramble=True, seed=seed)``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import psyserve_client as pc
from conftest import ServerThread
from psyserve.quasirandom import TorchSobol

# torch rounds some of its points through float32; the port's are exact multiples of 2^-30
TOL = 6e-8


@pytest.mark.parametrize("d", [1, 2, 3, 4, 6, 8, 12, 20])
def test_port_equals_torch_engine(d: int) -> None:
    for seed in (0, 1, 7, 123_456, 2**31 - 1, 2**32 + 5):
        engine = torch.quasirandom.SobolEngine(d, scramble=True, seed=seed)
        expected = engine.draw(200, dtype=torch.float64).numpy()
        port = TorchSobol(d, seed)
        assert np.array_equal(port._shift, engine.shift.numpy()), (d, seed)
        assert np.array_equal(port._v, engine.sobolstate.numpy()), (d, seed)
        drawn = np.vstack([port.random(1), port.random(63), port.random(136)])  # in pieces, as asks draw
        assert np.abs(drawn - expected).max() < TOL, (d, seed)
        # a rebuilt strategy fast-forwards to where it was
        later = TorchSobol(d, seed)
        later.fast_forward(77)
        assert np.abs(later.random(10) - expected[77:87]).max() < TOL
        assert np.array_equal(TorchSobol(d, seed).points(77, 10), later.points(77, 10))


def test_different_seeds_differ_and_points_are_in_the_cube() -> None:
    a, b = TorchSobol(4, 1).random(32), TorchSobol(4, 2).random(32)
    assert not np.allclose(a, b)
    assert ((a >= 0) & (a < 1)).all()


SINGLE = """
[common]
parnames = [c, a]
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [init_strat]
seed = 11
[c]
par_type = continuous
lower_bound = -1
upper_bound = 1
[a]
par_type = continuous
lower_bound = 2
upper_bound = 6
[init_strat]
generator = SobolGenerator
min_asks = 12
"""

PAIRS = """
[common]
parnames = [x0, x1]
stimuli_per_trial = 2
outcome_types = [binary]
strategy_names = [init_strat]
seed = 9
[x0]
par_type = continuous
lower_bound = 0
upper_bound = 1
[x1]
par_type = continuous
lower_bound = 0
upper_bound = 1
[init_strat]
generator = SobolGenerator
min_asks = 10
"""


def test_seeded_sobol_trials_are_torchs_through_the_server(server: ServerThread) -> None:
    """A seeded SobolGenerator phase asks torch's points, told in between, with the first d of a
    pair's 2 * d coordinates the first stimulus (as AEPsych 0.8 asks them)."""
    with pc.Client(server.address, timeout=10) as client:
        client.configure(config_str=SINGLE)
        got = []
        for i in range(12):
            trial = client.ask().trials[0]
            got.append([float(trial.params["c"]), float(trial.params["a"])])  # type: ignore[arg-type]
            client.tell(trial_id=trial.trial_id, outcome=i % 2)
        u = torch.quasirandom.SobolEngine(2, scramble=True, seed=11).draw(12, dtype=torch.float64).numpy()
        expected = np.column_stack([-1 + 2 * u[:, 0], 2 + 4 * u[:, 1]])
        assert np.abs(np.array(got) - expected).max() < 4 * TOL

        client.configure(config_str=PAIRS)
        pairs = []
        for i in range(10):
            trial = client.ask().trials[0]
            assert len(trial.stimuli) == 2
            pairs.append([[float(s["x0"]), float(s["x1"])] for s in trial.stimuli])  # type: ignore[arg-type]
            client.tell(trial_id=trial.trial_id, outcome=i % 2)
        u = torch.quasirandom.SobolEngine(4, scramble=True, seed=9).draw(10, dtype=torch.float64).numpy()
        assert np.abs(np.array(pairs) - u.reshape(10, 2, 2)).max() < TOL
