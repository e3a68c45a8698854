"""Model computations on a Dask cluster against the local spawn pool, on this machine (127.0.0.1 only).

1. Per-job overhead: the same model job (novel detection, 20 trials of data, MCLevelSetEstimation,
   restarts 2 / samps 64) submitted --jobs times, one after another, through the local pool
   (1 process) and through a Dask cluster (1 worker, 1 thread); the difference of the mean round
   trips is what Dask adds per job.
2. Participants: benchmarks/psychophysics.py's simulated participants (novel detection, 1 s response
   time, speculation on) against a server on the local pool with N processes and one on a Dask
   cluster with N single-thread workers, N = 1, 2: model-phase ask p50/p99 for each number of
   participants, and the p99 ratio Dask / local.
3. Capacity (--capacity 2 4 6 8 ...): for each N, the most participants (up that ladder) whose
   model-phase ask p99 stays <= --p99-target-ms (250) at 1 s response time with no failed RPC,
   on the local pool with N processes and on a Dask cluster with N single-thread workers
   (psychophysics.capacity), and their ratio.

Usage: python benchmarks/dask_cluster.py [--jobs 40] [--participants 2 4] [--workers 1 2] [--seeds 1]
       python benchmarks/dask_cluster.py --skip-overhead --workers 1 2 --capacity 2 4 6 8 12 16 [--model-trials 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from scipy.stats import qmc

import psychophysics
from _harness import free_port, percentile, server_process
from psyserve.compute import GenerateJob, GeneratorSpec, ModelSpec, TrainingData, generate
from psyserve.dask_pool import DaskComputePool
from psyserve.modeling import ComputePool

try:
    import observers
except ImportError:  # pragma: no cover - older checkouts kept them in the server package
    from psyserve.compute import observers  # type: ignore[no-redef]

DASK = str(Path(sys.executable).parent / "dask")


@contextlib.contextmanager
def cluster(workers: int) -> Iterator[str]:
    """A Dask scheduler and `workers` single-thread workers (psyserve preload) on 127.0.0.1."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = open(Path(tmp) / "dask.log", "wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        procs = [subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT, env=env)]
        for _ in range(workers):
            procs.append(
                subprocess.Popen(
                    [DASK, "worker", f"tcp://127.0.0.1:{port}", "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard", "--preload", "psyserve.dask_worker"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        try:
            url = f"dask://127.0.0.1:{port}"
            asyncio.run(_wait_workers(url, workers))
            yield url
        finally:
            for p in procs[::-1]:
                p.terminate()
            for p in procs:
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
            log.close()


async def _wait_workers(url: str, workers: int) -> None:
    deadline = time.monotonic() + 120
    while True:
        pool = DaskComputePool(url)
        try:
            await pool.wait_ready(workers, timeout=120)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await pool.close()


def sample_job(seed: int = 1) -> GenerateJob:
    rng = np.random.default_rng(seed)
    X = qmc.Sobol(2, seed=seed).random(32)[:20]
    y = observers.sample(observers.novel_detection(X * 2 - 1), rng)
    return GenerateJob(
        ModelSpec("GPClassificationModel", 2, {}),
        GeneratorSpec("MCLevelSetEstimation", {"target": 0.75, "objective": "ProbitObjective", "restarts": 2, "samps": 64}),
        TrainingData(X, y),
        1,
        seed=seed,
    )


async def round_trips(pool: ComputePool | DaskComputePool, jobs: int) -> tuple[list[float], list[float]]:
    """Wall time per job (submit -> result) and the job's own compute time, sequentially."""
    await pool.start(wait=True)
    job = sample_job()
    walls, computes = [], []
    try:
        await pool.submit(generate, job)  # warm: first-job costs are not per-job overhead
        for _ in range(jobs):
            t0 = time.perf_counter()
            result = await pool.submit(generate, job)
            walls.append(time.perf_counter() - t0)
            computes.append(result.fit_seconds + result.generate_seconds)
    finally:
        await pool.close()
    return walls, computes


def overhead(jobs: int) -> None:
    local_wall, local_compute = asyncio.run(round_trips(ComputePool(1), jobs))
    with cluster(1) as url:
        dask_wall, dask_compute = asyncio.run(round_trips(DaskComputePool(url), jobs))
    lw, dw = statistics.mean(local_wall), statistics.mean(dask_wall)
    lo = lw - statistics.mean(local_compute)
    do = dw - statistics.mean(dask_compute)
    print(f"per-job round trip ({jobs} jobs, 1 process / 1 worker): local pool {lw * 1e3:.1f} ms, Dask {dw * 1e3:.1f} ms")
    print(f"  transport overhead beyond the job's compute: local {lo * 1e3:.1f} ms, Dask {do * 1e3:.1f} ms -> Dask adds {(do - lo) * 1e3:.1f} ms per job")


def participants_run(extra: list[str], participants: int, seeds: list[int]) -> list[float]:
    with server_process(*extra) as (address, _db):
        runs = asyncio.run(psychophysics.run_batch(address, "novel_detection", seeds, 1.0, participants))
    return [s for r in runs for s in r.model_ask_s]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--participants", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--capacity", nargs="+", type=int, default=[], metavar="K", help="participant ladder for the capacity comparison")
    parser.add_argument("--p99-target-ms", type=float, default=250.0)
    parser.add_argument("--model-trials", type=int, default=40, help="model-based trials per participant in the capacity runs")
    args = parser.parse_args()
    print(f"== Dask cluster vs local pool, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    if not args.skip_overhead:
        overhead(args.jobs)
    if args.capacity:
        psychophysics.MODEL_TRIALS = args.model_trials
        held: dict[tuple[str, int], int] = {}
        for n in args.workers:
            held["local", n], _ = psychophysics.capacity(["--workers", str(n)], "novel_detection", args.capacity, 1.0, args.p99_target_ms)
            with cluster(n) as url:
                held["dask", n], _ = psychophysics.capacity(["--compute", url], "novel_detection", args.capacity, 1.0, args.p99_target_ms)
            ratio = held["dask", n] / held["local", n] if held["local", n] else float("nan")
            print(
                f"capacity at p99 <= {args.p99_target_ms:g} ms, rt 1 s, {n} process(es)/worker(s): local pool {held['local', n]} participants, "
                f"Dask {held['dask', n]} participants, ratio Dask/local {ratio:.2f}  (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        return
    seeds = list(range(1, args.seeds + 1))
    for n in args.workers:
        for k in args.participants:
            local = participants_run(["--workers", str(n)], k, seeds)
            with cluster(n) as url:
                on_dask = participants_run(["--compute", url], k, seeds)
            lp99, dp99 = percentile(local, 99), percentile(on_dask, 99)
            print(
                f"{n} process(es), {k} participants at 1 s: local p50 {percentile(local, 50) * 1e3:6.1f} ms p99 {lp99 * 1e3:6.1f} ms | "
                f"Dask p50 {percentile(on_dask, 50) * 1e3:6.1f} ms p99 {dp99 * 1e3:6.1f} ms | p99 ratio Dask/local {dp99 / lp99:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
