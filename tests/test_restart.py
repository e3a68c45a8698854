"""Stop the server (SIGTERM, SIGKILL) mid-experiment and restart it on the same database."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

import psyserve_client as pc
from conftest import CONFIGS, spawn_server

CONFIG = (CONFIGS / "sobol_manual.ini").read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_restart_continues_where_it_stopped(tmp_path: Path, sig: int) -> None:
    db = str(tmp_path / "journal.db")
    log = tmp_path / "server.log"
    proc = spawn_server(db, log, "--no-models")
    acknowledged: dict[int, list[int]] = {}
    try:
        with pc.Client(proc.address, timeout=10) as client:
            a = client.configure(config_str=CONFIG, config_name="A").strategy_id
            b = client.configure(config_str=CONFIG, config_name="B").strategy_id
            for sid in (a, b):
                acknowledged[sid] = []
                for i in range(4):
                    trial = client.ask(strategy_id=sid).trials[0]
                    client.tell(trial_id=trial.trial_id, outcome=i % 2, strategy_id=sid)
                    acknowledged[sid].append(trial.trial_id)
            pending_a = client.ask(strategy_id=a, num_points=2).trials
        rc = proc.kill(sig)
        if sig == signal.SIGTERM:
            assert rc == 0, log.read_text()[-2000:]
    finally:
        if proc.proc.poll() is None:
            proc.kill()

    proc = spawn_server(db, log, "--no-models", port=proc.port)
    try:
        with pc.Client(proc.address, timeout=10) as client:
            summaries = {s.strategy_id: s for s in client.list_strategies()}
            assert set(summaries) == {a, b}
            assert summaries[a].trials_completed == 4 and summaries[a].trials_pending == 2
            assert summaries[b].trials_completed == 4 and summaries[b].trials_pending == 0
            assert client.resume(config_name="A").strategy_id == a
            pending = client.list_trials(state="pending", strategy_id=a)
            assert [t.trial_id for t in pending] == [t.trial_id for t in pending_a]
            assert [t.params for t in pending] == [t.params for t in pending_a]
            # pending trials can be told after the restart, ids continue, the experiment finishes
            for t in pending:
                assert client.tell(trial_id=t.trial_id, outcome=1, strategy_id=a).trials_recorded == 1
            nxt = client.ask(strategy_id=a).trials[0]
            assert nxt.trial_id == 7 and nxt.phase_name == "manual_strat"
            completed = client.list_trials(state="completed", strategy_id=b)
            assert [t.trial_id for t in completed] == acknowledged[b]
    finally:
        proc.kill(signal.SIGTERM)
    with sqlite3.connect(db) as conn:
        told = conn.execute("SELECT strategy_id, trial_id FROM events WHERE kind = 'tell'").fetchall()
    assert len(told) == len(set(told)) == 4 + 4 + 2


def test_sobol_sequence_continues_after_restart(tmp_path: Path) -> None:
    """The Sobol stream after a restart is the one an uninterrupted server would have produced."""
    log = tmp_path / "server.log"
    reference_db, db = str(tmp_path / "ref.db"), str(tmp_path / "journal.db")
    proc = spawn_server(reference_db, log, "--no-models")
    try:
        with pc.Client(proc.address, timeout=10) as client:
            client.configure(config_str=CONFIG)
            reference = [client.ask().trials[0].params for _ in range(5)]
    finally:
        proc.kill(signal.SIGKILL)
    proc = spawn_server(db, log, "--no-models")
    with pc.Client(proc.address, timeout=10) as client:
        sid = client.configure(config_str=CONFIG).strategy_id
        first = [client.ask().trials[0].params for _ in range(2)]
    proc.kill(signal.SIGKILL)
    proc = spawn_server(db, log, "--no-models", port=proc.port)
    try:
        with pc.Client(proc.address, timeout=10) as client:
            rest = [client.ask(strategy_id=sid).trials[0].params for _ in range(3)]
    finally:
        proc.kill(signal.SIGTERM)
    assert first + rest == reference
