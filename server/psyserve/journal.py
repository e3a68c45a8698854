"""The SQLite journal: an append-only log of strategy events, written by one task with group commit.

Owns the schema, durability settings and the writer task; knows nothing of strategies' rules,
models or transports. `append` returns only after the events are committed (WAL, synchronous=FULL).
Beside the events it keeps one summary row per evicted strategy (`snapshots`): a cache for listing
strategies without replaying them, never a source of truth (a row is trusted only while its
`last_seq` is still the strategy's last event), and one model state per strategy (`model_states`):
the opaque bytes the model engine hands in with a model ask, written in the same transaction as
that ask's events, which a rebuilt strategy's fits continue from (trusted only while its `trial_id`
is still that of the strategy's last model ask).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
EVENT_KINDS = ("configure", "ask", "tell", "finish_phase", "abandon", "sweep_runs")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    strategy_id  INTEGER NOT NULL,
    kind         TEXT    NOT NULL CHECK (kind IN ({", ".join(repr(k) for k in EVENT_KINDS)})),
    trial_id     INTEGER,
    created_at   REAL    NOT NULL,
    payload      TEXT    NOT NULL CHECK (json_valid(payload))
);
CREATE UNIQUE INDEX IF NOT EXISTS events_one_configure ON events (strategy_id) WHERE kind = 'configure';
CREATE UNIQUE INDEX IF NOT EXISTS events_one_per_trial ON events (strategy_id, trial_id, kind)
    WHERE trial_id IS NOT NULL AND kind IN ('ask', 'tell', 'abandon');
CREATE INDEX IF NOT EXISTS events_by_strategy ON events (strategy_id, seq);
CREATE TABLE IF NOT EXISTS snapshots (
    strategy_id  INTEGER PRIMARY KEY,
    last_seq     INTEGER NOT NULL,
    created_at   REAL    NOT NULL,
    summary      TEXT    NOT NULL CHECK (json_valid(summary))
);
CREATE TABLE IF NOT EXISTS model_states (
    strategy_id  INTEGER PRIMARY KEY,
    trial_id     INTEGER NOT NULL,
    created_at   REAL    NOT NULL,
    state        BLOB    NOT NULL
);
"""


async def _migrate_kinds(db: aiosqlite.Connection) -> None:
    """An events table whose CHECK lists fewer kinds than EVENT_KINDS (a journal written by an
    older server) is rebuilt with the current CHECK, rows and seq values kept, in one transaction."""
    async with db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'") as cursor:
        row = await cursor.fetchone()
    if row is None or all(f"'{kind}'" in row[0] for kind in EVENT_KINDS):
        return
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute("ALTER TABLE events RENAME TO events_old")
        for index in ("events_one_configure", "events_one_per_trial", "events_by_strategy"):
            await db.execute(f"DROP INDEX IF EXISTS {index}")
        for statement in _SCHEMA.strip().split(";"):
            if statement.strip():
                await db.execute(statement)
        await db.execute(
            "INSERT INTO events (seq, strategy_id, kind, trial_id, created_at, payload) "
            "SELECT seq, strategy_id, kind, trial_id, created_at, payload FROM events_old ORDER BY seq"
        )
        await db.execute("DROP TABLE events_old")
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise
    log.info("journal migrated: event kinds now %s", ", ".join(EVENT_KINDS))


class JournalError(RuntimeError):
    """The journal could not record an event (disk full, constraint violated, closed)."""


class JournalFull(JournalError):
    """The journal could not record an event because its disk (or database size limit) is full."""


def _is_full(exc: BaseException) -> bool:
    """SQLITE_FULL ("database or disk is full"), or an I/O error caused by ENOSPC."""
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    text = str(exc).lower()
    return "disk is full" in text or "no space left" in text


def write_failure(exc: BaseException) -> JournalError:
    """The JournalError a failed write is reported as (JournalFull when the disk is full)."""
    kind = JournalFull if _is_full(exc) else JournalError
    return kind(f"journal write failed: {exc}")


@dataclass(frozen=True)
class StrategyIndexRow:
    """What the journal knows of one strategy without replaying it: its configure event's id, time,
    name and request id; its summary row (None when there is none, or when events were written after
    it, so it no longer describes the strategy); the seq of its last event."""

    strategy_id: int
    created_at: float
    name: str
    request_id: str
    summary: dict[str, Any] | None
    last_seq: int


@dataclass(frozen=True)
class _SnapshotWrite:
    """A strategy summary to store: written after every event queued before it, before any queued
    after it, with the strategy's last committed seq as its `last_seq`."""

    strategy_id: int
    summary: str


@dataclass(frozen=True)
class ModelStateWrite:
    """A strategy's model state (opaque bytes) to store with the events of the ask it was served
    with, in their transaction; `trial_id`: that ask's last trial."""

    strategy_id: int
    trial_id: int
    state: bytes


@dataclass(frozen=True)
class Event:
    strategy_id: int
    kind: str
    payload: dict[str, Any]
    trial_id: int | None = None
    created_at: float = field(default_factory=time.time)
    seq: int | None = None

    def row(self) -> tuple[int, str, int | None, float, str]:
        return (
            self.strategy_id,
            self.kind,
            self.trial_id,
            self.created_at,
            json.dumps(self.payload, separators=(",", ":"), allow_nan=False),
        )


def decode_rows(rows: Iterable[tuple[Any, ...]]) -> list[Event]:
    """Rows of Journal.load_rows as Events (payloads parsed)."""
    return [Event(strategy_id=r[1], kind=r[2], trial_id=r[3], created_at=r[4], payload=json.loads(r[5]), seq=r[0]) for r in rows]


_INSERT = "INSERT INTO events (strategy_id, kind, trial_id, created_at, payload) VALUES (?, ?, ?, ?, ?)"
_INSERT_STATE = "INSERT OR REPLACE INTO model_states (strategy_id, trial_id, created_at, state) VALUES (?, ?, ?, ?)"
_ROWS_PER_STATEMENT = 1000  # 5 parameters a row, well under SQLite's variable limit


class Journal:
    """Append-only event log in one SQLite file. Use `await Journal.open(path)`."""

    def __init__(self, path: str, db: aiosqlite.Connection) -> None:
        self.path = path
        self._db = db
        self._queue: asyncio.Queue[tuple[list[Event | ModelStateWrite] | _SnapshotWrite, asyncio.Future[None]] | None] = (
            asyncio.Queue()
        )
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0
        self.events_written = 0
        # Observer hook (metrics): called with (seconds, events) after each committed group.
        self.on_commit: Callable[[float, int], None] | None = None

    @classmethod
    async def open(cls, path: str | Path) -> Journal:
        path = str(path)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            async with db.execute("PRAGMA user_version") as cursor:
                row = await cursor.fetchone()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise JournalError(f"{path}: journal schema version {version} is newer than this server ({SCHEMA_VERSION})")
            await _migrate_kinds(db)
            await db.executescript(_SCHEMA)
            await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            await db.close()
            raise
        journal = cls(path, db)
        journal._writer = asyncio.create_task(journal._write_loop(), name="journal-writer")
        return journal

    async def load(self, strategy_id: int | None = None) -> list[Event]:
        """All events (of one strategy, if given) in the order they were committed."""
        return decode_rows(await self.load_rows(strategy_id))

    async def load_rows(self, strategy_id: int | None = None) -> list[tuple[Any, ...]]:
        """The rows of load(), payloads still JSON text (decode_rows decodes them, e.g. in a worker
        thread). One strategy's rows are read through the (strategy_id, seq) index."""
        query = "SELECT seq, strategy_id, kind, trial_id, created_at, payload FROM events"
        args: tuple[Any, ...] = ()
        if strategy_id is not None:
            query += " WHERE strategy_id = ?"
            args = (strategy_id,)
        async with self._db.execute(query + " ORDER BY seq", args) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]

    async def model_state(self, strategy_id: int) -> tuple[int, bytes] | None:
        """The strategy's stored model state: (the trial id of the ask it came with, its bytes)."""
        async with self._db.execute("SELECT trial_id, state FROM model_states WHERE strategy_id = ?", (strategy_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    async def strategy_index(self) -> list[StrategyIndexRow]:
        """Every strategy's index row, by id: one configure row each plus two index lookups, so the
        cost follows the number of strategies, not the number of events."""
        query = (
            "SELECT e.strategy_id, e.created_at, json_extract(e.payload, '$.name'), json_extract(e.payload, '$.request_id'), "
            "s.last_seq, s.summary, (SELECT MAX(m.seq) FROM events m WHERE m.strategy_id = e.strategy_id) "
            "FROM events e LEFT JOIN snapshots s ON s.strategy_id = e.strategy_id "
            "WHERE e.kind = 'configure' ORDER BY e.strategy_id"
        )
        async with self._db.execute(query) as cursor:
            rows = await cursor.fetchall()
        out = []
        for strategy_id, created_at, name, request_id, snapshot_seq, summary, last_seq in rows:
            current = summary is not None and snapshot_seq == last_seq
            out.append(
                StrategyIndexRow(
                    strategy_id=int(strategy_id),
                    created_at=float(created_at),
                    name=str(name or ""),
                    request_id=str(request_id or ""),
                    summary=json.loads(summary) if current else None,
                    last_seq=int(last_seq),
                )
            )
        return out

    async def write_snapshot(self, strategy_id: int, summary: dict[str, Any]) -> None:
        """Store a strategy's summary, stamped with the seq of its last event committed before this
        call (events queued later get larger seqs, which makes the row stale, as it should be)."""
        if self._writer is None or self._writer.done():
            raise JournalError("journal is closed")
        text = json.dumps(summary, separators=(",", ":"), allow_nan=False)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((_SnapshotWrite(strategy_id, text), done))
        await asyncio.shield(done)

    async def append(self, events: Iterable[Event], model_state: ModelStateWrite | None = None) -> None:
        """Write events (and the model state served with them) atomically; return once they are
        durable. Raises JournalError."""
        batch: list[Event | ModelStateWrite] = list(events)
        if not batch:
            return
        if model_state is not None:
            batch.append(model_state)
        if self._writer is None or self._writer.done():
            raise JournalError("journal is closed")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((batch, done))
        # Shielded: a cancelled caller must not make the writer lose track of the commit.
        await asyncio.shield(done)

    async def _write_loop(self) -> None:
        while True:
            item = await self._queue.get()
            if item is None:
                return
            group = [item]
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    await self._commit_in_order(group)
                    return
                group.append(nxt)
            await self._commit_in_order(group)

    async def _commit_in_order(
        self, group: list[tuple[list[Event | ModelStateWrite] | _SnapshotWrite, asyncio.Future[None]]]
    ) -> None:
        """Commit queued items in queue order: runs of event batches as one group commit, each
        snapshot after the events queued before it (its last_seq must not cover later ones)."""
        events: list[tuple[list[Event | ModelStateWrite], asyncio.Future[None]]] = []
        snapshots: list[tuple[_SnapshotWrite, asyncio.Future[None]]] = []
        for what, done in group:
            if isinstance(what, _SnapshotWrite):
                if events:
                    await self._commit(events)
                    events = []
                snapshots.append((what, done))
            else:
                if snapshots:
                    await self._store_snapshots(snapshots)
                    snapshots = []
                events.append((what, done))
        if events:
            await self._commit(events)
        if snapshots:
            await self._store_snapshots(snapshots)

    async def _store_snapshots(self, snapshots: list[tuple[_SnapshotWrite, asyncio.Future[None]]]) -> None:
        """Consecutive summaries in one transaction (one fsync for a shutdown's hundreds)."""
        now = time.time()
        try:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._db.executemany(
                    "INSERT OR REPLACE INTO snapshots (strategy_id, last_seq, created_at, summary) "
                    "SELECT ?, MAX(seq), ?, ? FROM events WHERE strategy_id = ?",
                    [(s.strategy_id, now, s.summary, s.strategy_id) for s, _ in snapshots],
                )
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, ValueError) as exc:
            for _, done in snapshots:
                if not done.done():
                    done.set_exception(write_failure(exc))
            return
        for _, done in snapshots:
            if not done.done():
                done.set_result(None)

    async def _commit(self, group: list[tuple[list[Event | ModelStateWrite], asyncio.Future[None]]]) -> None:
        """Commit a group in one transaction (one fsync); on failure, retry members one by one."""
        try:
            await self._write([e for events, _ in group for e in events])
            for _, done in group:
                if not done.done():
                    done.set_result(None)
            return
        except (sqlite3.Error, ValueError) as exc:
            if len(group) == 1:
                _, done = group[0]
                if not done.done():
                    done.set_exception(write_failure(exc))
                return
        for member in group:
            await self._commit([member])

    async def _write(self, items: list[Event | ModelStateWrite]) -> None:
        """Insert rows atomically. Small groups without model states are one multi-row INSERT, which
        SQLite commits as its own transaction in autocommit mode: one thread hop and one fsync per
        group; with model states, one explicit transaction (still one fsync)."""
        started = time.perf_counter()
        rows = [e.row() for e in items if isinstance(e, Event)]
        states = [(m.strategy_id, m.trial_id, time.time(), m.state) for m in items if isinstance(m, ModelStateWrite)]
        if states:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                    chunk = rows[start : start + _ROWS_PER_STATEMENT]
                    await self._db.execute(_INSERT + ", (?, ?, ?, ?, ?)" * (len(chunk) - 1), [v for row in chunk for v in row])
                await self._db.executemany(_INSERT_STATE, states)
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
        elif len(rows) <= _ROWS_PER_STATEMENT:
            statement = _INSERT + ", (?, ?, ?, ?, ?)" * (len(rows) - 1)
            await self._db.execute(statement, [v for row in rows for v in row])
        else:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._db.executemany(_INSERT, rows)
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
        self.commits += 1
        self.events_written += len(rows)
        if self.on_commit is not None:
            self.on_commit(time.perf_counter() - started, len(rows))

    async def close(self) -> None:
        """Flush every queued event, then close the database."""
        if self._writer is not None and not self._writer.done():
            self._queue.put_nowait(None)
            await self._writer
        await self._db.close()
