"""The HTTP port's cost: a Sobol ask+tell pair over Connect JSON (and binary) next to the same pair over
gRPC, measured in one run against one server, and 8 concurrent HTTP clients (pairs/s).

Named http_rpc.py, not http.py: a file called http.py in benchmarks/ would shadow the standard library's
`http` package for every script run from here (urllib, httpx and torch import it).
Server is a subprocess on 127.0.0.1 (--no-models); every loop is bounded.
Usage: python benchmarks/http_rpc.py [--pairs 1000] [--csharp PROGRAM.exe]

--csharp: the C# client's pair latency from mono, next to the Python client's. PROGRAM is a console
program built from clients/csharp that takes `BASE_URL PAIRS` arguments, runs PAIRS Sobol ask+tell pairs
against its own strategy (config from stdin) and prints one JSON line {"pair_s": seconds per pair}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import threading
import time
from typing import Any

import httpx

import psyserve_client as pc
from _harness import SOBOL_CONFIG as CONFIG
from _harness import free_port, server_process
from psyserve_client._proto.psyserve.v1 import messages_pb2 as pb

SERVICE = "/psyserve.v1.ExperimentService"
# httpx writes a request's headers and body separately; without TCP_NODELAY, Nagle holds the body
# until the server's delayed ACK (~40 ms on Linux). Every sensible HTTP client sets it; httpx needs telling.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class KeepAlive:
    """A lean HTTP/1.1 keep-alive client on one socket (what a C#/Unity or browser client costs, about):
    httpx spends more CPU per request than the server does, so it would measure itself, not the server."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def post(self, method: str, body: bytes, content_type: str = "application/json") -> bytes:
        head = f"POST {SERVICE}/{method} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        self.sock.sendall(head.encode() + body)
        status = self.file.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{method}: {status!r}")
        headers = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        if "content-length" in headers:
            return self.file.read(int(headers["content-length"]))
        chunks = []
        while (size := int(self.file.readline().split(b";")[0], 16)) > 0:
            chunks.append(self.file.read(size))
            self.file.readline()
        self.file.readline()
        return b"".join(chunks)

    def call(self, method: str, body: dict[str, Any]) -> Any:
        return json.loads(self.post(method, json.dumps(body).encode()))

    def pair(self, sid: str, outcome: int) -> None:
        trial = self.call("Ask", {"strategyId": sid})["trials"][0]
        self.call("Tell", {"strategyId": sid, "trialId": trial["trialId"], "outcomes": [{"value": outcome}]})

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class ConnectJson:
    """A Connect JSON client with httpx, as a Python user would write it: one keep-alive connection, plain dicts."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(base_url=base, timeout=30, transport=httpx.HTTPTransport(socket_options=NODELAY))

    def call(self, method: str, body: dict[str, Any]) -> Any:
        reply = self.http.post(f"{SERVICE}/{method}", content=json.dumps(body), headers={"content-type": "application/json"})
        reply.raise_for_status()
        return reply.json()

    def pair(self, sid: str, outcome: int) -> None:
        trial = self.call("Ask", {"strategyId": sid})["trials"][0]
        self.call("Tell", {"strategyId": sid, "trialId": trial["trialId"], "outcomes": [{"value": outcome}]})


class ConnectProto:
    """The same over Connect with binary protobuf bodies (the generated message classes)."""

    def __init__(self, base: str) -> None:
        self.http = httpx.Client(
            base_url=base,
            timeout=30,
            headers={"content-type": "application/proto"},
            transport=httpx.HTTPTransport(socket_options=NODELAY),
        )

    def pair(self, sid: int, outcome: int) -> None:
        reply = self.http.post(f"{SERVICE}/Ask", content=pb.AskRequest(strategy_id=sid).SerializeToString())
        trial = pb.AskResponse.FromString(reply.content).trials[0]
        tell = pb.TellRequest(strategy_id=sid, trial_id=trial.trial_id, outcomes=[pb.Outcome(value=outcome)])
        pb.TellResponse.FromString(self.http.post(f"{SERVICE}/Tell", content=tell.SerializeToString()).content)


def sequential(address: str, base: str, http_port: int, pairs: int, rounds: int = 5) -> dict[str, float]:
    """Seconds per pair for each path; rounds alternate between paths so drift hits them alike."""
    json_client, proto_client, lean = ConnectJson(base), ConnectProto(base), KeepAlive(http_port)
    with pc.Client(address, timeout=30) as grpc_client:
        grpc_client.configure(config_str=CONFIG)
        json_sid = json_client.call("Configure", {"configIni": CONFIG})["strategyId"]
        proto_sid = int(json_client.call("Configure", {"configIni": CONFIG})["strategyId"])
        lean_sid = lean.call("Configure", {"configIni": CONFIG})["strategyId"]

        def grpc_pair(outcome: int) -> None:
            grpc_client.tell(trial_id=grpc_client.ask().trials[0].trial_id, outcome=outcome)

        paths = {
            "grpc": grpc_pair,
            "connect_json": lambda o: lean.pair(lean_sid, o),
            "connect_json_httpx": lambda o: json_client.pair(json_sid, o),
            "connect_proto": lambda o: proto_client.pair(proto_sid, o),
        }
        totals = dict.fromkeys(paths, 0.0)
        for fn in paths.values():  # warm up
            for i in range(30):
                fn(i % 2)
        per_round = max(1, pairs // rounds)
        for _ in range(rounds):
            for name, fn in paths.items():
                t0 = time.perf_counter()
                for i in range(per_round):
                    fn(i % 2)
                totals[name] += time.perf_counter() - t0
    json_client.http.close()
    proto_client.http.close()
    lean.close()
    return {name: total / (per_round * rounds) for name, total in totals.items()}


def concurrent_http(http_port: int, clients: int, pairs_each: int) -> float:
    """Pairs per second of `clients` concurrent Connect JSON clients (threads of KeepAlive), each on its own
    strategy and connection."""
    start = threading.Barrier(clients + 1)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            client = KeepAlive(http_port)
            sid = client.call("Configure", {"configIni": CONFIG, "name": f"http-{index}-{time.time_ns()}"})["strategyId"]
            for i in range(10):  # warm up
                client.pair(sid, i % 2)
        except BaseException as exc:
            errors.append(exc)
            start.abort()
            raise
        start.wait()
        for i in range(pairs_each):
            client.pair(sid, i % 2)
        client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start.wait(timeout=120)
    t0 = time.perf_counter()
    for thread in threads:
        thread.join(timeout=600)
    if errors:
        raise errors[0]
    return clients * pairs_each / (time.perf_counter() - t0)


async def concurrent_grpc(address: str, clients: int, pairs_each: int) -> float:
    """The same load over gRPC (psyserve_client.AsyncClient), for comparison in the same run."""

    async def worker(index: int) -> None:
        async with pc.AsyncClient(address, timeout=60) as client:
            await client.configure(config_str=CONFIG, config_name=f"grpc-{index}-{time.time_ns()}")
            await ready.wait()
            for i in range(pairs_each):
                trial = (await client.ask()).trials[0]
                await client.tell(trial_id=trial.trial_id, outcome=i % 2)

    ready = asyncio.Event()
    tasks = [asyncio.create_task(worker(i)) for i in range(clients)]
    await asyncio.sleep(1.0)
    t0 = time.perf_counter()
    ready.set()
    await asyncio.gather(*tasks)
    return clients * pairs_each / (time.perf_counter() - t0)


def csharp_pair(program: str, base: str, pairs: int) -> float:
    """Seconds per pair reported by the C# benchmark program under mono (contract in the module docstring)."""
    done = subprocess.run(
        ["mono", program, base, str(pairs)], input=CONFIG, capture_output=True, text=True, timeout=600, check=True
    )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["pair_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=1000, help="pairs per path for the one-client figures")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--csharp", default=None, metavar="PROGRAM", help="also time the C# client (see above)")
    args = parser.parse_args()
    http_port = free_port()
    with server_process("--no-models", "--http-port", str(http_port)) as (address, _db):
        base = f"http://127.0.0.1:{http_port}"
        seq = sequential(address, base, http_port, args.pairs)
        each = max(50, args.pairs // 4)
        http_rate = concurrent_http(http_port, args.clients, each)
        grpc_rate = asyncio.run(concurrent_grpc(address, args.clients, each))
        cs = csharp_pair(args.csharp, base, args.pairs) if args.csharp else None
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print("== psyserve HTTP benchmark (server subprocess on 127.0.0.1, --no-models, WAL synchronous=FULL; one run)")
    print(f"machine load average (1/5/15 min): {load}")
    print(f"one client   gRPC Sobol ask+tell pair:          {seq['grpc'] * 1e6:8.0f} us/pair")
    print(f"one client   Connect JSON pair (keep-alive):    {seq['connect_json'] * 1e6:8.0f} us/pair")
    print(f"one client   Connect JSON pair (httpx):         {seq['connect_json_httpx'] * 1e6:8.0f} us/pair")
    print(f"one client   Connect binary pair (httpx):       {seq['connect_proto'] * 1e6:8.0f} us/pair")
    print(f"one client   Connect JSON / gRPC:               {seq['connect_json'] / seq['grpc']:8.2f}x   (target <= 2x)")
    print(f"one client   Connect JSON via httpx / gRPC:     {seq['connect_json_httpx'] / seq['grpc']:8.2f}x")
    print(f"one client   Connect binary via httpx / gRPC:   {seq['connect_proto'] / seq['grpc']:8.2f}x")
    print(f"{args.clients} clients    Connect JSON pairs (keep-alive): {http_rate:8.0f} pairs/s")
    print(f"{args.clients} clients    gRPC pairs (same run):           {grpc_rate:8.0f} pairs/s")
    if cs is not None:
        print(f"one client   C# (mono) Connect JSON pair:       {cs * 1e6:8.0f} us/pair")
        print(f"one client   C# pair / Python gRPC client:      {cs / seq['grpc']:8.2f}x")
        print(f"one client   C# pair / Python Connect JSON:     {cs / seq['connect_json_httpx']:8.2f}x")


if __name__ == "__main__":
    main()
