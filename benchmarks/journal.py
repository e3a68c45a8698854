"""Durable tells per second with 1 and 32 concurrent clients, and the journal's group commit.

1. End to end: a `psyserve serve --no-models` subprocess on 127.0.0.1; each asyncio client has its
   own strategy, asks a batch of trials up front (one Ask), then the tells are timed. A tell is
   answered only after its journal commit (WAL, synchronous=FULL), so tells/s is durable tells/s.
2. In process: the Journal alone, N tasks each appending one tell-sized event at a time; reports
   appends/s and events per commit (how many appends shared one fsync).
Usage: python benchmarks/journal.py [--clients 1,32] [--tells 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import psyserve_client as pc
from _harness import SOBOL_CONFIG as CONFIG
from _harness import server_process
from psyserve.journal import Event, Journal


async def durable_tells(address: str, clients: int, tells_per_client: int) -> float:
    """Tells/s over `clients` concurrent AsyncClients, each on its own strategy."""
    ready = asyncio.Event()

    async def run(index: int, asked: asyncio.Future[None]) -> None:
        async with pc.AsyncClient(address, timeout=120) as client:
            try:
                await client.configure(config_str=CONFIG, config_name=f"journal-bench-{clients}-{index}-{time.time_ns()}")
                trial_ids: list[int] = []
                while len(trial_ids) < tells_per_client:  # at most 1,000 points per Ask
                    batch = min(1000, tells_per_client - len(trial_ids))
                    trial_ids += [t.trial_id for t in (await client.ask(num_points=batch)).trials]
                for trial_id in trial_ids[:5]:  # warm the connection
                    await client.tell(trial_id=trial_id, outcome=1)
            except BaseException as exc:
                asked.set_exception(exc)
                raise
            asked.set_result(None)
            await ready.wait()
            for i, trial_id in enumerate(trial_ids[5:]):
                await client.tell(trial_id=trial_id, outcome=i % 2)

    loop = asyncio.get_running_loop()
    asked = [loop.create_future() for _ in range(clients)]
    tasks = [asyncio.create_task(run(i, f)) for i, f in enumerate(asked)]
    await asyncio.gather(*asked)
    t0 = time.perf_counter()
    ready.set()
    await asyncio.gather(*tasks)
    return clients * (tells_per_client - 5) / (time.perf_counter() - t0)


async def journal_group_commit(appenders: int, appends_each: int) -> dict[str, float]:
    """The Journal alone: appends/s and events per commit with `appenders` concurrent writers."""
    with tempfile.TemporaryDirectory() as tmp:
        journal = await Journal.open(Path(tmp) / "bench.db")
        payload = {"outcomes": [{"name": "outcome", "value": 1.0}], "model_data": True, "metadata": {"rt": "0.52"}}

        async def append(writer: int) -> None:
            for i in range(appends_each):
                await journal.append([Event(writer + 1, "tell", payload, trial_id=i + 1)])

        t0 = time.perf_counter()
        await asyncio.gather(*(append(w) for w in range(appenders)))
        elapsed = time.perf_counter() - t0
        stats = {
            "appends_per_s": appenders * appends_each / elapsed,
            "events_per_commit": journal.events_written / max(1, journal.commits),
            "commits": journal.commits,
        }
        await journal.close()
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,32", help="comma-separated client counts (default 1,32)")
    parser.add_argument("--tells", type=int, default=6000, help="tells per run, split over the clients (default 6000)")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]

    print("== psyserve journal benchmark (127.0.0.1, --no-models, WAL synchronous=FULL, one fsync per commit)")
    with server_process("--no-models") as (address, _db):
        for clients in counts:
            each = max(50, args.tells // clients) + 5
            rate = asyncio.run(durable_tells(address, clients, each))
            note = "   (target >= 2000)" if clients >= 32 else ""
            print(f"gRPC Tell, {clients:3d} client(s):      {rate:8.0f} durable tells/s{note}")
    for appenders in counts:
        stats = asyncio.run(journal_group_commit(appenders, max(200, args.tells // appenders)))
        print(
            f"Journal.append, {appenders:3d} writer(s): {stats['appends_per_s']:8.0f} appends/s, "
            f"{stats['events_per_commit']:5.1f} events per commit ({stats['commits']:.0f} commits)"
        )


if __name__ == "__main__":
    main()
