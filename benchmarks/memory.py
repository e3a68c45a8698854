"""Memory and restart time as history grows: a server on a journal of many finished strategies.

Builds a journal of `--strategies` finished strategies with `--trials` trials each through the
service's own write path, in process: ExperimentService.configure, one Ask of `--trials` points
(Sobol) and one tell_many of `--trials` outcomes per strategy, 8 strategies at a time. These are
the events, group commits and SQLite rows a server writes for the same requests (2 events per
trial); only the network hops are skipped, which keeps building 1,000,000 trials to minutes.

Then servers start on that journal as `psyserve serve --no-models` subprocesses and each is timed
from process start to its first answered ListStrategies (and to its first answered Resume, which
needs no list of everything), with its RSS (VmRSS) and peak RSS (VmHWM) from /proc once it answers:
- before: the checkout given by --old-server (PYTHONPATH=<checkout>/server, e.g. main without
  this change) on the journal with no strategy summaries (as such a server leaves it);
- after, first start on that same journal: the one-time full replay of an upgrade (strategies
  are rebuilt one at a time and leave memory again as the bound demands), closed with SIGTERM,
  which stores every strategy's summary;
- after, next start: only the index and the summaries are read.
On the last server, the first request that needs an evicted strategy's trials (GetConfig, small
reply; ListTrials, 1,000 trials) is timed against the same request once it is resident.

Usage: python benchmarks/memory.py [--strategies 1000] [--trials 1000] [--old-server /path/to/main/server]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from _harness import free_port
from psyserve.journal import Journal
from psyserve.params import OutcomeValue
from psyserve.service import ExperimentService, Limits, TellItem
from psyserve_client._proto.psyserve.v1 import messages_pb2 as pb
from psyserve_client._proto.psyserve.v1 import service_pb2_grpc

CONFIG = """
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
min_asks = {trials}
"""


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def build(db: str, strategies: int, trials: int, max_seconds: float) -> tuple[int, float]:
    """Finished strategies through ExperimentService (bounded in count and time); returns how many."""
    journal = await Journal.open(db)
    service = ExperimentService(journal, None, Limits(max_resident_strategies=16, max_points_per_ask=max(trials, 1000)))
    await service.recover()
    started = time.monotonic()
    built = 0

    async def one(index: int) -> None:
        nonlocal built
        sid = (await service.configure(CONFIG.format(trials=trials), name=f"P{index:04d}", metadata={"participant": f"P{index:04d}"})).strategy.strategy_id
        asked = await service.ask(sid, num_points=trials)
        items = [
            TellItem(outcomes=[OutcomeValue("", float(k % 2))], trial_id=t.trial_id, metadata={"rt": f"0.{k % 1000:03d}"})
            for k, t in enumerate(asked.trials)
        ]
        results = await service.tell_many(sid, items)
        assert results[-1].is_finished, "each strategy must end finished"
        built += 1

    queue = list(range(strategies))
    while queue and time.monotonic() - started < max_seconds:
        batch, queue = queue[:8], queue[8:]
        await asyncio.gather(*(one(i) for i in batch))
        if built % 100 == 0:
            print(f"  built {built} strategies ({built * trials:,} trials) in {time.monotonic() - started:.0f} s, builder peak RSS {rss_mib():.0f} MiB", flush=True)
    await service.close()
    return built, time.monotonic() - started


def proc_status(pid: int) -> dict[str, float]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = float(value.split()[0]) / 1024
    return out


def start(db: str, pythonpath: str | None) -> tuple[subprocess.Popen[bytes], int, dict[str, float]]:
    """A server on `db`; returns it once ListStrategies answers, with the timings and its RSS then."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    options = [("grpc.initial_reconnect_backoff_ms", 20), ("grpc.min_reconnect_backoff_ms", 20), ("grpc.max_reconnect_backoff_ms", 50)]
    log = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "psyserve", "serve", "--no-models", "--port", str(port), "--db", db, "--log-level", "WARNING"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    figures: dict[str, float] = {}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            stub = service_pb2_grpc.ExperimentServiceStub(channel)
            deadline = t0 + 1800
            while True:  # bounded; a server that exits (a port taken meanwhile, say) ends the wait
                try:
                    stub.Resume(pb.ResumeRequest(strategy_id=1), timeout=2, wait_for_ready=True)
                    break
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED or proc.poll() is not None or time.perf_counter() > deadline:
                        raise RuntimeError(f"server did not answer (exit code {proc.poll()})") from exc
            figures["first_resume_s"] = time.perf_counter() - t0
            reply = stub.ListStrategies(pb.ListStrategiesRequest(), timeout=600)
            figures["first_list_s"] = time.perf_counter() - t0
            figures["strategies"] = len(reply.strategies)
            figures["resident"] = sum(s.resident for s in reply.strategies)  # an old server never sets it: all are in memory there
            figures["trials"] = sum(s.trials_asked for s in reply.strategies)
        figures.update(proc_status(proc.pid))
    except BaseException:
        proc.kill()
        log.seek(0)
        print(log.read().decode()[-3000:], file=sys.stderr)
        raise
    return proc, port, figures


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> float:
    t0 = time.perf_counter()
    proc.send_signal(sig)
    proc.wait(600)
    return time.perf_counter() - t0


def first_access(db: str, count: int) -> dict[str, float]:
    """On a fresh server (every strategy evicted): GetConfig / ListTrials of evicted strategies,
    first (rebuilt from the journal) and second (resident), medians in ms."""
    proc, port, figures = start(db, None)
    try:
        out: dict[str, list[float]] = {"getconfig_first": [], "getconfig_second": [], "listtrials_first": [], "listtrials_second": []}
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.ExperimentServiceStub(channel)
            cold = [s.strategy_id for s in stub.ListStrategies(pb.ListStrategiesRequest(), timeout=600).strategies if not s.resident]
            for i, sid in enumerate(cold[: 2 * count]):
                kind = "getconfig" if i % 2 == 0 else "listtrials"
                for which in ("first", "second"):
                    t0 = time.perf_counter()
                    if kind == "getconfig":
                        stub.GetConfig(pb.GetConfigRequest(strategy_id=sid), timeout=60)
                    else:
                        stub.ListTrials(pb.ListTrialsRequest(strategy_id=sid), timeout=60)
                    out[f"{kind}_{which}"].append((time.perf_counter() - t0) * 1000)
        figures.update({k: statistics.median(v) for k, v in out.items() if v})
        figures["samples"] = len(out["getconfig_first"])
        figures.update({f"after_{k}": v for k, v in proc_status(proc.pid).items()})
    finally:
        stop(proc)
    return figures


def import_seconds() -> float:
    """Python start + importing the server (part of every restart, whatever the journal)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import psyserve.cli"], check=True)
    return time.perf_counter() - t0


async def recover_in_process(db: str) -> tuple[float, int, int]:
    """Journal.open + recover() in this process (no Python start, no gRPC): seconds, resident, events replayed."""
    t0 = time.perf_counter()
    journal = await Journal.open(db)
    service = ExperimentService(journal, None)
    events = await service.recover(expire_leases=False)
    seconds = time.perf_counter() - t0
    resident = len(service.strategies())
    await service.close()
    return seconds, resident, events


def row(label: str, f: dict[str, float]) -> str:
    return (
        f"{label:<46} {f['first_resume_s']:8.2f} s {f['first_list_s']:8.2f} s {f['VmRSS']:8.0f} MiB {f['VmHWM']:8.0f} MiB "
        f"{f['resident']:>6.0f} / {f['strategies']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=1000, help="trials per strategy")
    parser.add_argument("--old-server", default=None, help="a checkout's server/ directory to compare with (PYTHONPATH)")
    parser.add_argument("--max-build-seconds", type=float, default=1800)
    parser.add_argument("--samples", type=int, default=20, help="evicted strategies timed per request kind")
    parser.add_argument("--keep", default=None, help="directory to keep the journal in (default: a temporary one)")
    args = parser.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="psyserve-memory-"))
    tmp.mkdir(parents=True, exist_ok=True)
    db = str(tmp / "history.db")
    try:
        if not Path(db).exists():
            built, seconds = asyncio.run(build(db, args.strategies, args.trials, args.max_build_seconds))
            print(f"built {built} finished strategies x {args.trials} trials in {seconds:.0f} s (builder peak RSS {rss_mib():.0f} MiB, at most 16 resident)")
        with sqlite3.connect(db) as conn:
            events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        size = sum(p.stat().st_size for p in tmp.glob("history.db*"))
        plain = str(tmp / "plain.db")  # the same journal without summaries: what the old server leaves
        shutil.copy(db, plain)
        with sqlite3.connect(plain) as conn:
            conn.execute("DELETE FROM snapshots")
        print(f"journal: {events:,} events, {size / 1e6:.0f} MB; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        results = []
        if args.old_server:
            old_db = str(tmp / "old.db")
            shutil.copy(plain, old_db)
            proc, _, f = start(old_db, args.old_server)
            stop(proc, signal.SIGKILL)
            f["resident"] = f["strategies"]  # everything, always
            results.append(("before (--old-server)", f))
        proc, _, f = start(plain, None)
        f["stop_s"] = stop(proc)
        results.append(("after, first start (no summaries: full replay)", f))
        proc, _, f = start(plain, None)
        stop(proc)
        results.append(("after, next start (summaries)", f))
        access = first_access(plain, args.samples)
        recover_s, recover_resident, recover_events = asyncio.run(recover_in_process(plain))
        imports = min(import_seconds() for _ in range(3))
        print(f"\n{'server':<46} {'Resume':>10} {'List':>10} {'RSS':>12} {'peak RSS':>12} {'resident':>10}   (load {os.getloadavg()[0]:.1f})")
        for label, figures in results:
            print(row(label, figures))
        print(f"  (the first start's SIGTERM, which stores every summary, took {results[-2][1]['stop_s']:.1f} s)")
        print(
            f"  of a restart: python start + import psyserve.cli {imports:.2f} s; Journal.open + recover in process on the "
            f"summarised journal {recover_s * 1000:.0f} ms ({recover_resident} strategies rebuilt, {recover_events} events replayed)"
        )
        print(
            f"\nfirst request needing an evicted strategy (median of {access['samples']:.0f} each), then the same request again:\n"
            f"  GetConfig:  {access['getconfig_first']:7.1f} ms first, {access['getconfig_second']:6.1f} ms resident\n"
            f"  ListTrials: {access['listtrials_first']:7.1f} ms first, {access['listtrials_second']:6.1f} ms resident ({args.trials} trials in the reply)\n"
            f"  server RSS after those {2 * access['samples']:.0f} loads: {access['after_VmRSS']:.0f} MiB"
        )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
