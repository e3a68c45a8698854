"""Parameter sweeps through a real server: PyExpUtils indexing, leases and re-issue, missing lists,
extending runs, restarts after SIGKILL, result aggregation, and the client's worker loop."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

import psyserve_client as pc
from conftest import ServerThread, spawn_server
from psyserve.app import ServerOptions

HERE = Path(__file__).resolve().parent

# PyExpUtils' README example (ExperimentDescription, getPermutation, getRun, numPermutations)
PYEXPUTILS_EXAMPLE = {
    "algorithm": "SARSA",
    "environment": "MountainCar",
    "metaParameters": {"alpha": [1.0, 0.5, 0.25, 0.125], "lambda": [1.0, 0.99, 0.98, 0.96]},
}
GRID_3x3x2 = {"metaParameters": {"alpha": [0.1, 0.2, 0.4], "lambda": [0.0, 0.5, 0.9], "optimizer": ["adam", "sgd"]}}


def by_index(trials: list[pc.Trial]) -> dict[int, pc.Trial]:
    return {t.sweep_index: t for t in trials if t.sweep_index is not None}


# ---------------------------------------------------------------------- indexing
def test_pyexputils_documented_examples(server: ServerThread) -> None:
    with pc.Client(server.address, timeout=10) as client:
        configured = client.configure_sweep(PYEXPUTILS_EXAMPLE, runs=3)
        sweep = configured.summary.sweep
        assert sweep is not None
        assert sweep.permutations == 16 and sweep.total == 48  # numPermutations() -> 16
        assert sweep.description == PYEXPUTILS_EXAMPLE
        trials = by_index(client.ask(num_points=48).trials)
        assert sorted(trials) == list(range(48))
        # getPermutation(0 / 1 / 15 / 16) as documented
        assert trials[0].params == {"alpha": 1.0, "lambda": 1.0}
        assert trials[1].params == {"alpha": 1.0, "lambda": 0.99}
        assert trials[15].params == {"alpha": 0.125, "lambda": 0.96}
        assert trials[16].params == {"alpha": 1.0, "lambda": 1.0}
        # getRun(0 / 12 / 16 / 32) -> 0 / 0 / 1 / 2
        assert [trials[i].sweep_run for i in (0, 12, 16, 32)] == [0, 0, 1, 2]
        assert [trials[i].sweep_permutation for i in (0, 12, 16, 32)] == [0, 12, 0, 0]
        # the same description as INI gives the same indexing
        ini = "[sweep]\nruns = 3\nalpha = [1.0, 0.5, 0.25, 0.125]\nlambda = [1.0, 0.99, 0.98, 0.96]\n[metadata]\nowner = me\n"
        from_ini = client.configure(config_str=ini)
        assert from_ini.summary.sweep is not None and from_ini.summary.sweep.total == 48
        assert from_ini.summary.metadata == {"owner": "me"}
        again = by_index(client.ask(num_points=48).trials)
        assert {i: t.params for i, t in again.items()} == {i: t.params for i, t in trials.items()}


def test_nested_objects_flatten_to_dotted_names(server: ServerThread) -> None:
    description = {
        "agent": "DQN",
        "metaParameters": {"optimizer": {"name": ["adam", "sgd"], "alpha": [0.1, 0.01]}, "epsilon": 0.1, "double": [True, False]},
    }
    with pc.Client(server.address, timeout=10) as client:
        summary = client.configure_sweep(description, runs=1).summary
        assert summary.sweep is not None
        assert list(summary.sweep.parameters) == ["optimizer.name", "optimizer.alpha", "epsilon", "double"]
        params = client.parameters()
        assert params["epsilon"].type == "fixed" and params["epsilon"].value == 0.1
        assert params["optimizer.name"].type == "categorical" and params["optimizer.name"].values == ("adam", "sgd")
        trials = by_index(client.ask(num_points=8).trials)
        assert trials[0].params == {"optimizer.name": "adam", "optimizer.alpha": 0.1, "epsilon": 0.1, "double": True}
        assert trials[1].params["double"] is False and trials[2].params["optimizer.alpha"] == 0.01
        assert trials[4].params["optimizer.name"] == "sgd"
        assert client.ask().is_finished is False  # all leased (no ttl), none done
        assert client.ask().trials == []
        client.finish_strategy()  # FinishStrategy stops a sweep: nothing more is handed out
        stopped = client.ask()
        assert stopped.trials == [] and stopped.is_finished


def test_shuffled_order_is_seeded_and_run_by_run(server: ServerThread) -> None:
    with pc.Client(server.address, timeout=10) as client:
        orders = []
        for _ in range(2):
            client.configure_sweep(GRID_3x3x2, runs=2, order="shuffle", seed=7)
            orders.append([t.sweep_index for t in client.ask(num_points=36).trials])
        assert orders[0] == orders[1]
        assert sorted(orders[0][:18]) == list(range(18)) and sorted(orders[0][18:]) == list(range(18, 36))
        assert orders[0][:18] != list(range(18))


def test_bad_sweep_input_names_the_field(server: ServerThread) -> None:
    with pc.Client(server.address, timeout=10) as client:
        cases = [
            ({"alpha": [1, 2]}, 1, "sweep.description_json.metaParameters"),
            ({"metaParameters": {"alpha": []}}, 1, "sweep.description_json.metaParameters.alpha"),
            ({"metaParameters": {"alpha": [1, None]}}, 1, "sweep.description_json.metaParameters.alpha[1]"),
            ({"metaParameters": {"alpha": [1, 2]}}, 0, "sweep.runs"),
            ("{not json", 1, "sweep.description_json"),
        ]
        for description, runs, field in cases:
            with pytest.raises(pc.InvalidArgumentError) as err:
                client.configure_sweep(description, runs=runs)
            assert err.value.field == field, (description, err.value)
        with pytest.raises(pc.InvalidArgumentError) as err:
            client.configure(config_str="[sweep]\nruns = x\nalpha = [1, 2]\n")
        assert err.value.field == "config_ini[sweep].runs"
        sid = client.configure_sweep({"metaParameters": {"alpha": [1, 2]}}, runs=1).strategy_id
        trial = client.ask().trials[0]
        with pytest.raises(pc.InvalidArgumentError) as err:
            client.tell(trial_id=trial.trial_id, outcome=1.0)  # unnamed metric
        assert err.value.field == "outcomes[0].name"
        with pytest.raises(pc.InvalidArgumentError) as err:
            client.tell(config={"alpha": 1}, outcome={"score": 1.0})
        assert err.value.field == "trial_id"
        with pytest.raises(pc.InvalidArgumentError) as err:
            client.extend_sweep(0)
        assert err.value.field == "runs"
        with pytest.raises(pc.InvalidArgumentError) as err:
            client.sweep_results(last_percent=0)
        assert err.value.field == "last_percent"
        with pytest.raises(pc.InvalidArgumentError) as err:
            client.ask(fixed_pars={"alpha": 1})
        assert err.value.field == "fixed_parameters"
        other = client.configure(config_str="[common]\nparnames = [x]\nstrategy_names = [s]\n[x]\nlower_bound = 0\nupper_bound = 1\n[s]\ngenerator = SobolGenerator\n")
        with pytest.raises(pc.FailedPreconditionError) as err:
            client.list_missing(strategy_id=other.strategy_id)
        assert err.value.field == "strategy_id"
        assert client.list_missing(strategy_id=sid).indices == [0, 1]


# ---------------------------------------------------------------------- leases and late tells
def wait_abandoned(client: pc.Client, trial_id: int, timeout: float = 20.0) -> None:
    """Until the server has abandoned the trial (its lease expired); bounded."""
    deadline = time.monotonic() + timeout
    while next(t for t in client.list_trials() if t.trial_id == trial_id).state != "abandoned":
        assert time.monotonic() < deadline, f"trial {trial_id} was not abandoned in {timeout} s"
        time.sleep(0.05)


def test_late_tell_after_expiry_is_kept_once(server: ServerThread) -> None:
    server.running.service.lease_check_seconds = 0.05
    with pc.Client(server.address, timeout=10) as client:
        client.configure_sweep({"metaParameters": {"alpha": [1, 2]}}, runs=1)
        slow = client.ask(ttl_seconds=0.2).trials[0]
        assert slow.sweep_index == 0
        wait_abandoned(client, slow.trial_id)
        again = client.ask(ttl_seconds=30).trials[0]
        assert again.sweep_index == 0 and again.trial_id != slow.trial_id  # re-issued after the lease
        assert client.tell(trial_id=slow.trial_id, outcome={"score": 1.0}).trials_recorded == 1  # late, but first: kept
        second = client.tell(trial_id=again.trial_id, outcome={"score": 2.0})
        assert second.duplicate and second.trials_recorded == 0
        states = {t.trial_id: (t.state, t.sweep_index) for t in client.list_trials()}
        assert states[slow.trial_id] == ("completed", 0) and states[again.trial_id] == ("abandoned", 0)
        summary = client.info().summary.sweep
        assert summary is not None and (summary.done, summary.leased, summary.missing) == (1, 0, 1)
        results = client.sweep_results()
        assert [(r.index, r.metrics) for r in results.data.runs] == [(0, {"score": 1.0})]
        # the other order: the re-run reports first, the late one is the duplicate
        first = client.ask(ttl_seconds=0.2).trials[0]
        wait_abandoned(client, first.trial_id)
        rerun = client.ask(ttl_seconds=30).trials[0]
        assert rerun.sweep_index == first.sweep_index == 1
        assert client.tell(trial_id=rerun.trial_id, outcome={"score": 3.0}).trials_recorded == 1
        assert client.tell(trial_id=first.trial_id, outcome={"score": 4.0}).duplicate
        assert client.list_missing().indices == [] and client.ask().is_finished


def test_worker_loop_failure_is_recorded_with_its_text(server: ServerThread) -> None:
    with pc.Client(server.address, timeout=10) as client:
        sid = client.configure_sweep({"metaParameters": {"alpha": [1, 2, 3]}}, runs=1).strategy_id
        seen = []
        for trial in client.sweep(sid, ttl=30):
            seen.append(trial.index)
            with trial:
                if trial.params["alpha"] == 2:
                    raise FloatingPointError("diverged at step 12")
                trial.report({"score": float(trial.params["alpha"])})
        assert seen == [0, 1, 2]  # the failed index is not handed out again
        failed = [t for t in client.list_trials() if t.state == "failed"]
        assert len(failed) == 1 and failed[0].sweep_index == 1
        assert failed[0].metadata["abandon_reason"] == "FloatingPointError: diverged at step 12"
        missing = client.list_missing()
        assert (missing.indices, missing.failed) == ([1], [1])
        sweep = client.info().summary.sweep
        assert sweep is not None and (sweep.done, sweep.failed, sweep.missing) == (2, 1, 1)
        # `with client.sweep(...)`: the exception ends the loop, the trial is failed with its text
        sid = client.configure_sweep({"metaParameters": {"alpha": [1, 2]}}, runs=1).strategy_id
        with pytest.raises(KeyError), client.sweep(sid, ttl=30) as trials:
            for _trial in trials:
                raise KeyError("missing column")
        failed = [t for t in client.list_trials() if t.state == "failed"]
        assert [t.metadata["abandon_reason"] for t in failed] == ["KeyError: 'missing column'"]
        # a bare `for`: the trial is failed as the exception leaves the loop (the text cannot be seen)
        sid = client.configure_sweep({"metaParameters": {"alpha": [1, 2]}}, runs=1).strategy_id
        with pytest.raises(ZeroDivisionError):
            for trial in client.sweep(sid, ttl=30):
                assert trial.index == 0
                _ = 1 / 0
        failed = [t for t in client.list_trials() if t.state == "failed"]
        assert [t.sweep_index for t in failed] == [0]
        assert failed[0].metadata["abandon_reason"].startswith("RuntimeError: the worker loop was left before report()")


# ---------------------------------------------------------------------- many workers, one killed
@pytest.mark.slow
def test_four_workers_one_killed_every_result_once(tmp_path: Path) -> None:
    srv = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=str(tmp_path / "j.db"), models=False))
    srv.running.service.lease_check_seconds = 0.05
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with pc.Client(srv.address, timeout=10) as client:
            sid = client.configure_sweep(GRID_3x3x2, runs=3).strategy_id
            logs = [tmp_path / f"worker{i}.log" for i in range(4)]
            ttl = "1.5"

            def start(i: int, *extra: str) -> subprocess.Popen[bytes]:
                return subprocess.Popen([sys.executable, str(HERE / "sweep_worker.py"), srv.address, str(sid), ttl, str(logs[i]), *extra])

            victim = start(0, "hang")
            deadline = time.monotonic() + 30
            while not (logs[0].exists() and logs[0].read_text().startswith("start")):
                assert time.monotonic() < deadline, "the victim never started a job"
                time.sleep(0.02)
            killed_index, killed_trial = map(int, logs[0].read_text().split()[1:3])
            procs = [victim, *(start(i) for i in range(1, 4))]
            time.sleep(0.3)
            victim.send_signal(signal.SIGKILL)  # mid-job: its lease must expire and the index be re-run
            victim.wait(10)
            for proc in procs[1:]:
                assert proc.wait(60) == 0
            trials = client.list_trials()
            completed = [t for t in trials if t.state == "completed"]
            per_index: dict[int, int] = {}
            for t in completed:
                assert t.sweep_index is not None
                per_index[t.sweep_index] = per_index.get(t.sweep_index, 0) + 1
            assert per_index == {i: 1 for i in range(54)}  # every (permutation, run) exactly once
            killed = next(t for t in trials if t.trial_id == killed_trial)
            assert killed.state == "abandoned" and killed.metadata["abandon_reason"] == "lease expired"
            reissued = [t for t in completed if t.sweep_index == killed_index]
            assert reissued and reissued[0].trial_id != killed_trial
            assert client.list_missing().indices == []
            sweep = client.info().summary.sweep
            assert sweep is not None and (sweep.done, sweep.leased, sweep.missing, sweep.total) == (54, 0, 0, 54)
            listed = {s.strategy_id: s.sweep for s in client.list_strategies()}
            assert listed[sid] is not None and listed[sid].done == 54  # type: ignore[union-attr]
            # extending 3 -> 5 runs hands out exactly the 36 new indices
            client.extend_sweep(5)
            assert client.list_missing().indices == list(range(54, 90))
            handed = []
            while True:
                ask = client.ask(num_points=7, ttl_seconds=60)
                if not ask.trials:
                    break
                handed += [t.sweep_index for t in ask.trials]
                for t in ask.trials:
                    client.tell(trial_id=t.trial_id, outcome={"score": 0.0})
            assert sorted(handed) == list(range(54, 90)) and len(handed) == 36
            assert ask.is_finished and client.list_missing(runs=5).indices == []
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        srv.stop()


# ---------------------------------------------------------------------- restart
@pytest.mark.slow
def test_server_killed_mid_sweep_comes_back(tmp_path: Path) -> None:
    db, log = str(tmp_path / "j.db"), tmp_path / "server.log"
    proc = spawn_server(db, log, "--no-models")
    try:
        with pc.Client(proc.address, timeout=10) as client:
            sid = client.configure_sweep(GRID_3x3x2, runs=2, config_name="grid").strategy_id
            trials = client.ask(num_points=10, ttl_seconds=600).trials
            for t in trials[:6]:
                client.tell(trial_id=t.trial_id, outcome={"score": float(t.sweep_index or 0), "curve": [1.0, 2.0, float(t.trial_id)]})
            client.extend_sweep(3)
            before = (client.info(sid).summary.sweep, client.list_missing(strategy_id=sid), client.sweep_results(last_n=2, strategy_id=sid).data)
        proc.kill(signal.SIGKILL)
        replayed = subprocess.run(
            [sys.executable, "-m", "psyserve", "replay", "--db", db, "--strategy", "grid", "--no-fit", "--json"],
            capture_output=True,
            text=True,
            check=True,
        )
        offline = json.loads(replayed.stdout)["sweep"]  # `psyserve replay` reads the same journal offline
        assert (offline["done"], offline["leased"], offline["total"], offline["metrics"]) == (6, 4, 54, ["score", "curve"])
        proc = spawn_server(db, log, "--no-models", port=proc.port)
        with pc.Client(proc.address, timeout=10) as client:
            client.resume(config_name="grid")
            after = (client.info().summary.sweep, client.list_missing(), client.sweep_results(last_n=2).data)
            assert repr(after) == repr(before)  # repr: NaN SEMs of one-run permutations compare equal
            sweep = after[0]
            assert sweep is not None and (sweep.done, sweep.leased, sweep.runs, sweep.total) == (6, 4, 3, 54)
            nxt = client.ask().trials[0]
            assert nxt.sweep_index == 10  # the four leased indices (6..9) are not handed out again
            assert client.tell(trial_id=trials[7].trial_id, outcome={"score": 7.0}).trials_recorded == 1
    finally:
        proc.kill(signal.SIGKILL)


def test_old_journal_is_migrated(tmp_path: Path, db_path: str) -> None:
    """A journal written before sweeps (schema 1, CHECK without sweep_runs) opens and takes sweeps."""
    old = sqlite3.connect(db_path)
    old.executescript(
        """CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, strategy_id INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('configure', 'ask', 'tell', 'finish_phase', 'abandon')),
        trial_id INTEGER, created_at REAL NOT NULL, payload TEXT NOT NULL CHECK (json_valid(payload)));
        PRAGMA user_version=1;"""
    )
    ini = "[common]\nparnames = [x]\nstrategy_names = [s]\n[x]\nlower_bound = 0\nupper_bound = 1\n[s]\ngenerator = SobolGenerator\n"
    old.execute(
        "INSERT INTO events (strategy_id, kind, trial_id, created_at, payload) VALUES (1, 'configure', NULL, 1.0, ?)",
        (json.dumps({"name": "old", "config_ini": ini, "metadata": {}, "seed": 3, "request_id": ""}),),
    )
    old.commit()
    old.close()
    srv = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=db_path, models=False))
    try:
        with pc.Client(srv.address, timeout=10) as client:
            assert client.resume(config_name="old").strategy_id == 1
            sid = client.configure_sweep({"metaParameters": {"a": [1, 2]}}, runs=1).strategy_id
            assert client.extend_sweep(2, strategy_id=sid).sweep.runs == 2  # type: ignore[union-attr]
    finally:
        srv.stop()
    assert sqlite3.connect(db_path).execute("PRAGMA user_version").fetchone()[0] == 2


# ---------------------------------------------------------------------- results
def test_aggregation_matches_numpy(server: ServerThread, tmp_path: Path, db_path: str) -> None:
    rng = np.random.default_rng(5)
    description = {"metaParameters": {"alpha": [0.1, 0.2, 0.4], "beta": ["x", "y"]}}
    runs, p = 4, 6
    scores = rng.normal(size=(runs, p))
    curves = {(r, k): rng.normal(size=int(rng.integers(3, 40))) for r in range(runs) for k in range(p)}
    with pc.Client(server.address, timeout=10) as client:
        client.configure_sweep(description, runs=runs)
        for t in client.ask(num_points=runs * p - 1).trials:  # index 23 (perm 5, run 3) never reported
            run, k = t.sweep_run, t.sweep_permutation
            assert run is not None and k is not None
            client.tell(trial_id=t.trial_id, outcome={"score": float(scores[run, k]), "curve": curves[run, k]})
        for window, last in ((dict(last_n=3), lambda c: c[-3:]), (dict(last_percent=25.0), lambda c: c[-math.ceil(len(c) * 0.25) :]), ({}, lambda c: c)):
            results = client.sweep_results(best_metric="score", best_mode="min", **window)  # type: ignore[arg-type]
            assert [r.permutation for r in results.data.permutations] == list(range(p))
            for perm in results.data.permutations:
                k = perm.permutation
                done = runs - 1 if k == 5 else runs
                expected_scores = scores[:done, k]
                expected_curve = np.array([np.mean(last(curves[r, k])) for r in range(done)])
                for name, values in (("score", expected_scores), ("curve", expected_curve)):
                    got = perm.metrics[name]
                    assert got.count == done and perm.runs_done == done
                    assert got.mean == pytest.approx(np.mean(values), rel=1e-12, abs=1e-12)
                    assert got.sem == pytest.approx(np.std(values, ddof=1) / np.sqrt(done), rel=1e-12, abs=1e-12)
            means = [scores[: (runs - 1 if k == 5 else runs), k].mean() for k in range(p)]
            assert results.best_permutation == int(np.argmin(means))
        results = client.sweep_results(last_n=3, best_metric="score")
        assert results.best_permutation == int(np.argmax(means))
        assert results.best("score", "min")["permutation"] == int(np.argmin(means))
        # tables
        frame = results.frame()
        assert list(frame.columns[:3]) == ["alpha", "beta", "runs_done"] and len(frame) == p
        split = results.split_over("beta")
        assert sorted(split) == ["x", "y"] and all(len(g) == 3 for g in split.values())
        sliced = results.slice_over("alpha", fixed={"beta": "y"}, metric="score")
        assert list(sliced.index) == [0.1, 0.2, 0.4]
        assert sliced.loc[0.2, "score"] == pytest.approx(scores[:, 3].mean())
        with pytest.raises(ValueError):
            results.slice_over("alpha")  # beta not fixed: two rows per alpha
        path = tmp_path / "runs.csv"
        assert results.to_csv(str(path)) == runs * p - 1
        with open(path) as f:
            rows = list(csv.DictReader(f))
        row = next(r for r in rows if r["index"] == "7")  # run 1, permutation 1
        assert (row["run"], row["permutation"], row["alpha"], row["beta"]) == ("1", "1", "0.1", "y")
        assert float(row["curve"]) == pytest.approx(np.mean(curves[1, 1][-3:]))
        assert float(row["score"]) == pytest.approx(scores[1, 1])
        # the raw series come back with the trials
        told = next(t for t in client.list_trials() if t.sweep_index == 7)
        assert list(told.outcomes[1].series) == pytest.approx(list(curves[1, 1]))
        # `psyserve export`: one row per trial with the sweep's parameters, index, metrics and series
        exported = subprocess.run(
            [sys.executable, "-m", "psyserve", "export", "--db", db_path, "--format", "csv"], capture_output=True, text=True, check=True
        ).stdout
        rows = list(csv.DictReader(exported.splitlines()))
        assert len(rows) == runs * p - 1
        row = next(r for r in rows if r["sweep_index"] == "7")
        assert (row["param.alpha"], row["param.beta"], row["sweep_run"], row["sweep_permutation"]) == ("0.1", "y", "1", "1")
        assert float(row["outcome.score"]) == scores[1, 1]
        assert np.allclose(json.loads(row["series.curve"]), curves[1, 1], rtol=0, atol=0)


def test_aepsych_protocol_refuses_sweeps(db_path: str) -> None:
    """AEPsych clients tell by stimulus, not trial id: sweeps are refused there, naming the field."""
    srv = ServerThread(ServerOptions(port=0, db=db_path, models=False, aepsych_port=0))
    try:
        port = srv.running.extra[0].port  # type: ignore[attr-defined]
        with pc.Client(srv.address, timeout=10) as client:
            sid = client.configure_sweep({"metaParameters": {"a": [1, 2]}}, runs=1).strategy_id
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            replies = []
            for request in (
                {"type": "setup", "message": {"config_str": "[sweep]\nalpha = [1, 2]\n"}},
                {"type": "resume", "message": {"strat_id": sid}},
            ):
                sock.sendall(json.dumps(request).encode())
                replies.append(json.loads(sock.recv(65536).decode()))
        assert "gRPC API only" in str(replies[0]) and "config_ini" in str(replies[0])
        assert "gRPC API only" in str(replies[1]) and "strat_id" in str(replies[1])
    finally:
        srv.stop()


async def test_async_worker_loops_share_a_sweep(server: ServerThread) -> None:
    """Three asyncio worker loops over one sweep: every index once; `async with trial` records a failure."""
    async with pc.AsyncClient(server.address, timeout=10) as client:
        sid = (await client.configure_sweep(GRID_3x3x2, runs=2)).strategy_id
        seen: list[int] = []

        async def worker() -> None:
            async for trial in client.sweep(sid, ttl=30, poll_seconds=0.05):
                async with trial:
                    seen.append(trial.index)
                    if trial.index == 5:
                        raise ValueError("bad seed")
                    await trial.report({"score": float(trial.params["alpha"]) + trial.run})

        await asyncio.gather(worker(), worker(), worker())
        assert sorted(seen) == list(range(36))
        missing = await client.list_missing(strategy_id=sid)
        assert (missing.indices, missing.failed) == ([5], [5])
        failed = [t for t in await client.list_trials(strategy_id=sid) if t.state == "failed"]
        assert [t.metadata["abandon_reason"] for t in failed] == ["ValueError: bad seed"]


def test_sweep_rpcs_over_http_json(db_path: str) -> None:
    """The Connect (HTTP/JSON) transport serves the sweep RPCs through the same servicer."""
    srv = ServerThread(ServerOptions(port=0, db=db_path, models=False, http_port=0))
    try:
        with pc.Client(srv.address, timeout=10) as client:
            sid = client.configure_sweep({"metaParameters": {"a": [1, 2, 3]}}, runs=2).strategy_id
            trial = client.ask().trials[0]
            client.tell(trial_id=trial.trial_id, outcome={"score": [1.0, 3.0]})
        with httpx.Client(base_url=f"http://127.0.0.1:{int(srv.running.http.port)}", timeout=10) as http:

            def call(method: str, body: dict[str, object]) -> dict[str, object]:
                reply = http.post(f"/psyserve.v1.ExperimentService/{method}", json=body)
                assert reply.status_code == 200, reply.text
                return reply.json()  # type: ignore[no-any-return]

            missing = call("ListMissingResults", {"strategyId": sid})
            assert missing["indices"] == [str(i) for i in range(1, 6)]  # int64 as JSON strings
            results = call("GetSweepResults", {"strategyId": sid, "lastN": 1, "includeRuns": True})
            assert results["permutations"][0]["metrics"][0] == {"name": "score", "mean": 3.0, "sem": "NaN", "count": "1"}
            extended = call("ExtendSweep", {"strategyId": sid, "runs": 3})
            assert extended["summary"]["sweep"]["total"] == "9"
    finally:
        srv.stop()
