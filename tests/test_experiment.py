"""A complete non-model experiment (Sobol -> manual) through the sync and async clients."""

from __future__ import annotations

import math
import sqlite3

import pytest

import psyserve_client as pc
from conftest import CONFIGS, ServerThread

CONFIG = (CONFIGS / "sobol_manual.ini").read_text()


def check_stimulus(params: dict[str, object]) -> None:
    assert isinstance(params["contrast"], float) and 0.001 <= params["contrast"] <= 1
    assert isinstance(params["frequency"], int) and not isinstance(params["frequency"], bool)
    assert 1 <= params["frequency"] <= 16
    assert params["shape"] in ("circle", "square", "gabor")
    assert isinstance(params["eye"], bool)


def test_sobol_then_manual_sync(server: ServerThread) -> None:
    with pc.Client(server.address, timeout=10) as client:
        configured = client.configure(config_str=CONFIG, config_name="p01")
        sid = configured.strategy_id
        assert configured["strat_id"] == sid and client.configs == [sid] and client.config_names == {"p01": sid}
        assert [p.name for p in configured.parameters] == ["contrast", "frequency", "shape", "eye"]
        assert configured.parameters[0].log_scale and configured.parameters[2].choices == ("circle", "square", "gabor")
        assert configured.summary.metadata == {"experiment_name": "contrast-sensitivity", "participant_id": "P01"}

        seen_ids: list[int] = []
        phases: list[str] = []
        contrasts: list[float] = []
        finished = False
        while not finished:
            ask = client.ask()
            assert len(ask.trials) == 1
            trial = ask.trials[0]
            check_stimulus(trial.params)
            seen_ids.append(trial.trial_id)
            phases.append(trial.phase_name)
            contrasts.append(float(trial.params["contrast"]))  # type: ignore[arg-type]
            told = client.tell(trial_id=trial.trial_id, outcome=len(seen_ids) % 2, rt="0.41")
            assert told.trials_recorded == 1 and told.trial_id == trial.trial_id
            finished = ask.is_finished
            assert len(seen_ids) < 50
        assert seen_ids == list(range(1, 10))
        assert phases == ["init_strat"] * 6 + ["manual_strat"] * 3
        # log scale: Sobol points spread over decades, not bunched near the top
        assert min(contrasts[:6]) < 0.03 < max(contrasts[:6])
        assert contrasts[6:] == [0.5, 0.25, 0.125]

        # a retried tell is not counted twice
        again = client.tell(trial_id=seen_ids[-1], outcome=1)
        assert again.duplicate and again.trials_recorded == 0 and again.trials_completed == 9

        info = client.info()
        assert info.strat_count == 2 and info.all_strat_names == ["init_strat", "manual_strat"]
        assert info.current_strat_name == "manual_strat" and info.current_strat_finished
        assert info.current_strat_data_pts == 9 and info.summary.trials_completed == 9 and info.summary.is_finished
        trials = client.list_trials()
        assert [t.state for t in trials] == ["completed"] * 9
        assert trials[0].metadata == {"rt": "0.41"}
        assert client.get_config(section="init_strat", property="min_asks") == {"init_strat": {"min_asks": "6"}}
        assert set(client.get_config()) >= {"common", "contrast", "init_strat", "manual_strat", "metadata"}
        assert set(client.parameters()) == {"contrast", "frequency", "shape", "eye"}
        assert client.resume(config_name="p01").strategy_id == sid
        assert client.resume(config_id=sid).trials_completed == 9
        assert [s.strategy_id for s in client.list_strategies()] == [sid]
        # an explicit stimulus that was not asked for gets its own trial id
        told = client.tell(config={"contrast": [0.2], "frequency": [3], "shape": ["gabor"], "eye": [True]}, outcome=0)
        assert told.trial_id == 10 and told.trials_completed == 10
        with pytest.raises(pc.FailedPreconditionError):
            client.query("max")
        # ExportData streams every trial in raw units
        rows = list(client.export_data(sid))
        assert [t.trial_id for _, t in rows] == list(range(1, 11)) and {s for s, _ in rows} == {sid}
        assert rows[6][1].params == {"contrast": 0.5, "frequency": 2, "shape": "circle", "eye": False}
        assert rows[0][1].outcomes[0].value == 1.0 and rows[0][1].metadata == {"rt": "0.41"}
        with pytest.raises(pc.NotFoundError):
            list(client.export_data(999))
    with sqlite3.connect(server.options.db) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM events ORDER BY seq")]
    assert kinds.count("ask") == 9 and kinds.count("tell") == 10 and kinds[0] == "configure"


async def test_sobol_then_manual_async(server: ServerThread) -> None:
    async with pc.AsyncClient(server.address, timeout=10) as client:
        await client.configure(config_str=CONFIG)
        finished, told = False, 0
        while not finished:
            ask = await client.ask(num_points=1)
            check_stimulus(ask.trials[0].params)
            await client.tell(trial_id=ask.trials[0].trial_id, outcome=told % 2)
            told += 1
            finished = ask.is_finished
        assert told == 9
        info = await client.info()
        assert info.summary.is_finished and info.current_strat_data_pts == 9
        # several points in one ask, and fixed parameters honoured
        many = await client.ask(num_points=3, fixed_pars={"shape": "square", "eye": False})
        assert len(many.trials) == 3 and all(t.params["shape"] == "square" and t.params["eye"] is False for t in many.trials)
        exported = [trial async for _, trial in client.export_data()]
        assert len(exported) == 12 and sum(t.state == "pending" for t in exported) == 3
        finish = await client.finish_strategy()
        assert finish.finished_strategy == "manual_strat" and finish.finished_strat_idx == 1


def test_finish_strategy_moves_on_and_stopping_rules(server: ServerThread) -> None:
    config = """
[common]
parnames = [x]
outcome_types = [binary]
strategy_names = [a, b, c]
[x]
lower_bound = -1
upper_bound = 1
[a]
generator = SobolGenerator
min_asks = 100
[b]
generator = RandomGenerator
min_total_tells = 3
min_asks = 1
[c]
generator = SobolGenerator
max_asks = 2
"""
    with pc.Client(server.address, timeout=10) as client:
        client.configure(config_str=config)
        client.tell(trial_id=client.ask().trials[0].trial_id, outcome=1)
        assert client.finish_strategy().finished_strategy == "a"
        # phase b needs 3 model-data tells in total and both outcomes seen once (binary default)
        names = []
        for outcome in (1, 1, 1, 0):
            ask = client.ask()
            names.append(ask.phase_name)
            client.tell(trial_id=ask.trials[0].trial_id, outcome=outcome)
        assert names == ["b", "b", "b", "b"]
        ask = client.ask()
        assert ask.phase_name == "c" and not ask.is_finished
        ask = client.ask()
        assert ask.phase_name == "c" and ask.is_finished
        # a pending trial can be abandoned; it then cannot be abandoned twice
        trial = client.abandon_trial(ask.trials[0].trial_id, reason="participant blinked")
        assert trial.state == "abandoned"
        with pytest.raises(pc.FailedPreconditionError) as err:
            client.abandon_trial(ask.trials[0].trial_id)
        assert err.value.field == "trial_id"


def test_seeded_config_is_reproducible(server: ServerThread) -> None:
    with pc.Client(server.address, timeout=10) as client:
        first = client.configure(config_str=CONFIG).strategy_id
        a = [client.ask(strategy_id=first).trials[0].params for _ in range(4)]
        second = client.configure(config_str=CONFIG).strategy_id
        b = [client.ask(strategy_id=second).trials[0].params for _ in range(4)]
    assert a == b
    assert all(math.isfinite(float(p["contrast"])) for p in a)  # type: ignore[arg-type]


def test_tell_by_stimulus_completes_the_asked_trial(server: ServerThread) -> None:
    """AEPsych-style clients tell the config, not the trial id; 15 significant digits still match."""
    with pc.Client(server.address, timeout=10) as client:
        client.configure(config_str=CONFIG)
        trial = client.ask().trials[0]
        printed = {k: (float(f"{v:.15g}") if isinstance(v, float) else v) for k, v in trial.params.items()}
        told = client.tell(config=printed, outcome=1)
        assert told.trial_id == trial.trial_id
        assert [t.state for t in client.list_trials()] == ["completed"]
