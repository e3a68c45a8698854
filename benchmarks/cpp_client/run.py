"""C++ client vs Python client on the same server, the same hour: Sobol ask+tell pair latency
(ratio), and what the C++ client's ask_async/tell_async cost the calling thread per call (µs).

Builds benchmarks/cpp_client (Release, against clients/cpp) into benchmarks/cpp_client/build, starts
`psyserve serve --no-models` on a free loopback port, and alternates rounds of the two clients
(each round a fresh Sobol strategy) so that machine noise hits both alike.
Usage: python benchmarks/cpp_client/run.py [--pairs 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import psyserve_client as pc  # noqa: E402
from _harness import SOBOL_CONFIG, server_process  # noqa: E402


def build() -> Path:
    out = HERE / "build"
    subprocess.run(["cmake", "-S", str(HERE), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(out), "-j2"], check=True, capture_output=True)
    return out / "cpp_client_bench"


def python_pairs(address: str, pairs: int) -> float:
    """Mean seconds per blocking Sobol ask+tell pair with psyserve_client.Client."""
    with pc.Client(address, timeout=30) as client:
        client.configure(config_str=SOBOL_CONFIG)
        for i in range(50):  # warm up
            client.tell(trial_id=client.ask().trials[0].trial_id, outcome=i % 2)
        t0 = time.perf_counter()
        for i in range(pairs):
            client.tell(trial_id=client.ask().trials[0].trial_id, outcome=i % 2)
        return (time.perf_counter() - t0) / pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    binary = build()
    cpp: list[dict[str, float]] = []
    py: list[float] = []
    with server_process("--no-models") as (address, _db):
        for _ in range(args.rounds):
            run = subprocess.run([str(binary), address, str(args.pairs)], check=True, capture_output=True, text=True, timeout=600)
            cpp.append(json.loads(run.stdout))
            py.append(python_pairs(address, args.pairs))
    cpp_pair = statistics.median(r["pair_us"] for r in cpp)
    py_pair = statistics.median(py) * 1e6
    print(f"Sobol ask+tell pair, {args.pairs} pairs x {args.rounds} rounds (median of rounds):")
    print(f"  C++ client     {cpp_pair:8.0f} µs/pair")
    print(f"  Python client  {py_pair:8.0f} µs/pair")
    print(f"  ratio C++/Python: {cpp_pair / py_pair:.2f}")
    print("C++ ask_async/tell_async, time on the calling thread per call:")
    print(f"  mean {statistics.median(r['async_call_us_mean'] for r in cpp):.1f} µs, "
          f"p50 {statistics.median(r['async_call_us_p50'] for r in cpp):.1f} µs, "
          f"p99 {statistics.median(r['async_call_us_p99'] for r in cpp):.1f} µs "
          f"(the tell's whole round trip: p50 {statistics.median(r['async_tell_round_trip_us_p50'] for r in cpp):.0f} µs)")


if __name__ == "__main__":
    main()
