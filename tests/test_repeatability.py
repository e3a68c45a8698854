"""A seeded run repeats exactly: the same stimuli, bit for bit, whatever the client path, the timing
of its answers, the speculation, and a SIGKILL + restart of the server mid-run.

Reference: the whole run over the AEPsych JSON/TCP protocol on a speculating server (each model
ask served from the fit computed between the previous ask and tell). Compared: the same seeded
config over gRPC, its server SIGKILLed after two model asks and restarted on its journal without
speculation (each fit made when the ask arrives, warm-started from the model state rebuilt from
the journal), the strategy evicted from memory and brought back before each of its last asks.
Without the journaled model state the first ask after the restart fits cold and differs.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import psyserve_client as pc
from conftest import ServerThread, free_port, spawn_server
from psyserve.app import ServerOptions

CONFIG = """
[common]
parnames = [x0, x1]
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [init_strat, opt_strat]
seed = 11
[x0]
par_type = continuous
lower_bound = -1
upper_bound = 1
[x1]
par_type = continuous
lower_bound = 0
upper_bound = 2
[init_strat]
generator = SobolGenerator
min_asks = 3
[opt_strat]
generator = OptimizeAcqfGenerator
model = GPClassificationModel
min_asks = 4
[OptimizeAcqfGenerator]
acqf = EAVC
restarts = 2
samps = 64
[EAVC]
target = 0.75
"""
TRIALS = 7
KILL_BEFORE = 5  # after two model asks: the third fit warm-starts from the second's state
SOBOL = """
[common]
parnames = [z]
stimuli_per_trial = 1
outcome_types = [binary]
strategy_names = [init]
[z]
par_type = continuous
lower_bound = 0
upper_bound = 1
[init]
generator = SobolGenerator
min_asks = 50
"""


def wait_for_port(port: int) -> None:
    """The AEPsych port opens just after the gRPC one."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"port {port} never opened")


def wait_evicted(client: pc.Client, strategy_id: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not next(s for s in client.list_strategies() if s.strategy_id == strategy_id).resident:
            return
        time.sleep(0.05)
    raise AssertionError(f"strategy {strategy_id} was never evicted")


def answer(x: list[float], i: int) -> int:
    """The observer: a fixed function of the stimulus and the trial index."""
    u = np.random.default_rng([7, i]).random()
    return int(u < 1 / (1 + np.exp(-(2 * x[1] - 1.5 * x[0] - 1))))


def reference_over_the_aepsych_protocol(port: int) -> list[list[float]]:
    seen = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        decoder = json.JSONDecoder()

        def call(kind: str, message: dict[str, Any]) -> Any:
            sock.sendall(json.dumps({"type": kind, "message": message}).encode())
            buf = ""
            while True:
                buf += sock.recv(1 << 16).decode()
                try:
                    return decoder.raw_decode(buf)[0]
                except json.JSONDecodeError:
                    continue

        call("setup", {"config_str": CONFIG})
        for i in range(TRIALS):
            config = call("ask", {"num_points": 1})["config"]
            x = [float(config["x0"][0]), float(config["x1"][0])]
            seen.append(x)
            call("tell", {"config": {"x0": [x[0]], "x1": [x[1]]}, "outcome": answer(x, i)})
    return seen


def test_seeded_run_repeats_exactly_across_client_path_speculation_restart_and_eviction(tmp_path: Path) -> None:
    log, db, wire_port = tmp_path / "server.log", str(tmp_path / "run.db"), free_port()
    proc = spawn_server(db, log, "--workers", "1", "--aepsych-port", str(wire_port))
    seen: list[list[float]] = []
    try:
        wait_for_port(wire_port)
        reference = reference_over_the_aepsych_protocol(wire_port)
        with pc.Client(proc.address, timeout=60) as client:
            sid = client.configure(config_str=CONFIG).strategy_id
            for i in range(KILL_BEFORE):
                trial = client.ask(strategy_id=sid).trials[0]
                x = [trial.params["x0"], trial.params["x1"]]
                seen.append(x)
                client.tell(trial_id=trial.trial_id, outcome=answer(x, i), strategy_id=sid)
        proc.kill(signal.SIGKILL)
    finally:
        if proc.proc.poll() is None:
            proc.kill()
    # back on the same journal, without speculation (every fit made when the ask arrives), one
    # strategy in memory at a time: every ask below first evicts the run (an ask on another
    # strategy) and brings it back from the journal
    proc = spawn_server(db, log, "--workers", "1", "--resident-strategies", "1", port=proc.port, env={"PSYSERVE_SPECULATE": "0"})
    try:
        with pc.Client(proc.address, timeout=60) as client:
            other = client.configure(config_str=SOBOL).strategy_id
            for i in range(KILL_BEFORE, TRIALS):
                client.ask(strategy_id=other)
                wait_evicted(client, sid)
                trial = client.ask(strategy_id=sid).trials[0]
                x = [trial.params["x0"], trial.params["x1"]]
                seen.append(x)
                client.tell(trial_id=trial.trial_id, outcome=answer(x, i), strategy_id=sid)
            assert next(s for s in client.list_strategies() if s.strategy_id == sid).trials_completed == TRIALS
    finally:
        proc.kill(signal.SIGTERM)
    differing = [i for i, (ours, theirs) in enumerate(zip(seen, reference, strict=True)) if ours != theirs]
    assert not differing, f"trials {differing} differ (bit for bit) from the reference run"


def test_an_ask_that_was_not_recorded_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    """A model ask whose journal commit fails is answered UNAVAILABLE and changes nothing: the fit
    it computed is not the one the next fits warm-start from, so the run goes on as if the failed
    ask had never been made (the same stimuli as a run without the failure)."""
    server = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=str(tmp_path / "j.db"), workers=1))
    journal = server.running.service.journal

    def pragma(statement: str) -> None:
        async def run() -> None:
            await journal._db.execute(statement)

        server.call(run())

    def play(client: pc.Client, sid: int, fail_at: int | None) -> list[list[float]]:
        seen = []
        for i in range(TRIALS):
            if i == fail_at:  # a model ask computed, then refused by the journal (SQLITE_READONLY)
                pragma("PRAGMA query_only=1")
                with pytest.raises(pc.UnavailableError, match="journal unavailable"):
                    client.ask(strategy_id=sid)
                pragma("PRAGMA query_only=0")
            trial = client.ask(strategy_id=sid).trials[0]
            x = [trial.params["x0"], trial.params["x1"]]
            seen.append(x)
            client.tell(trial_id=trial.trial_id, outcome=answer(x, i), strategy_id=sid)
        return seen

    try:
        with pc.Client(server.address, timeout=60) as client:
            reference = play(client, client.configure(config_str=CONFIG).strategy_id, None)
            assert play(client, client.configure(config_str=CONFIG).strategy_id, 4) == reference
    finally:
        server.stop()
