"""The journal directly (group commit, its one-by-one retry, big groups, schema versions) and its
failures as the server answers them: a full disk is RESOURCE_EXHAUSTED, logged once per episode,
another write failure UNAVAILABLE; acknowledged data survives and the server recovers."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

import psyserve_client as pc
from conftest import CONFIGS, ServerThread
from psyserve.app import ServerOptions
from psyserve.journal import SCHEMA_VERSION, Event, Journal, JournalError, ModelStateWrite

CONFIG = (CONFIGS / "sobol_manual.ini").read_text()


def ask_event(trial_id: int, strategy_id: int = 1) -> Event:
    return Event(strategy_id, "ask", {"phase_index": 0, "stimuli": [{"x": trial_id}]}, trial_id=trial_id)


async def test_concurrent_appends_share_one_commit(tmp_path: Path) -> None:
    journal = await Journal.open(tmp_path / "j.db")
    try:
        await asyncio.gather(*(journal.append([ask_event(i)]) for i in range(1, 6)))
        assert journal.commits == 1 and journal.events_written == 5  # one group, one transaction
    finally:
        await journal.close()


async def test_failed_group_is_retried_one_by_one(tmp_path: Path) -> None:
    """One member of a group violates a UNIQUE index: it alone fails, the others are committed."""
    journal = await Journal.open(tmp_path / "j.db")
    try:
        await journal.append([ask_event(1)])
        results = await asyncio.gather(
            journal.append([ask_event(2)]),
            journal.append([ask_event(1)]),  # a second ask for trial 1
            journal.append([ask_event(3), ask_event(4)]),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], JournalError) and "UNIQUE" in str(results[1])
        # first commit, then the failed group (no commit), then members 1 and 3 on their own
        assert journal.commits == 3 and journal.events_written == 4
        assert [e.trial_id for e in await journal.load()] == [1, 2, 3, 4]
    finally:
        await journal.close()


async def test_group_over_sqlite_variable_limit(tmp_path: Path) -> None:
    """More rows than one multi-row INSERT may bind (5 variables a row): one transaction, all rows."""
    journal = await Journal.open(tmp_path / "j.db")
    try:
        await journal.append([ask_event(i) for i in range(1, 7001)])  # 35,000 variables in one append
        await asyncio.gather(
            *(journal.append([ask_event(i, strategy_id=2) for i in range(1 + 500 * k, 501 + 500 * k)]) for k in range(6))
        )
        events = await journal.load()
        assert len(events) == 10_000 and journal.events_written == 10_000
        assert [e.trial_id for e in events if e.strategy_id == 2] == list(range(1, 3001))
    finally:
        await journal.close()


async def test_model_state_is_committed_with_its_ask_and_replaced_by_the_next(tmp_path: Path) -> None:
    """A model ask's state is written in the ask's own transaction: it is there exactly when the
    ask is (a failed group leaves neither), and one row per strategy holds the latest."""
    journal = await Journal.open(tmp_path / "j.db")
    try:
        assert await journal.model_state(1) is None
        await journal.append([ask_event(1), ask_event(2)], ModelStateWrite(1, 2, b"\x00first"))
        await asyncio.gather(
            journal.append([ask_event(3)], ModelStateWrite(1, 3, b"second")),
            journal.append([ask_event(1, strategy_id=2)], ModelStateWrite(2, 1, b"other")),
        )
        assert await journal.model_state(1) == (3, b"second") and await journal.model_state(2) == (1, b"other")
        with pytest.raises(JournalError):  # trial 3's ask again: the UNIQUE index refuses it
            await journal.append([ask_event(3)], ModelStateWrite(1, 3, b"never"))
        assert await journal.model_state(1) == (3, b"second")
        assert [e.trial_id for e in await journal.load(1)] == [1, 2, 3]
    finally:
        await journal.close()


async def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(JournalError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        await Journal.open(path)
    with sqlite3.connect(path) as db:  # left as it was
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def _pragma(server: ServerThread, statement: str) -> None:
    """Run a PRAGMA on the server's own journal connection (a real SQLite state, not a stand-in)."""
    journal = server.running.service.journal

    async def run() -> None:
        await journal._db.execute(statement)

    server.call(run())


def test_journal_write_failure_is_unavailable_then_recovers(db_path: str) -> None:
    server = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=db_path, models=False))
    try:
        with pc.Client(server.address, timeout=10) as client:
            client.configure(config_str=CONFIG)
            first = client.ask().trials[0]
            _pragma(server, "PRAGMA query_only=1")  # every write now fails (SQLITE_READONLY)
            with pytest.raises(pc.UnavailableError, match="journal unavailable"):
                client.tell(trial_id=first.trial_id, outcome=1)
            _pragma(server, "PRAGMA query_only=0")
            assert client.tell(trial_id=first.trial_id, outcome=1).trials_recorded == 1
    finally:
        server.stop()


def test_full_disk_is_resource_exhausted_logged_once(db_path: str, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite's max_page_count gives the same SQLITE_FULL a full disk does."""
    server = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=db_path, models=False))
    try:
        with pc.Client(server.address, timeout=10) as client:
            sid = client.configure(config_str=CONFIG).strategy_id
            told = []
            for _ in range(3):
                trial = client.ask().trials[0]
                client.tell(trial_id=trial.trial_id, outcome=1)
                told.append(trial)
            pages = sqlite3.connect(db_path).execute("PRAGMA page_count").fetchone()[0]
            _pragma(server, f"PRAGMA max_page_count={pages}")
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="psyserve"):
                answered: list[bool] = []
                for _ in range(60):  # fill what is left of the last pages, then every write is refused
                    try:
                        client.ask(strategy_id=sid)
                        answered.append(True)
                    except pc.ResourceExhaustedError as exc:
                        assert "disk is full" in exc.message
                        answered.append(False)
                first_refused = answered.index(False)
                assert not any(answered[first_refused:]) and len(answered) - first_refused >= 10
                full_logs = [r for r in caplog.records if "journal full" in r.getMessage()]
                assert len(full_logs) == 1, [r.getMessage() for r in caplog.records]
                _pragma(server, "PRAGMA max_page_count=1073741823")
                trial = client.ask().trials[0]
                assert client.tell(trial_id=trial.trial_id, outcome=0).trials_recorded == 1
                assert any("writable again" in r.getMessage() for r in caplog.records)
            completed = client.list_trials(state="completed")
            assert [t.trial_id for t in completed][:3] == [t.trial_id for t in told]
            assert len(completed) == 4
    finally:
        server.stop()
