"""Crash harness: SIGKILL the server at random moments while clients run trials; nothing acknowledged is lost.

Five client threads (three on their own strategies, two sharing one) run 100 ask/tell trials
against a server subprocess that is killed (SIGKILL, seeded schedule, at least 10 times) and
restarted on the same database and port. Clients reconnect and retry a call that failed: tells by
trial id are idempotent; an ask whose reply was lost leaves a pending trial that is then told or
abandoned. The journal (read with sqlite3) must hold every acknowledged tell exactly once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pytest

import psyserve_client as pc
from conftest import ServerProcess, spawn_server

T = TypeVar("T")
SEED = int(os.environ.get("PSYSERVE_CRASH_SEED", "20240611"))
TRIALS = 100
KILLS = 12  # planned; at least MIN_KILLS must land before the clients finish
MIN_KILLS = 10
DEADLINE_SECONDS = 150.0
RETRYABLE = (pc.UnavailableError, pc.DeadlineExceededError)

CONFIG = """
[common]
parnames = [intensity, duration]
outcome_types = [binary]
strategy_names = [init, sweep]
seed = 3
[intensity]
lower_bound = 0.01
upper_bound = 10
log_scale = True
[duration]
par_type = integer
lower_bound = 50
upper_bound = 500
[init]
generator = SobolGenerator
min_asks = 8
[sweep]
generator = ManualGenerator
points = [[0.1, 100], [1, 200], [5, 300], [10, 400], [0.5, 500]]
"""

Key = tuple[int, int]  # (strategy id, trial id)


@dataclass
class Ledger:
    """What the clients were told by the server (shared by all threads, under `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: dict[Key, float] = field(default_factory=dict)  # tells that got a reply -> outcome
    abandoned: set[Key] = field(default_factory=set)
    handed_out: dict[int, list[int]] = field(default_factory=lambda: defaultdict(list))  # ask replies, per strategy
    in_hand: set[Key] = field(default_factory=set)  # asked, reply received, tell not yet acknowledged
    seen_pending: set[Key] = field(default_factory=set)
    orphans: set[Key] = field(default_factory=set)  # pending trials whose ask reply was lost
    worker_tells: int = 0
    failed_calls: int = 0
    duplicate_replies: int = 0
    checks_after_restart: int = 0


class Harness:
    """The server subprocess, killed and restarted on the same database and port."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = str(tmp_path / "journal.db")
        self.log = tmp_path / "server.log"
        self.proc: ServerProcess = spawn_server(self.db, self.log, "--no-models")
        self.address = self.proc.address
        self.up = threading.Event()
        self.up.set()
        self.kills = 0
        self.restart_seconds: list[float] = []

    def kill_and_restart(self) -> None:
        self.up.clear()
        self.proc.kill()  # SIGKILL
        self.kills += 1
        started = time.monotonic()
        self.proc = spawn_server(self.db, self.log, "--no-models", port=self.proc.port)
        self.restart_seconds.append(time.monotonic() - started)
        self.up.set()


class Worker:
    """One client thread: ask, wait a random response time, tell; retry what a kill interrupted."""

    def __init__(
        self,
        harness: Harness,
        ledger: Ledger,
        strategy_id: int,
        quota: int,
        index: int,
        exclusive: bool,
        request_ids: bool = False,
    ) -> None:
        self.harness, self.ledger = harness, ledger
        self.strategy_id, self.quota, self.exclusive = strategy_id, quota, exclusive
        self.request_ids = request_ids  # asks carry a request_id: a retried ask returns the same trial
        self.index = index
        self.rng = random.Random(SEED * 100 + index)
        self.client = pc.Client(harness.address, timeout=5)
        self.error: BaseException | None = None
        self.mine: set[Key] = set()

    def call(self, fn: Callable[[pc.Client], T], what: str) -> T:
        """Run fn(client) until it gets a reply; after a failure, reconnect and check the server's state."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return fn(self.client)
            except RETRYABLE:
                if time.monotonic() > deadline:
                    raise
                with self.ledger.lock:
                    self.ledger.failed_calls += 1
                self.reconnect()
                if self.exclusive and what == "ask" and not self.request_ids:
                    self.settle_orphans()  # (with request ids the retry itself returns the lost trial)

    def reconnect(self) -> None:
        self.client.close()
        time.sleep(0.02)
        assert self.harness.up.wait(90), "server did not come back"
        self.client = pc.Client(self.harness.address, timeout=5)
        self.check_server_state()

    def check_server_state(self) -> None:
        """After a restart: every tell acknowledged to this worker is there with its outcome, and
        every trial it holds is still pending (or completed, when its tell was in flight)."""
        while True:
            try:
                trials = {t.trial_id: t for t in self.client.list_trials(strategy_id=self.strategy_id)}
                break
            except RETRYABLE:
                time.sleep(0.05)
                self.client.close()
                self.harness.up.wait(90)
                self.client = pc.Client(self.harness.address, timeout=5)
        with self.ledger.lock:
            acknowledged = {k: v for k, v in self.ledger.acknowledged.items() if k in self.mine}
            holding = [k for k in self.ledger.in_hand if k in self.mine]
            self.ledger.checks_after_restart += 1
        for (_, tid), outcome in acknowledged.items():
            assert trials[tid].state == "completed", (tid, trials[tid])
            assert trials[tid].outcomes[0].value == outcome
        for _, tid in holding:
            assert tid in trials and trials[tid].state in ("pending", "completed"), (tid, trials.get(tid))

    def settle_orphans(self) -> None:
        """Tell or abandon pending trials of this (unshared) strategy that no client holds: asks
        whose replies were lost to a kill."""
        pending = self.call(lambda c: c.list_trials(state="pending", strategy_id=self.strategy_id), "list")
        with self.ledger.lock:
            orphans = [
                (self.strategy_id, t.trial_id) for t in pending if (self.strategy_id, t.trial_id) not in self.ledger.in_hand
            ]
        for key in orphans:
            settle(self, key, tell=self.rng.random() < 0.5)

    def run(self) -> None:
        try:
            told = 0
            while told < self.quota:
                rid = f"worker-{self.index}-ask-{told}" if self.request_ids else ""
                trial = self.call(functools.partial(ask_one, strategy_id=self.strategy_id, request_id=rid), "ask")
                key = (self.strategy_id, trial.trial_id)
                with self.ledger.lock:
                    self.ledger.handed_out[self.strategy_id].append(trial.trial_id)
                    self.ledger.in_hand.add(key)
                    self.ledger.seen_pending.add(key)
                self.mine.add(key)
                time.sleep(self.rng.uniform(0, 0.02))  # the participant responds
                outcome = float(self.rng.random() < 0.5)
                reply = self.call(
                    functools.partial(tell_one, strategy_id=self.strategy_id, trial_id=key[1], outcome=outcome), "tell"
                )
                assert reply.trial_id == key[1]
                with self.ledger.lock:
                    self.ledger.acknowledged[key] = outcome
                    self.ledger.in_hand.discard(key)
                    self.ledger.worker_tells += 1
                    self.ledger.duplicate_replies += reply.duplicate
                told += 1
        except BaseException as exc:
            self.error = exc
        finally:
            self.client.close()


def ask_one(client: pc.Client, strategy_id: int, request_id: str) -> pc.Trial:
    return client.ask(strategy_id=strategy_id, request_id=request_id).trials[0]


def tell_one(client: pc.Client, strategy_id: int, trial_id: int, outcome: float) -> pc.TellResult:
    return client.tell(trial_id=trial_id, outcome=outcome, strategy_id=strategy_id)


def settle(worker: Worker, key: Key, tell: bool) -> None:
    """Tell (outcome 1) or abandon a pending orphan trial, retrying until the server answers."""
    sid, tid = key
    ledger = worker.ledger
    worker.mine.add(key)
    with ledger.lock:
        ledger.orphans.add(key)
        ledger.seen_pending.add(key)
    if tell:
        worker.call(lambda c: c.tell(trial_id=tid, outcome=1, strategy_id=sid), "tell")
        with ledger.lock:
            ledger.acknowledged[key] = 1.0
        return
    try:
        worker.call(lambda c: c.abandon_trial(tid, reason="ask reply lost", strategy_id=sid), "abandon")
    except pc.FailedPreconditionError:  # the first attempt committed; its reply was lost
        state = next(t.state for t in worker.call(lambda c: c.list_trials(strategy_id=sid), "list") if t.trial_id == tid)
        assert state == "abandoned", state
    with ledger.lock:
        ledger.abandoned.add(key)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    harness = Harness(tmp_path)
    ledger = Ledger()
    try:
        with pc.Client(harness.address, timeout=10) as client:
            own = [client.configure(config_str=CONFIG, config_name=f"own-{i}").strategy_id for i in range(3)]
            shared = client.configure(config_str=CONFIG, config_name="shared").strategy_id
        # (strategy, exclusive, request ids): the last own strategy's asks carry request ids
        plan = [
            (own[0], True, False),
            (own[1], True, False),
            (own[2], True, True),
            (shared, False, False),
            (shared, False, False),
        ]
        workers = [Worker(harness, ledger, sid, TRIALS // len(plan), i, excl, rids) for i, (sid, excl, rids) in enumerate(plan)]
        threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
        started = time.monotonic()
        for t in threads:
            t.start()

        # Kill when the clients' progress passes each of KILLS random points, after a random
        # extra delay, so kills land anywhere in the ask/commit/reply/tell cycle.
        for point in sorted(rng.sample(range(3, 90), KILLS)):
            while ledger.worker_tells < point and any(t.is_alive() for t in threads):
                assert time.monotonic() - started < DEADLINE_SECONDS, "clients made no progress"
                time.sleep(0.002)
            if not any(t.is_alive() for t in threads):
                break
            time.sleep(rng.uniform(0, 0.03))
            harness.kill_and_restart()
        for t in threads:
            t.join(DEADLINE_SECONDS - (time.monotonic() - started))
        for w in workers:
            if w.error is not None:
                raise w.error
        assert not any(t.is_alive() for t in threads), "clients did not finish"
        assert harness.kills >= MIN_KILLS, f"only {harness.kills} kills landed before the clients finished"

        # The shared strategy's orphans are settled once its clients are done (they could not tell
        # each other's lost asks apart from trials in flight).
        sweeper = Worker(harness, ledger, shared, 0, 99, exclusive=False)
        leftovers = sweeper.call(lambda c: c.list_trials(state="pending", strategy_id=shared), "list")
        for i, t in enumerate(leftovers):
            settle(sweeper, (shared, t.trial_id), tell=i % 2 == 0)
        with pc.Client(harness.address, timeout=10) as client:
            summaries = {s.strategy_id: s for s in client.list_strategies()}
        sweeper.client.close()
    finally:
        rc = harness.proc.kill(15)  # SIGTERM: a clean stop flushes nothing new, but proves it still stops
    assert rc == 0, harness.log.read_text()[-3000:]
    assert not ledger.in_hand

    with sqlite3.connect(harness.db) as conn:
        tells = conn.execute("SELECT strategy_id, trial_id, payload FROM events WHERE kind = 'tell' ORDER BY seq").fetchall()
        asks = conn.execute("SELECT strategy_id, trial_id FROM events WHERE kind = 'ask' ORDER BY seq").fetchall()
        abandons = conn.execute("SELECT strategy_id, trial_id FROM events WHERE kind = 'abandon'").fetchall()

    # every tell that got a reply is in the journal exactly once, with the outcome sent
    told = Counter((sid, tid) for sid, tid, _ in tells)
    assert all(n == 1 for n in told.values()), [k for k, n in told.items() if n > 1]
    assert set(told) == set(ledger.acknowledged)
    for sid, tid, payload in tells:
        assert json.loads(payload)["outcomes"][0]["value"] == ledger.acknowledged[(sid, tid)]
    assert ledger.worker_tells == TRIALS

    # trial ids never repeat: not in the journal, not in the replies the clients got
    by_strategy: dict[int, list[int]] = defaultdict(list)
    for sid, tid in asks:
        by_strategy[sid].append(tid)
    for sid, ids in by_strategy.items():
        assert ids == sorted(set(ids)), f"strategy {sid}: trial ids {ids}"
    for sid, ids in ledger.handed_out.items():
        assert len(ids) == len(set(ids)), f"strategy {sid}: an id was handed out twice: {ids}"
        assert set(ids) <= set(by_strategy[sid])

    # every trial that was ever pending is told or (deliberately) abandoned; none vanished
    asked = set(asks)
    assert ledger.seen_pending <= asked
    assert set(abandons) == ledger.abandoned
    assert asked == set(told) | ledger.abandoned
    handed_out = {(sid, tid) for sid, ids in ledger.handed_out.items() for tid in ids}
    assert asked == handed_out | ledger.orphans  # each asked trial reached its client, or was found as an orphan
    assert not [k for k in ledger.orphans if k[0] == own[2]], "a retried ask with a request_id made a second trial"

    # final counts match what the clients were told
    for sid, summary in summaries.items():
        completed = sum(1 for s, _ in ledger.acknowledged if s == sid)
        abandoned = sum(1 for s, _ in ledger.abandoned if s == sid)
        assert summary.trials_completed == completed, (sid, summary)
        assert summary.trials_pending == 0
        assert summary.trials_asked == completed + abandoned == len(by_strategy[sid])

    print(
        f"\ncrash harness (seed {SEED}): {harness.kills} SIGKILLs, restarts {min(harness.restart_seconds):.2f}-"
        f"{max(harness.restart_seconds):.2f} s; {ledger.failed_calls} calls retried, {ledger.duplicate_replies} tells "
        f"answered as duplicates, {len(ledger.orphans)} lost ask replies (orphans: {len(ledger.abandoned)} abandoned), "
        f"{ledger.checks_after_restart} state checks after reconnects; {len(tells)} tells in the journal"
    )


def test_request_ids_survive_a_sigkill(tmp_path: Path) -> None:
    """Retries after a crash, with the request ids of the first attempts, return the first results."""
    db, log = str(tmp_path / "journal.db"), tmp_path / "server.log"
    proc = spawn_server(db, log, "--no-models")
    try:
        with pc.Client(proc.address, timeout=10) as client:
            sid = client.configure(config_str=CONFIG, config_name="rid", request_id="configure-1").strategy_id
            asked = client.ask(num_points=2, request_id="ask-1").trials
            told = client.tell(config={"intensity": 1.0, "duration": 100}, outcome=1, request_id="tell-1")  # by stimulus
    finally:
        proc.kill()
    proc = spawn_server(db, log, "--no-models", port=proc.port)
    try:
        with pc.Client(proc.address, timeout=10) as client:
            assert client.configure(config_str=CONFIG, config_name="rid", request_id="configure-1").strategy_id == sid
            again = client.ask(num_points=2, request_id="ask-1", strategy_id=sid).trials
            assert [(t.trial_id, t.params) for t in again] == [(t.trial_id, t.params) for t in asked]
            retold = client.tell(config={"intensity": 1.0, "duration": 100}, outcome=1, request_id="tell-1", strategy_id=sid)
            assert retold.duplicate and retold.trial_id == told.trial_id
            summary = client.info(strategy_id=sid).summary
            assert (summary.trials_completed, summary.trials_pending) == (1, 2)
            assert len(client.list_strategies()) == 1
    finally:
        proc.kill(signal.SIGTERM)


# ---------------------------------------------------------------------- kills during model fits
THRESHOLD = (Path(__file__).resolve().parent / "configs" / "threshold_2d.ini").read_text()


def compute_workers(server_pid: int) -> list[int]:
    """The server's compute-pool processes (spawn workers, not the resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(server_pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def end_processes(pids: list[int]) -> None:
    """SIGKILL processes this test caused (orphaned compute workers), by pid."""
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sigkill_during_a_model_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server dies while a worker fits the model for an Ask: after a restart nothing half-made
    is left (no trial for the lost ask), the retried Ask is answered from the model phase, ids go on."""
    monkeypatch.setenv("PSYSERVE_SPECULATE", "0")  # the fit must be the Ask's own, not precomputed
    db, log = str(tmp_path / "journal.db"), tmp_path / "server.log"
    proc = spawn_server(db, log, "--workers", "1")
    workers = compute_workers(proc.proc.pid)
    try:
        assert workers, "no compute worker found"
        with pc.Client(proc.address, timeout=60) as client:
            sid = client.configure(config_str=THRESHOLD.replace("MCLevelSetEstimation", "EAVC")).strategy_id
            for trial in client.ask(num_points=10).trials:
                client.tell(trial_id=trial.trial_id, outcome=int(float(trial.params["c"]) > 0))
            for i in range(40):  # more data: a longer fit to land the kill in
                c = -1 + 2 * (i % 10) / 9
                client.tell(config={"c": c, "a": -1 + 2 * (i // 10) / 3}, outcome=int(c > 0), strategy_id=sid)
        before = sum(cpu_ticks(p) for p in workers)
        outcome: list[BaseException | pc.AskResult] = []

        def ask() -> None:
            with pc.Client(proc.address, timeout=60) as c:
                try:
                    outcome.append(c.ask(strategy_id=sid))
                except pc.PsyserveError as exc:
                    outcome.append(exc)

        asker = threading.Thread(target=ask)
        asker.start()
        deadline = time.monotonic() + 30
        while sum(cpu_ticks(p) for p in workers) - before < 5 and time.monotonic() < deadline:  # 50 ms of worker CPU
            time.sleep(0.005)
        proc.kill()  # SIGKILL mid-fit
        asker.join(30)
        assert outcome and isinstance(outcome[0], pc.UnavailableError), f"the kill did not land during the fit: {outcome}"
    finally:
        if proc.proc.poll() is None:
            proc.kill()
        end_processes(workers)

    proc = spawn_server(db, log, "--workers", "1", port=proc.port)
    workers = compute_workers(proc.proc.pid)
    try:
        with pc.Client(proc.address, timeout=120) as client:
            assert [t.state for t in client.list_trials(strategy_id=sid)] == ["completed"] * 50
            retry = client.ask(strategy_id=sid).trials[0]
            assert (retry.trial_id, retry.phase_name) == (51, "opt_strat")
            client.tell(trial_id=retry.trial_id, outcome=1, strategy_id=sid)
            assert client.info(strategy_id=sid).summary.trials_completed == 51
    finally:
        proc.kill(signal.SIGTERM)
        end_processes(workers)
    with sqlite3.connect(db) as conn:
        asked = [r[0] for r in conn.execute("SELECT trial_id FROM events WHERE kind = 'ask' ORDER BY seq")]
    assert asked == [*range(1, 11), 51]  # 11-50 were told by stimulus; the lost ask left nothing


@pytest.mark.slow
def test_compute_workers_exit_with_a_killed_server(tmp_path: Path) -> None:
    proc = spawn_server(str(tmp_path / "journal.db"), tmp_path / "server.log", "--workers", "1")
    workers = compute_workers(proc.proc.pid)
    try:
        assert workers
        proc.kill()
        deadline = time.monotonic() + 5
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(p) for p in workers), "orphaned compute workers outlive the server"
    finally:
        end_processes(workers)
