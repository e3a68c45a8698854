"""Sobol ask+tell throughput next to the floor (health Check on the same server and client).

Prints per-call figures and ratios: one sequential client, 8 concurrent clients on their own
strategies, and durable tells per second. Server is a subprocess on 127.0.0.1; loops are bounded.
Usage: python benchmarks/rpc.py [--pairs 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import psyserve_client as pc
from _harness import SOBOL_CONFIG as CONFIG
from _harness import server_process


def sequential(address: str, pairs: int) -> dict[str, float]:
    with pc.Client(address, timeout=30) as client:
        health = health_pb2_grpc.HealthStub(client._channel)
        check = health_pb2.HealthCheckRequest()
        client.configure(config_str=CONFIG)
        for _ in range(50):  # warm up
            health.Check(check)
            client.tell(trial_id=client.ask().trials[0].trial_id, outcome=1)
        t0 = time.perf_counter()
        for _ in range(2 * pairs):
            health.Check(check)
        floor = (time.perf_counter() - t0) / (2 * pairs)
        t0 = time.perf_counter()
        for i in range(pairs):
            trial = client.ask().trials[0]
            client.tell(trial_id=trial.trial_id, outcome=i % 2)
        pair = (time.perf_counter() - t0) / pairs
        asked = [t.trial_id for t in client.ask(num_points=pairs).trials]
        t0 = time.perf_counter()
        for i, trial_id in enumerate(asked):
            client.tell(trial_id=trial_id, outcome=i % 2)
        tell = (time.perf_counter() - t0) / len(asked)
    return {"floor_s": floor, "pair_s": pair, "tell_s": tell}


async def concurrent(address: str, clients: int, pairs_each: int) -> dict[str, float]:
    async def floor_worker(n: int) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for _ in range(n):
                await stub.Check(health_pb2.HealthCheckRequest())

    async def pair_worker(index: int) -> None:
        async with pc.AsyncClient(address, timeout=60) as client:
            await client.configure(config_str=CONFIG, config_name=f"bench-{index}-{time.time_ns()}")
            await ready.wait()
            for i in range(pairs_each):
                trial = (await client.ask()).trials[0]
                await client.tell(trial_id=trial.trial_id, outcome=i % 2)

    await asyncio.gather(*(floor_worker(20) for _ in range(clients)))
    t0 = time.perf_counter()
    await asyncio.gather(*(floor_worker(2 * pairs_each) for _ in range(clients)))
    floor_rate = clients * 2 * pairs_each / (time.perf_counter() - t0)
    ready = asyncio.Event()
    tasks = [asyncio.create_task(pair_worker(i)) for i in range(clients)]
    await asyncio.sleep(1.0)
    t0 = time.perf_counter()
    ready.set()
    await asyncio.gather(*tasks)
    pair_rate = clients * pairs_each / (time.perf_counter() - t0)
    return {"floor_calls_per_s": floor_rate, "pairs_per_s": pair_rate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=1000)
    args = parser.parse_args()
    with server_process("--no-models") as (address, _db):
        seq = sequential(address, args.pairs)
        conc = asyncio.run(concurrent(address, 8, max(50, args.pairs // 4)))
    print("== psyserve RPC benchmark (server subprocess on 127.0.0.1, --no-models, WAL synchronous=FULL)")
    print(f"one client   floor (health Check): {seq['floor_s'] * 1e6:8.0f} us/call  ({1 / seq['floor_s']:6.0f} calls/s)")
    print(f"one client   Sobol ask+tell pair:  {seq['pair_s'] * 1e6:8.0f} us/pair  ({1 / seq['pair_s']:6.0f} pairs/s)")
    print(f"one client   pair / (2 x floor):   {seq['pair_s'] / (2 * seq['floor_s']):8.2f}x   (target <= 2.5x)")
    print(f"one client   durable tells:        {1 / seq['tell_s']:8.0f} tells/s ({seq['tell_s'] * 1e6:.0f} us each)")
    print(f"8 clients    floor (health Check): {conc['floor_calls_per_s']:8.0f} calls/s")
    print(f"8 clients    Sobol ask+tell pairs: {conc['pairs_per_s']:8.0f} pairs/s  (target >= 800)")
    print(f"8 clients    pairs/s vs floor/2:   {conc['pairs_per_s'] / (conc['floor_calls_per_s'] / 2):8.2f}")


if __name__ == "__main__":
    main()
