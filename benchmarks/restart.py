"""Restart time on a 1,000-trial journal: from starting the server process to its first answered ListStrategies.

Builds the database with a `psyserve serve --no-models` subprocess (several strategies, some
trials pending, abandoned or told without an ask), stops it, then starts a server on the same
database several times and times each start until a ListStrategies reply arrives. Also prints
the parts: interpreter + imports, and the journal replay alone (Journal.open + recover) in process.
Usage: python benchmarks/restart.py [--trials 1000] [--repeats 5] [--with-models]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

import psyserve_client as pc
from _harness import free_port, server_process
from psyserve.journal import Journal
from psyserve.service import ExperimentService
from psyserve_client._proto.psyserve.v1 import messages_pb2 as pb
from psyserve_client._proto.psyserve.v1 import service_pb2_grpc

SOBOL_MANUAL = """
[common]
parnames = [contrast, frequency, shape]
outcome_types = [binary]
strategy_names = [init, sweep]
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
min_asks = 40
[sweep]
generator = ManualGenerator
points = [[0.5, 2, circle], [0.25, 4, square], [0.125, 8, gabor]]
"""
THRESHOLD = """
[common]
parnames = [c, a]
outcome_types = [binary]
strategy_names = [init, opt]
target = 0.75
[c]
lower_bound = -1
upper_bound = 1
[a]
lower_bound = -1
upper_bound = 1
[init]
generator = SobolGenerator
min_asks = 10
[opt]
generator = OptimizeAcqfGenerator
model = GPClassificationModel
acqf = MCLevelSetEstimation
min_asks = 1000
"""


async def build(address: str, trials: int, strategies: int) -> None:
    """`trials` trials over `strategies` strategies (the last one model-based, its data told by stimulus)."""
    each = trials // strategies

    async def sobol_manual(index: int) -> None:
        async with pc.AsyncClient(address, timeout=60) as client:
            await client.configure(config_str=SOBOL_MANUAL, config_name=f"s{index}", metadata={"participant_id": f"P{index:02d}"})
            for i in range(each):
                trial = (await client.ask()).trials[0]
                if i % 25 == 24:
                    await client.abandon_trial(trial.trial_id, reason="skipped")
                elif i < each - 2:
                    await client.tell(trial_id=trial.trial_id, outcome=i % 2, rt=0.4 + i / 1000)
                # the last two stay pending

    async def threshold() -> None:
        async with pc.AsyncClient(address, timeout=60) as client:
            await client.configure(config_str=THRESHOLD, config_name="threshold")
            for trial in (await client.ask(num_points=10)).trials:
                await client.tell(trial_id=trial.trial_id, outcome=int(float(trial.params["c"]) > 0))
            for i in range(trials - each * (strategies - 1) - 10):
                c = -1 + 2 * ((i * 7919) % 1000) / 999
                await client.tell(config={"c": c, "a": 0.5}, outcome=int(c > 0))

    await asyncio.gather(*(sobol_manual(i) for i in range(strategies - 1)), threshold())


def time_restart(db: str, extra: list[str]) -> float:
    """Seconds from Popen to the first answered ListStrategies (wait_for_ready, 10 ms reconnect backoff)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    options = [
        ("grpc.initial_reconnect_backoff_ms", 10),
        ("grpc.min_reconnect_backoff_ms", 10),
        ("grpc.max_reconnect_backoff_ms", 20),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "psyserve", "serve", "--port", str(port), "--db", db, "--log-level", "WARNING", *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            with grpc.insecure_channel(address, options=options) as channel:
                stub = service_pb2_grpc.ExperimentServiceStub(channel)
                stub.ListStrategies(pb.ListStrategiesRequest(), timeout=120, wait_for_ready=True)
            elapsed = time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return elapsed


def import_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import psyserve.cli"], check=True)
    return time.perf_counter() - t0


async def replay_seconds(db: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    journal = await Journal.open(db)
    service = ExperimentService(journal, None)
    events = await service.recover(expire_leases=False, load_all=True)  # the full replay (a start reads stored summaries instead)
    elapsed = time.perf_counter() - t0
    trials = sum(len(s.trials) for s in service.strategies())
    await service.close()
    return elapsed, events, trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--strategies", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--with-models", action="store_true", help="also time restarts that start the model pool")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "restart.db")
        t0 = time.perf_counter()
        with server_process("--no-models", db=db) as (address, _):
            asyncio.run(build(address, args.trials, args.strategies))
        build_seconds = time.perf_counter() - t0
        replay, events, trials = asyncio.run(replay_seconds(db))
        size = Path(db).stat().st_size + sum(p.stat().st_size for p in Path(tmp).glob("restart.db-*"))
        runs = {"--no-models": [time_restart(db, ["--no-models"]) for _ in range(args.repeats)]}
        if args.with_models:
            runs["with model pool"] = [time_restart(db, []) for _ in range(max(1, args.repeats // 2))]
        imports = min(import_seconds() for _ in range(3))

    print(
        f"== psyserve restart benchmark ({trials} trials, {events} journal events, {size / 1e6:.1f} MB; built in {build_seconds:.1f} s)"
    )
    print(f"journal replay in process (Journal.open + recover): {replay * 1000:7.0f} ms")
    print(f"python start + import psyserve.cli:                  {imports * 1000:7.0f} ms")
    for label, times in runs.items():
        print(
            f"restart to first ListStrategies reply, {label}: median {statistics.median(times):.2f} s, "
            f"min {min(times):.2f} s, max {max(times):.2f} s over {len(times)} starts   (target < 2 s)"
        )


if __name__ == "__main__":
    main()
