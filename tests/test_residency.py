"""Strategies leave memory and come back from the journal: through the real gRPC API.

A server with a tiny `--resident-strategies` bound evicts strategies while others are used; an
evicted strategy must come back with the same trials, summary and next points as one that never
left; a restart rebuilds only the strategies active since they last left memory (seen in the
summaries' `resident` flag, no timing); a SIGKILL while strategies are being evicted and rebuilt
loses no acknowledged tell.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import psyserve_client as pc
from conftest import ServerProcess, ServerThread, spawn_server
from psyserve.app import ServerOptions
from psyserve.service import Limits

CONFIG = """
[common]
parnames = [contrast, frequency, shape]
outcome_types = [binary]
strategy_names = [init, manual]
seed = 1234
[contrast]
lower_bound = 0.001
upper_bound = 1
log_scale = True
[frequency]
par_type = integer
lower_bound = 1
upper_bound = 16
[shape]
par_type = categorical
choices = [circle, square, gabor]
[init]
generator = SobolGenerator
min_asks = 12
[manual]
generator = ManualGenerator
points = [[0.5, 2, circle], [0.25, 4, square], [0.125, 8, gabor]]
shuffle = True
"""

FINITE = """
[common]
parnames = [x]
outcome_types = [binary]
strategy_names = [init]
[x]
lower_bound = 0
upper_bound = 1
[init]
generator = SobolGenerator
min_asks = 3
"""


def comparable(summary: pc.StrategySummary) -> dict[str, Any]:
    """A summary without what differs between two strategies run alike (id, name, residency)."""
    out = dataclasses.asdict(summary)
    for key in ("strategy_id", "name", "resident"):
        out.pop(key)
    return out


def trials_of(client: pc.Client, strategy_id: int) -> list[tuple[Any, ...]]:
    return [
        (t.trial_id, t.state, t.phase_index, t.stimuli, [(o.name, o.value) for o in t.outcomes], t.metadata)
        for t in client.list_trials(strategy_id=strategy_id)
    ]


def play(client: pc.Client, strategy_id: int, steps: int, offset: int = 0) -> None:
    """The same history on any strategy: asks, tells with metadata, an abandon, a pending trial."""
    for i in range(steps):
        trial = client.ask(strategy_id=strategy_id).trials[0]
        k = i + offset
        if k % 5 == 3:
            client.abandon_trial(trial.trial_id, reason="skipped", strategy_id=strategy_id)
        elif i < steps - 1:
            client.tell(trial_id=trial.trial_id, outcome=k % 2, strategy_id=strategy_id, rt=f"0.{k}")
        # the last trial of each call stays pending


def wait_resident(client: pc.Client, strategy_id: int, resident: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if next(s for s in client.list_strategies() if s.strategy_id == strategy_id).resident == resident:
            return
        time.sleep(0.05)
    raise AssertionError(f"strategy {strategy_id} never became resident={resident}")


def test_evicted_strategy_comes_back_identical(tmp_path: Path) -> None:
    """Bound 1: strategy A leaves memory when B is used; its summary while evicted, its trials, its
    config and its next points (Sobol, then the shuffled manual list) equal those of a strategy run
    alike on a server that never evicts."""
    (tmp_path / "small").mkdir()
    (tmp_path / "reference").mkdir()  # the same journal file name: Info reports it
    small = ServerThread(
        ServerOptions(
            host="127.0.0.1", port=0, db=str(tmp_path / "small" / "j.db"), models=False, limits=Limits(max_resident_strategies=1)
        )
    )
    reference = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=str(tmp_path / "reference" / "j.db"), models=False))
    try:
        with pc.Client(small.address) as c, pc.Client(reference.address) as r:
            a = c.configure(config_str=CONFIG, config_name="A").strategy_id
            ref = r.configure(config_str=CONFIG, config_name="A").strategy_id
            play(c, a, 6)
            play(r, ref, 6)
            before = trials_of(c, a)
            b = c.configure(config_str=FINITE, config_name="B").strategy_id  # A is now the least recently used
            c.ask(strategy_id=b)
            wait_resident(c, a, False)
            assert small.running.service.residency.stats.evictions >= 1
            cold = next(s for s in c.list_strategies() if s.strategy_id == a)
            assert comparable(cold) == comparable(next(s for s in r.list_strategies() if s.strategy_id == ref))
            assert comparable(c.resume(config_id=a)) == comparable(cold)  # Resume answers from the summary
            info, info_ref = c.info(strategy_id=a), r.info(strategy_id=ref)
            assert dataclasses.replace(info, summary=None) == dataclasses.replace(info_ref, summary=None)
            assert comparable(info.summary) == comparable(cold)
            assert not next(s for s in c.list_strategies() if s.strategy_id == a).resident  # reading the summary kept it out
            loads = small.running.service.residency.stats.loads
            assert trials_of(c, a) == before == trials_of(r, ref)  # rebuilt from the journal
            assert small.running.service.residency.stats.loads == loads + 1
            wait_resident(c, b, False)  # now B made room for A
            assert c.get_config(strategy_id=a) == r.get_config(strategy_id=ref)
            # the next points continue both sequences exactly: Sobol, then the shuffled manual points
            for _ in range(3):
                c.ask(strategy_id=b)  # evict A again between every step
                wait_resident(c, a, False)
                play(c, a, 4, offset=6)
                play(r, ref, 4, offset=6)
                assert trials_of(c, a) == trials_of(r, ref)
            assert comparable(c.resume(config_id=a)) == comparable(r.resume(config_id=ref))
            assert [t for _, t in c.export_data(a)] == [t for _, t in r.export_data(ref)]
            everything = list(c.export_data())  # evicted strategies are read without being kept
            assert sorted({sid for sid, _ in everything}) == [a, b]
    finally:
        small.stop()
        reference.stop()


def test_restart_rebuilds_only_the_live_strategies(tmp_path: Path) -> None:
    """Ten finished strategies leave memory (bound 2) while two live ones keep running; after a
    SIGKILL the restarted server rebuilds only the live two (their summaries say resident), and the
    others' summaries, trials and name index are still right."""
    db, log = str(tmp_path / "j.db"), tmp_path / "server.log"
    proc = spawn_server(db, log, "--no-models", "--resident-strategies", "2")
    try:
        with pc.Client(proc.address) as c:
            finished = []
            for i in range(10):
                sid = c.configure(config_str=FINITE, config_name=f"done{i}").strategy_id
                for k, trial in enumerate(c.ask(num_points=3, strategy_id=sid).trials):
                    c.tell(trial_id=trial.trial_id, outcome=k % 2, strategy_id=sid)
                finished.append(sid)
            live = [c.configure(config_str=CONFIG, config_name=f"live{i}").strategy_id for i in range(2)]
            for sid in live:
                play(c, sid, 5)
            c.list_trials(strategy_id=finished[0])  # read back in, then out again: reading writes nothing
            for sid in live:
                play(c, sid, 2, offset=5)
            for sid in finished:
                wait_resident(c, sid, False)
            trials = {sid: trials_of(c, sid) for sid in finished}  # reading them pushes the live ones out
            for sid in live:  # the participants go on: the live ones come back and change
                play(c, sid, 2, offset=7)
                trials[sid] = trials_of(c, sid)
            for sid in finished:
                wait_resident(c, sid, False)
            expected = {s.strategy_id: comparable(s) for s in c.list_strategies()}
        proc.kill(signal.SIGKILL)

        proc = spawn_server(db, log, "--no-models", "--resident-strategies", "2")
        with pc.Client(proc.address) as c:
            after = c.list_strategies()
            assert sorted(s.strategy_id for s in after if s.resident) == sorted(live)
            assert {s.strategy_id: comparable(s) for s in after} == expected
            assert c.resume(config_name="done3").strategy_id == finished[3]
            assert all(s.is_finished for s in after if s.strategy_id in finished)
            for sid, rows in trials.items():
                assert trials_of(c, sid) == rows
        proc.kill(signal.SIGKILL)

        with sqlite3.connect(db) as conn:  # a journal written before summaries existed
            conn.execute("DELETE FROM snapshots")
        proc = spawn_server(db, log, "--no-models", "--resident-strategies", "2")
        with pc.Client(proc.address) as c:  # every strategy replayed once; the finished ones leave memory at once
            after = c.list_strategies()
            assert sorted(s.strategy_id for s in after if s.resident) == sorted(live)
            assert {s.strategy_id: comparable(s) for s in after} == expected
    finally:
        proc.kill(signal.SIGKILL)


async def _clients_until_killed(
    proc: ServerProcess, sids: list[int], told: dict[int, dict[int, float]], rng: random.Random
) -> None:
    """Six clients ask and tell on their strategies (configured on the first round) until the
    server is SIGKILLed at a random moment; `told` collects every acknowledged tell."""
    stop = asyncio.Event()
    first_round = not sids

    async def client(index: int) -> None:
        async with pc.AsyncClient(proc.address, timeout=30) as c:
            if first_round:
                sid = (
                    await c.configure(config_str=CONFIG.replace("min_asks = 12", "min_asks = 100000"), config_name=f"p{index}")
                ).strategy_id
                sids.append(sid)
                told[sid] = {}
            else:
                sid = sids[index]
            while not stop.is_set():
                trial = (await c.ask(strategy_id=sid)).trials[0]
                await asyncio.sleep(rng.uniform(0, 0.02))  # a response time: the strategy goes idle and is evicted
                outcome = float(rng.random() < 0.5)
                await c.tell(trial_id=trial.trial_id, outcome=outcome, strategy_id=sid)
                told[sid][trial.trial_id] = outcome

    tasks = [asyncio.create_task(client(i)) for i in range(6)]
    await asyncio.sleep(rng.uniform(1.0, 2.5))
    proc.kill(signal.SIGKILL)  # mid-flight: requests fail from here on
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.mark.slow
def test_sigkill_while_evicting_loses_nothing(tmp_path: Path) -> None:
    """Bound 1 and six clients on six strategies: every request evicts and rebuilds strategies
    (summaries written meanwhile). SIGKILL at a random moment, twice: every acknowledged tell is
    there after the restart, each summary matches the strategy's trials, and asking goes on."""
    db, log = str(tmp_path / "j.db"), tmp_path / "server.log"
    told: dict[int, dict[int, float]] = {}  # strategy -> trial -> outcome, acknowledged
    rng = random.Random(7)
    sids: list[int] = []
    for _ in range(2):
        proc = spawn_server(db, log, "--no-models", "--resident-strategies", "1")
        try:
            asyncio.run(_clients_until_killed(proc, sids, told, rng))
        finally:
            proc.kill(signal.SIGKILL)

        proc = spawn_server(db, log, "--no-models", "--resident-strategies", "1")
        try:
            with pc.Client(proc.address) as c:
                summaries = {s.strategy_id: s for s in c.list_strategies()}
                assert sorted(summaries) == sorted(sids)
                for sid in sids:
                    trials = c.list_trials(strategy_id=sid)
                    completed = {t.trial_id: t.outcomes[0].value for t in trials if t.state == "completed"}
                    assert told[sid].items() <= completed.items(), f"strategy {sid} lost acknowledged tells"
                    told[sid] = completed  # a tell committed just before the kill may not have been acknowledged
                    s = summaries[sid]
                    assert (s.trials_asked, s.trials_completed, s.trials_pending) == (
                        len(trials),
                        len(completed),
                        sum(t.state == "pending" for t in trials),
                    )
                    trial = c.ask(strategy_id=sid).trials[0]
                    assert trial.trial_id == max(t.trial_id for t in trials) + 1
                    c.tell(trial_id=trial.trial_id, outcome=1, strategy_id=sid)
                    told[sid][trial.trial_id] = 1.0
                assert sum(len(v) for v in told.values()) > 20
        finally:
            proc.kill(signal.SIGKILL)


def test_summaries_of_every_kind_survive_eviction_and_restart(tmp_path: Path) -> None:
    """A sweep, an Ax-style experiment with constraints and an INI strategy: the summary a server
    keeps while each is out of memory, and the one stored for the next start, equal the live one."""
    from psyserve_client.ax import AxClient, ObjectiveProperties

    options = ServerOptions(
        host="127.0.0.1", port=0, db=str(tmp_path / "j.db"), models=False, limits=Limits(max_resident_strategies=1)
    )
    srv = ServerThread(options)
    try:
        with pc.Client(srv.address) as c:
            sweep = c.configure_sweep(
                {"metaParameters": {"alpha": [0.5, 0.25], "flag": [True, False], "name": ["a", "b"]}}, runs=2
            ).strategy_id
            for trial in c.ask(num_points=3, strategy_id=sweep).trials:
                c.tell_metrics(trial.trial_id, {"return": 0.5}, strategy_id=sweep)
            service = srv.running.service
            live = {sweep: next(v for v in service.list_strategies() if v.strategy_id == sweep)}  # resident: the last one used
            ax = AxClient(address=srv.address)
            ax.create_experiment(
                name="opt",
                parameters=[{"name": f"x{i}", "type": "range", "bounds": [0.0, 1.0]} for i in range(2)],
                objectives={"y": ObjectiveProperties(minimize=True)},
                parameter_constraints=["x0 + x1 <= 1.5"],
                choose_generation_strategy_kwargs={"method": "random_search"},
            )
            _, index = ax.get_next_trial()
            ax.complete_trial(index, (1.5, 0.1))
            live[ax.strategy_id] = next(v for v in service.list_strategies() if v.strategy_id == ax.strategy_id)
            assert all(v.resident for v in live.values())
            ini = c.configure(config_str=CONFIG).strategy_id
            play(c, ini, 3)  # the other two leave memory
            for sid in live:
                wait_resident(c, sid, False)
            cold = {
                v.strategy_id: dataclasses.replace(v, resident=True) for v in service.list_strategies() if v.strategy_id in live
            }
            assert cold == live
    finally:
        srv.stop()  # stores the summaries
    srv = ServerThread(options)
    try:
        stored = {v.strategy_id: v for v in srv.running.service.list_strategies() if v.strategy_id in live}
        assert all(not v.resident for v in stored.values())
        assert {sid: dataclasses.replace(v, resident=True) for sid, v in stored.items()} == live
    finally:
        srv.stop()
