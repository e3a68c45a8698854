"""A parameter sweep pulled by many workers: indices handed out per second, Ask tail latency, journal growth.

A `psyserve serve --no-models` subprocess on 127.0.0.1 holds one sweep of 10,000 indices (a
10 x 10 x 10 grid x 10 runs). 32 worker clients (asyncio clients with their own channels, spread
over 4 worker processes) each loop: Ask one index with a 60 s lease, do nothing, Tell one metric
(optionally with a learning curve of --series points). Every Ask and Tell is answered only after
its journal commit (WAL, synchronous=FULL), so the rate is durable hand-outs. Reported: results/s
over the whole sweep, Ask latency percentiles, and the journal's growth per result (event payload
bytes, and the SQLite file after a checkpoint).
Usage: python benchmarks/sweep.py [--workers 32] [--processes 4] [--runs 10] [--series 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time

import psyserve_client as pc
from _harness import percentile, server_process

GRID = {"task": "noop", "metaParameters": {"a": list(range(10)), "b": [0.1 * i for i in range(10)], "c": [f"v{i}" for i in range(10)]}}


async def worker_process(address: str, sid: int, clients: int, series: int, start_at: float, deadline: float) -> dict[str, object]:
    """`clients` concurrent worker loops in this process, all starting at `start_at` (epoch seconds,
    after their channels are up); returns their Ask latencies, counts and the time the last ended."""
    latencies: list[float] = []
    results = 0
    ended = 0.0

    async def pull(client: pc.AsyncClient) -> None:
        nonlocal results
        while time.time() < deadline:
            t0 = time.perf_counter()
            ask = await client.ask(strategy_id=sid, ttl_seconds=60)
            latencies.append(time.perf_counter() - t0)
            if not ask.trials:
                if ask.is_finished:
                    return
                await asyncio.sleep(0.01)
                continue
            trial = ask.trials[0]
            metrics: dict[str, object] = {"score": float(trial.sweep_index or 0)}
            if series:
                metrics["curve"] = [float(k) for k in range(series)]
            await client.tell(trial_id=trial.trial_id, outcome=metrics, strategy_id=sid)
            results += 1

    async def loop() -> None:
        nonlocal ended
        async with pc.AsyncClient(address, timeout=60) as client:
            await client.wait_ready()
            await asyncio.sleep(max(0.0, start_at - time.time()))
            try:
                await pull(client)
            finally:
                ended = max(ended, time.time())

    await asyncio.gather(*(loop() for _ in range(clients)))
    return {"latencies": latencies, "results": results, "ended": ended}


def db_bytes(db: str) -> int:
    """The journal file's size after folding the WAL into it."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(os.path.getsize(p) for p in (db, db + "-wal") if os.path.exists(p))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--series", type=int, default=0, help="points of a learning curve told with each result")
    parser.add_argument("--time-limit", type=float, default=300.0, help="stop the workers after this many seconds")
    parser.add_argument("--worker", nargs=5, metavar=("ADDRESS", "SID", "CLIENTS", "START", "DEADLINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        address, sid, clients, start_at, deadline = args.worker
        out = asyncio.run(worker_process(address, int(sid), int(clients), args.series, float(start_at), float(deadline)))
        print(json.dumps(out))
        return

    with server_process("--no-models") as (address, db):
        with pc.Client(address, timeout=60) as client:
            summary = client.configure_sweep(GRID, runs=args.runs).summary
            assert summary.sweep is not None
            sid, total = summary.strategy_id, summary.sweep.total
        base_bytes = db_bytes(db)
        per_process = [args.workers // args.processes + (i < args.workers % args.processes) for i in range(args.processes)]
        start_at = time.time() + 8.0  # the worker processes import and connect first
        deadline = start_at + args.time_limit
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--series", str(args.series), "--worker", address, str(sid), str(n), str(start_at), str(deadline)],
                stdout=subprocess.PIPE,
            )
            for n in per_process
            if n
        ]
        outs = [json.loads(p.communicate()[0]) for p in procs]
        elapsed = max(float(o["ended"]) for o in outs) - start_at
        with pc.Client(address, timeout=60) as client:
            sweep = client.info(sid).summary.sweep
            missing = client.list_missing(strategy_id=sid).indices
        assert sweep is not None
        results = sum(int(o["results"]) for o in outs)
        latencies = [x for o in outs for x in o["latencies"]]
        grown = db_bytes(db) - base_bytes
        with sqlite3.connect(db) as conn:
            payload = dict(conn.execute("SELECT kind, AVG(LENGTH(payload)) FROM events WHERE kind IN ('ask', 'tell') GROUP BY kind").fetchall())

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) at the end")
    print(f"sweep: {total} indices ({summary.sweep.permutations} permutations x {args.runs} runs), {args.workers} workers in {len(procs)} processes, series {args.series} points")
    print(f"results: {results} told, sweep done {sweep.done}/{sweep.total}, missing {len(missing)}, leased {sweep.leased}")
    print(f"indices handed out and told: {results / elapsed:,.0f} per second ({elapsed:.1f} s)")
    print(
        "Ask latency: p50 {:.2f} ms, p90 {:.2f} ms, p99 {:.2f} ms, p99.9 {:.2f} ms, max {:.2f} ms ({} asks)".format(
            *(1000 * percentile(latencies, q) for q in (50, 90, 99, 99.9)), 1000 * max(latencies), len(latencies)
        )
    )
    print(
        f"journal growth: {grown / max(1, results):,.0f} bytes per result in the SQLite file "
        f"(payload JSON: ask {payload.get('ask', 0):.0f} B + tell {payload.get('tell', 0):.0f} B)"
    )


if __name__ == "__main__":
    main()
