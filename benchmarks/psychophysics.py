"""Simulated observers through a real psyserve server: accuracy, ask latency, fit/generation time.

Problems: novel detection and novel discrimination (2-D, [-1, 1]^2) and a binarised Hartmann6
(6-D unit cube); outcome ~ Bernoulli(Phi(f)). Each run: 10 Sobol + 40 model (MCLevelSetEstimation,
or --acqf, target 0.75) trials. Response time = the pause between an ask's reply and its tell; the next ask
follows each tell at once. Server: subprocess on 127.0.0.1. All loops are bounded.

Capacity (`--capacity`): participants answering every --response-times seconds are added up the
--participants ladder (one fresh server per step, no model evaluation) until the model-phase ask
p99 exceeds --p99-target-ms or an RPC fails; the last step that held is the capacity. The model
jobs run in the local pool (--workers processes), on a Dask cluster (--compute dask://HOST:PORT),
or on a Dask cluster of --dask-workers single-thread workers this script starts on 127.0.0.1.

Usage: python benchmarks/psychophysics.py [--seeds 3] [--response-times 0 0.5] [--participants 1]
       python benchmarks/psychophysics.py --problems novel_detection --participants 16 --response-times 1
       python benchmarks/psychophysics.py --problems novel_detection --acqf EAVC
       python benchmarks/psychophysics.py --problems novel_detection --response-times 1 --capacity --participants 2 4 6 8 \
           --compute dask://127.0.0.1:8786        (or --dask-workers 2, or --workers 2 for the local pool)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.stats import qmc

import observers
import psyserve_client as pc
from _harness import percentile, server_process

PROBLEMS = {
    "novel_detection": (observers.novel_detection, 2, (-1.0, 1.0)),
    "novel_discrimination": (observers.novel_discrimination, 2, (-1.0, 1.0)),
    "hartmann6_binary": (observers.hartmann6_binary, 6, (0.0, 1.0)),
}
INIT_TRIALS, MODEL_TRIALS = 10, 40


REFIT_EVERY = 1
ACQF_OPTIONS = ""
ACQF = "MCLevelSetEstimation"


def config_for(dim: int, bounds: tuple[float, float], seed: int) -> str:
    names = [f"x{i}" for i in range(dim)]
    params = "".join(f"[{n}]\npar_type = continuous\nlower_bound = {bounds[0]}\nupper_bound = {bounds[1]}\n" for n in names)
    return f"""
[common]
parnames = [{", ".join(names)}]
outcome_types = [binary]
strategy_names = [init_strat, opt_strat]
seed = {seed}
{params}
[init_strat]
generator = SobolGenerator
min_asks = {INIT_TRIALS}
[opt_strat]
generator = OptimizeAcqfGenerator
model = GPClassificationModel
acqf = {ACQF}
min_asks = {MODEL_TRIALS}
refit_every = {REFIT_EVERY}
{ACQF_OPTIONS}
[{ACQF}]
target = 0.75
objective = ProbitObjective
"""


@dataclass
class RunResult:
    model_ask_s: list[float] = field(default_factory=list)
    precomputed: list[bool] = field(default_factory=list)
    fit_s: list[float] = field(default_factory=list)
    gen_s: list[float] = field(default_factory=list)
    mae: float = float("nan")
    brier: float = float("nan")
    threshold_error: float = float("nan")
    errors: int = 0


async def run_participant(address: str, problem: str, seed: int, response_time: float, evaluate: bool) -> RunResult:
    f, dim, bounds = PROBLEMS[problem]
    rng = np.random.default_rng(seed)
    result = RunResult()
    names = [f"x{i}" for i in range(dim)]
    async with pc.AsyncClient(address, timeout=300) as client:
        await client.configure(config_str=config_for(dim, bounds, seed))
        for _ in range(INIT_TRIALS + MODEL_TRIALS):
            t0 = time.perf_counter()
            try:
                ask = await client.ask()
            except pc.PsyserveError:
                result.errors += 1
                continue
            elapsed = time.perf_counter() - t0
            trial = ask.trials[0]
            if trial.phase_name == "opt_strat":
                result.model_ask_s.append(elapsed)
                result.precomputed.append(ask.precomputed)
                result.fit_s.append(ask.fit_seconds)
                result.gen_s.append(ask.generate_seconds)
            x = np.array([[trial.params[n] for n in names]], dtype=float)
            outcome = int(rng.random() < observers.probability(f(x))[0])
            if response_time:
                await asyncio.sleep(response_time)
            try:
                await client.tell(trial_id=trial.trial_id, outcome=outcome)
            except pc.PsyserveError:
                result.errors += 1
        if evaluate:
            await evaluate_model(client, problem, result)
    return result


async def evaluate_model(client: pc.AsyncClient, problem: str, result: RunResult) -> None:
    f, dim, bounds = PROBLEMS[problem]
    names = [f"x{i}" for i in range(dim)]
    grid = qmc.Sobol(d=dim, scramble=True, seed=0).random(1024)[:1000] * (bounds[1] - bounds[0]) + bounds[0]
    preds = (await client.query("prediction", x=[dict(zip(names, map(float, g), strict=True)) for g in grid], probability_space=True)).predictions
    p_hat = np.array([p.probability for p in preds])
    p_true = observers.probability(f(grid))
    result.mae = float(np.mean(np.abs(p_hat - p_true)))
    # expected Brier score against outcomes Y ~ Bernoulli(p_true): (p_hat - p)^2 + p(1 - p)
    result.brier = float(np.mean((p_hat - p_true) ** 2 + p_true * (1 - p_true)))
    if dim == 2:
        cs, as_ = np.linspace(-1, 1, 50), np.linspace(-1, 1, 101)
        dense = [{"x0": float(c), "x1": float(a)} for c in cs for a in as_]
        dense_p = np.array([p.probability for p in (await client.query("prediction", x=dense, probability_space=True)).predictions])
        table = dense_p.reshape(50, 101)

        def lookup(x: np.ndarray) -> np.ndarray:
            ci = np.clip(np.rint((x[:, 0] + 1) / 2 * 49).astype(int), 0, 49)
            ai = np.clip(np.rint((x[:, 1] + 1) / 2 * 100).astype(int), 0, 100)
            return table[ci, ai]

        result.threshold_error = observers.threshold_contour_error(lookup, problem=problem, n_c=50, n_a=101)


def summarize(label: str, runs: list[RunResult]) -> str:
    asks = [s for r in runs for s in r.model_ask_s]
    pre = [p for r in runs for p in r.precomputed]
    fits = [s for r in runs for s in r.fit_s]
    gens = [s for r in runs for s in r.gen_s]

    def mean(xs: list[float]) -> float:
        finite = [x for x in xs if np.isfinite(x)]
        return float(np.mean(finite)) if finite else float("nan")

    return (
        f"{label:<44} ask p50 {percentile(asks, 50) * 1e3:7.1f} ms  p99 {percentile(asks, 99) * 1e3:7.1f} ms  "
        f"precomputed {np.mean(pre) * 100 if pre else 0:5.1f}%  fit {mean(fits) * 1e3:6.0f} ms  gen {mean(gens) * 1e3:5.0f} ms  "
        f"MAE {mean([r.mae for r in runs]):.3f}  Brier {mean([r.brier for r in runs]):.3f}  "
        f"thr-err {mean([r.threshold_error for r in runs]):.3f}  errors {sum(r.errors for r in runs)}"
    )


def capacity(extra: list[str], problem: str, ladder: list[int], response_time: float, target_ms: float) -> tuple[int, list[str]]:
    """The most participants (from the ladder, ascending) whose model-phase ask p99 stays within
    target_ms with no failed RPC; one fresh server per step; stops at the first step that fails."""
    held, lines = 0, []
    for participants in sorted(ladder):
        with server_process(*extra) as (address, _db):
            asyncio.run(_warm(address, problem))  # workers spawned and torch imported before anything is timed
            t0 = time.perf_counter()
            runs = asyncio.run(
                _gather(*(run_participant(address, problem, 1000 + i, response_time, False) for i in range(participants)))
            )
        asks = [s for r in runs for s in r.model_ask_s]
        p99 = percentile(asks, 99) * 1e3 if asks else float("inf")
        errors = sum(r.errors for r in runs)
        ok = errors == 0 and p99 <= target_ms
        load = os.getloadavg()[0]
        lines.append(summarize(f"{problem} K={participants} rt={response_time:g}s", runs) + f"  ({time.perf_counter() - t0:.0f} s, load {load:.1f}) {'held' if ok else 'NOT held'}")
        print(lines[-1], flush=True)
        if not ok:
            break
        held = participants
    return held, lines


async def _warm(address: str, problem: str) -> None:
    """One untimed model ask per compute worker (their first job pays for imports and warm-up)."""
    _, dim, bounds = PROBLEMS[problem]
    async with pc.AsyncClient(address, timeout=600) as client:
        async def one(seed: int) -> None:
            sid = (await client.configure(config_str=config_for(dim, bounds, seed))).strategy_id
            for trial in (await client.ask(num_points=INIT_TRIALS, strategy_id=sid)).trials:
                await client.tell(trial_id=trial.trial_id, outcome=int(trial.params["x0"] > 0), strategy_id=sid)
            await client.ask(strategy_id=sid)

        await asyncio.gather(*(one(s) for s in (9001, 9002)))


async def _gather(*coros: Any) -> list[RunResult]:
    return list(await asyncio.gather(*coros))


@contextlib.contextmanager
def compute_options(args: argparse.Namespace) -> Iterator[list[str]]:
    """The server's compute options: --compute URL, a local Dask cluster, or the local pool."""
    if args.compute:
        yield ["--compute", args.compute]
    elif args.dask_workers:
        from dask_cluster import cluster

        with cluster(args.dask_workers) as url:
            yield ["--compute", url]
    else:
        yield ["--workers", str(args.workers)]


async def run_batch(address: str, problem: str, seeds: list[int], response_time: float, participants: int) -> list[RunResult]:
    if participants == 1:
        return [await run_participant(address, problem, s, response_time, True) for s in seeds]
    tasks = [run_participant(address, problem, 1000 + i, response_time, i < len(seeds)) for i in range(participants)]
    return list(await asyncio.gather(*tasks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--response-times", nargs="+", type=float, default=[0.0, 0.5])
    parser.add_argument("--participants", nargs="+", type=int, default=[1])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--no-speculation", action="store_true", help="server computes each ask on demand")
    parser.add_argument("--refit-every", type=int, default=1, help="full refit every N asks, warm starts between")
    parser.add_argument("--restarts", type=int, default=0, help="acquisition optimiser restarts (config default 10)")
    parser.add_argument("--samps", type=int, default=0, help="acquisition raw samples (config default 1000)")
    parser.add_argument("--acqf", default="MCLevelSetEstimation", help="acquisition (AEPsych name), e.g. EAVC, GlobalMI, BernoulliMCMutualInformation")
    parser.add_argument("--compute", default=None, metavar="dask://HOST:PORT", help="run the model jobs on this Dask scheduler's workers")
    parser.add_argument("--dask-workers", type=int, default=0, help="start a Dask scheduler and this many single-thread workers on 127.0.0.1")
    parser.add_argument("--capacity", action="store_true", help="find the most --participants held at --p99-target-ms")
    parser.add_argument("--p99-target-ms", type=float, default=250.0)
    parser.add_argument("--model-trials", type=int, default=40, help="model-based trials per participant (default 40)")
    args = parser.parse_args()
    global REFIT_EVERY, ACQF_OPTIONS, ACQF, MODEL_TRIALS
    MODEL_TRIALS = args.model_trials
    REFIT_EVERY = args.refit_every
    ACQF = args.acqf
    if args.restarts:
        ACQF_OPTIONS += f"restarts = {args.restarts}\n"
    if args.samps:
        ACQF_OPTIONS += f"samps = {args.samps}\n"
    if args.no_speculation:
        os.environ["PSYSERVE_SPECULATE"] = "0"
    seeds = list(range(1, args.seeds + 1))
    print(f"== psyserve psychophysics benchmark: {INIT_TRIALS} Sobol + {MODEL_TRIALS} model trials, workers={args.workers}, "
          f"speculation={'off' if args.no_speculation else 'on'}, refit_every={REFIT_EVERY}, "
          f"restarts={args.restarts or 10}, samps={args.samps or 1000}, acqf={ACQF}")
    if args.capacity:
        with compute_options(args) as extra:
            for problem in args.problems:
                for response_time in args.response_times:
                    held, _ = capacity(extra, problem, args.participants, response_time, args.p99_target_ms)
                    print(f"capacity ({' '.join(extra)}): {held} participants held at p99 <= {args.p99_target_ms:g} ms, rt {response_time:g} s", flush=True)
        return
    for problem in args.problems:
        for participants in args.participants:
            for response_time in args.response_times:
                with compute_options(args) as extra, server_process(*extra) as (address, _db):
                    t0 = time.perf_counter()
                    runs = asyncio.run(run_batch(address, problem, seeds, response_time, participants))
                    label = f"{problem} K={participants} rt={response_time:g}s"
                    print(summarize(label, runs) + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
