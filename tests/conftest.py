"""Shared fixtures: a real psyserve server on a free loopback port, in a thread or a subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from psyserve.app import RunningServer, ServerOptions, start_server

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = Path(__file__).resolve().parent / "configs"
sys.path.insert(0, str(ROOT / "benchmarks"))  # simulated observers (benchmarks/observers.py) for model tests


class ServerThread:
    """A server running on its own event loop in a background thread (so blocking clients work)."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: RunningServer = self.call(start_server(options))
        self.address = f"127.0.0.1:{self.running.port}"
        models = self.running.service.models
        if models is not None:  # tests that time model asks start with warm workers
            self.call(models.pool.wait_ready())  # type: ignore[attr-defined]

    def call(self, coro: Any, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.running.stop(2.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "journal.db")


@pytest.fixture
def server(db_path: str) -> Iterator[ServerThread]:
    """A server without a model pool (fast to start): non-model strategies only."""
    srv = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=db_path, models=False))
    yield srv
    srv.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    db: str
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self, sig: int = signal.SIGKILL) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(30)


def spawn_server(db: str, log: Path, *extra: str, port: int | None = None, env: dict[str, str] | None = None) -> ServerProcess:
    """Start `python -m psyserve serve` as a subprocess (`env`: extra environment variables) and
    wait until it accepts RPCs."""
    port = port or free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "psyserve", "serve", "--host", "127.0.0.1", "--port", str(port), "--db", db, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 120
    import grpc

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                grpc.channel_ready_future(channel).result(timeout=0.5)
            return ServerProcess(proc, port, db, log)
        except grpc.FutureTimeoutError:
            continue
    proc.kill()
    raise RuntimeError("server did not start in time")


def run_async(coro: Any) -> Any:
    fut: Future[Any] = Future()
    fut.set_result(asyncio.run(coro))
    return fut.result()
