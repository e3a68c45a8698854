"""Benchmark plumbing: run a psyserve server as a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
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
