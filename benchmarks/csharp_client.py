"""The C# client's Sobol ask+tell pair latency (mono, HTTP/Connect JSON) next to the Python client's (gRPC).

One server (`--no-models --http-port`), three one-client loops on their own Sobol strategies, in
alternating rounds so all three see the same machine: the C# client under mono over HTTP; the
same HTTP calls from Python on a raw keep-alive socket (no client library: the transport's cost
without the C# client's); psyserve_client over gRPC. Prints µs per pair and the ratios.
Builds the C# library and benchmarks/csharp/PairBench.cs with mcs first (needs mono-mcs, mono-devel);
`--build DIR` only builds them there, e.g. for `benchmarks/http_rpc.py --csharp DIR/PairBench.exe`.
Usage: python benchmarks/csharp_client.py [--pairs 150] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psyserve_client as pc
from _harness import SOBOL_CONFIG as CONFIG
from _harness import free_port, server_process

ROOT = Path(__file__).resolve().parent.parent


def build(out: Path) -> Path:
    if not (shutil.which("mcs") and shutil.which("mono")):
        raise SystemExit("needs Mono: apt-get install mono-mcs mono-devel")
    subprocess.run(["bash", str(ROOT / "clients" / "csharp" / "build.sh"), str(out)], check=True, capture_output=True)
    exe = out / "PairBench.exe"
    subprocess.run(
        ["mcs", "-langversion:7.2", "-optimize+", f"-r:{out / 'Psyserve.Client.dll'}", "-r:System.Net.Http.dll",
         f"-out:{exe}", str(ROOT / "benchmarks" / "csharp" / "PairBench.cs")],
        check=True,
        capture_output=True,
    )
    return exe


def csharp_pairs(exe: Path, url: str, pairs: int) -> float:
    env = {**os.environ, "MONO_PATH": str(exe.parent)}
    result = subprocess.run(
        ["mono", str(exe), url, str(pairs)], input=CONFIG, capture_output=True, text=True, timeout=600, env=env
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return float(json.loads(result.stdout.strip().splitlines()[-1])["pair_s"]) * 1e6


class RawHttp:
    """A keep-alive HTTP/1.1 POST client on a plain socket (stdlib http.client would be shadowed by
    benchmarks/http.py when this folder is sys.path[0]); Content-Length and chunked replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            self.buf += chunk
        head, self.buf = self.buf.split(sep, 1)
        return head

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RuntimeError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        head += f"Connect-Protocol-Version: 1\r\nContent-Length: {len(body)}\r\n\r\n"
        self.sock.sendall(head.encode() + body)
        lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        if "content-length" in headers:
            return status, self._take(int(headers["content-length"]))
        data = b""
        while True:  # chunked
            size = int(self._until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._until(b"\r\n")
                return status, data
            data += self._take(size)
            self._take(2)


def python_http_pairs(port: int, pairs: int) -> float:
    conn = RawHttp(port)

    def call(method: str, body: dict[str, object]) -> dict[str, object]:
        status, data = conn.post(f"/psyserve.v1.ExperimentService/{method}", json.dumps(body).encode())
        if status != 200:
            raise RuntimeError(f"{method}: HTTP {status}: {data[:300]!r}")
        return json.loads(data)  # type: ignore[no-any-return]

    sid = call("Configure", {"configIni": CONFIG})["strategyId"]

    def pair() -> None:
        trial = call("Ask", {"strategyId": sid})["trials"][0]  # type: ignore[index]
        call("Tell", {"strategyId": sid, "trialId": trial["trialId"], "outcomes": [{"value": 1}]})

    for _ in range(50):
        pair()
    t0 = time.perf_counter()
    for _ in range(pairs):
        pair()
    elapsed = time.perf_counter() - t0
    conn.sock.close()
    return elapsed / pairs * 1e6


def python_grpc_pairs(address: str, pairs: int) -> float:
    with pc.Client(address, timeout=30) as client:
        client.configure(config_str=CONFIG)
        for _ in range(50):
            client.tell(trial_id=client.ask().trials[0].trial_id, outcome=1)
        t0 = time.perf_counter()
        for _ in range(pairs):
            client.tell(trial_id=client.ask().trials[0].trial_id, outcome=1)
        return (time.perf_counter() - t0) / pairs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=150, help="timed pairs per loop (after 50 warm-up pairs)")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds; medians (and the best round) are reported")
    parser.add_argument("--build", type=Path, default=None, metavar="DIR", help="only build PairBench.exe into DIR and print its path")
    args = parser.parse_args()
    if args.build is not None:
        args.build.mkdir(parents=True, exist_ok=True)
        print(build(args.build.resolve()))
        return
    with tempfile.TemporaryDirectory() as tmp:
        exe = build(Path(tmp))
        http_port = free_port()
        results: dict[str, list[float]] = {"csharp_http": [], "python_http": [], "python_grpc": []}
        with server_process("--no-models", "--http-port", str(http_port)) as (address, _db):
            url = f"http://127.0.0.1:{http_port}"
            for _ in range(args.rounds):
                results["csharp_http"].append(csharp_pairs(exe, url, args.pairs))
                results["python_http"].append(python_http_pairs(http_port, args.pairs))
                results["python_grpc"].append(python_grpc_pairs(address, args.pairs))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"Sobol ask+tell pair, one client, {args.pairs} pairs x {args.rounds} rounds (median), server --no-models")
    print(f"  C# client (mono), HTTP Connect JSON : {med['csharp_http']:8.0f} us/pair")
    print(f"  Python raw socket, HTTP Connect JSON : {med['python_http']:8.0f} us/pair")
    print(f"  Python psyserve_client, gRPC        : {med['python_grpc']:8.0f} us/pair")
    print(f"  C# over HTTP / Python over gRPC     : {med['csharp_http'] / med['python_grpc']:.2f}x")
    print(f"  C# over HTTP / Python over HTTP     : {med['csharp_http'] / med['python_http']:.2f}x")
    best = {k: min(v) for k, v in results.items()}
    print(
        f"  best round: C# {best['csharp_http']:.0f}, Python HTTP {best['python_http']:.0f}, Python gRPC {best['python_grpc']:.0f}"
        f" us/pair; C#/gRPC {best['csharp_http'] / best['python_grpc']:.2f}x, C#/Python HTTP {best['csharp_http'] / best['python_http']:.2f}x"
    )
    print("  all rounds:", json.dumps({k: [round(x) for x in v] for k, v in results.items()}))
    print("  load average (1, 5, 15 min): " + " ".join(f"{x:.1f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
