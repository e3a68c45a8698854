"""Benchmark plumbing: run a psyserve server as a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

# A 2-D Sobol strategy that never finishes: the RPC and journal benchmarks' workload.
SOBOL_CONFIG = """
[common]
parnames = [x, y]
outcome_types = [binary]
strategy_names = [sobol]
[x]
lower_bound = 0
upper_bound = 1
[y]
lower_bound = 0
upper_bound = 1
[sobol]
generator = SobolGenerator
min_asks = 1000000
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server_process(*extra: str, db: str | None = None, wrapper: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """Yield (address, db path) of a `psyserve serve` subprocess; SIGTERM it afterwards. `wrapper`:
    a script and its arguments run in place of `python` (it runs `-m psyserve serve ...` itself)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = db or str(Path(tmp) / "bench.db")
        port = free_port()
        log = open(Path(tmp) / "server.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, *(wrapper or []), "-m", "psyserve", "serve", "--port", str(port), "--db", db, "--log-level", "WARNING", *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("server failed to start: " + (Path(tmp) / "server.log").read_text()[-2000:])
            try:
                with grpc.insecure_channel(address) as channel:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                break
            except grpc.FutureTimeoutError:
                continue
        try:
            yield address, db
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def mean_se(values: list[float]) -> str:
    """``mean ± standard error`` (sample standard deviation / sqrt(n); nan for one value)."""
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{mean:.3f} ± {se:.3f}"


class WireClient:
    """AEPsych's JSON/TCP protocol, read until a whole JSON reply arrived (no 4 KiB limit)."""

    def __init__(self, port: int) -> None:
        # AEPsych serves the first connection it accepts and no other: this client connects once,
        # retrying until the server listens (no probe connection beforehand).
        deadline = time.monotonic() + 180
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=600)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.decoder = json.JSONDecoder()
        self.multi_point = True  # prediction queries with many x at once (psyserve does, AEPsych 0.8 does not)

    def call(self, kind: str, message: object) -> dict[str, object]:
        self.sock.sendall(json.dumps({"type": kind, "message": message}).encode())
        buf = ""
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk.decode()
            try:
                reply, _ = self.decoder.raw_decode(buf)
            except json.JSONDecodeError:
                continue
            if isinstance(reply, dict) and "server_error" in reply:
                raise RuntimeError(f"{kind}: {reply['server_error']}")
            return reply  # type: ignore[no-any-return]
        raise TimeoutError(kind)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.call("exit", {})
        self.sock.close()
