"""Ax-style optimisation through psyserve against Ax 1.3's AxClient, side by side.

Problems: Branin (2-D, 30 trials), Hartmann6 with Ax's tutorial constraints (x1 + x2 <= 2.0,
l2norm <= 1.25; 30 trials) and BraninCurrin (two objectives, both minimised, reference point
(18, 6); 40 trials). The same loop (get_next_trial, evaluate, complete_trial) runs against
`psyserve_client.ax.AxClient` (a psyserve server subprocess with one compute worker) and against
Ax's own AxClient (in a separate virtualenv: --ax-python, e.g. /work/venvs/ax/bin/python with
ax-platform==1.3.1; Ax is never a psyserve dependency). Both use one torch thread, and both
compute at nice +5 relative to the benchmark (psyserve's workers are niced by the server).

Prints, per problem: best feasible value found (or hypervolume) mean +- sd over seeds for each
engine, the mean time per get_next_trial (model-based trials) with the ratio Ax / psyserve, the
CPU seconds per model-based get_next_trial (Ax: its process; psyserve: the server and its compute
workers, read from /proc) with their ratio — less dependent on the machine's load than wall time —
and the wall time of the whole loop (asks, evaluations, tells).

    python benchmarks/optimization.py --ax-python /work/venvs/ax/bin/python --seeds 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROBLEMS = {"branin": 30, "hartmann6": 30, "branincurrin": 40}

# ---------------------------------------------------------------------- problems (numpy, both engines)
_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_P = 1e-4 * np.array(
    [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991], [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]
)
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x: np.ndarray) -> float:
    return float(-np.sum(_ALPHA * np.exp(-np.sum(_A * (x - _P) ** 2, axis=1))))


def branin(x1: float, x2: float) -> float:
    return float((x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10)


def currin(u1: float, u2: float) -> float:
    u2 = max(u2, 1e-9)
    factor = 1 - math.exp(-1 / (2 * u2))
    return float(factor * (2300 * u1**3 + 1900 * u1**2 + 2092 * u1 + 60) / (100 * u1**3 + 500 * u1**2 + 4 * u1 + 20))


def problem(name: str) -> dict[str, Any]:
    """Ax create_experiment arguments and the evaluation function of a problem."""
    if name == "branin":
        return {
            "parameters": [{"name": "x1", "type": "range", "bounds": [-5.0, 10.0]}, {"name": "x2", "type": "range", "bounds": [0.0, 15.0]}],
            "objectives": {"branin": (True, None)},
            "parameter_constraints": [],
            "outcome_constraints": [],
        }
    if name == "hartmann6":
        return {
            "parameters": [{"name": f"x{i}", "type": "range", "bounds": [0.0, 1.0]} for i in range(1, 7)],
            "objectives": {"hartmann6": (True, None)},
            "parameter_constraints": ["x1 + x2 <= 2.0"],
            "outcome_constraints": ["l2norm <= 1.25"],
        }
    if name == "branincurrin":
        return {
            "parameters": [{"name": "u1", "type": "range", "bounds": [0.0, 1.0]}, {"name": "u2", "type": "range", "bounds": [0.0, 1.0]}],
            "objectives": {"branin": (True, 18.0), "currin": (True, 6.0)},
            "parameter_constraints": [],
            "outcome_constraints": [],
        }
    raise ValueError(name)


def evaluate(name: str, p: dict[str, Any]) -> dict[str, tuple[float, float]]:
    if name == "branin":
        return {"branin": (branin(p["x1"], p["x2"]), 0.0)}
    if name == "hartmann6":
        x = np.array([p[f"x{i}"] for i in range(1, 7)], dtype=float)
        return {"hartmann6": (hartmann6(x), 0.0), "l2norm": (float(np.sqrt((x**2).sum())), 0.0)}
    u1, u2 = float(p["u1"]), float(p["u2"])
    return {"branin": (branin(15 * u1 - 5, 15 * u2), 0.0), "currin": (currin(u1, u2), 0.0)}


def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Hypervolume dominated by minimised 2-D points below ref."""
    inside = sorted((a, b) for a, b in points if a < ref[0] and b < ref[1])
    volume, best_b = 0.0, ref[1]
    for a, b in inside:
        if b < best_b:
            volume += (ref[0] - a) * (best_b - b)
            best_b = b
    return volume


def score(name: str, rows: list[dict[str, tuple[float, float]]], params: list[dict[str, Any]]) -> float:
    """Best feasible observed objective (minimised), or the hypervolume for BraninCurrin."""
    if name == "branincurrin":
        return hypervolume_2d([(r["branin"][0], r["currin"][0]) for r in rows], (18.0, 6.0))
    metric = "branin" if name == "branin" else "hartmann6"
    feasible = [
        r[metric][0]
        for r, p in zip(rows, params, strict=True)
        if name != "hartmann6" or (r["l2norm"][0] <= 1.25 and p["x1"] + p["x2"] <= 2.0 + 1e-9)
    ]
    return min(feasible) if feasible else math.nan


# ---------------------------------------------------------------------- one run (either engine)
def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` and its children (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command name: state ppid ... utime (12th) stime (13th)
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def initial_design(name: str, seed: int) -> list[dict[str, float]]:
    """--same-init: max(5, 2 d) scrambled-Sobol points (SciPy, seeded), in raw units."""
    from scipy.stats import qmc

    parameters = problem(name)["parameters"]
    d = len(parameters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy: "balance properties ... power of 2"
        unit = qmc.Sobol(d, scramble=True, seed=seed).random(max(5, 2 * d))
    return [{p["name"]: float(p["bounds"][0] + u[i] * (p["bounds"][1] - p["bounds"][0])) for i, p in enumerate(parameters)} for u in unit]


def run_loop(client: Any, objective_cls: Any, name: str, trials: int, seed: int, server_pid: int = 0, same_init: bool = False) -> dict[str, Any]:
    spec = problem(name)
    extra: dict[str, Any] = {}
    constraints = spec["parameter_constraints"]
    if same_init:  # no Sobol step: the design below is attached; x1 + x2 <= 2 holds on all of [0, 1]^2
        extra["choose_generation_strategy_kwargs"] = {"num_initialization_trials": 0}
        constraints = []
    client.create_experiment(
        name=f"{name}-{seed}",
        parameters=spec["parameters"],
        objectives={m: objective_cls(minimize=mn, threshold=t) for m, (mn, t) in spec["objectives"].items()},
        parameter_constraints=constraints,
        outcome_constraints=spec["outcome_constraints"],
        **extra,
    )
    rows, params, times, cpu_times = [], [], [], []
    loop_start = time.perf_counter()
    design = initial_design(name, seed) if same_init else []
    for point in design:
        p, index = client.attach_trial(point)
        result = evaluate(name, p)
        client.complete_trial(trial_index=index, raw_data=result)
        rows.append(result)
        params.append(p)
    for _ in range(trials - len(design)):
        # this process's CPU plus (psyserve) the server's and its workers'; the /proc scans
        # themselves (a few ms) fall outside the measured span
        s0 = tree_cpu_seconds(server_pid) if server_pid else 0.0
        c0, t0 = time.process_time(), time.perf_counter()
        p, index = client.get_next_trial()
        times.append(time.perf_counter() - t0)
        c1 = time.process_time()
        s1 = tree_cpu_seconds(server_pid) if server_pid else 0.0
        cpu_times.append(c1 - c0 + s1 - s0)
        result = evaluate(name, p)
        client.complete_trial(trial_index=index, raw_data=result)
        rows.append(result)
        params.append(p)
    return {"score": score(name, rows, params), "ask_seconds": times, "ask_cpu_seconds": cpu_times, "loop_seconds": time.perf_counter() - loop_start, "violations": sum(p.get("x1", 0) + p.get("x2", 0) > 2.0 + 1e-9 for p in params) if name == "hartmann6" else 0, "attached": len(design)}


def worker_ax(name: str, trials: int, seed: int, same_init: bool = False) -> dict[str, Any]:
    import logging

    import torch

    # psyserve's compute workers run at nice +5 relative to the server; Ax computes in its own
    # process, so it gets the same +5 here (a fair share on a loaded machine)
    os.nice(5)
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    from ax.service.ax_client import AxClient, ObjectiveProperties

    client = AxClient(random_seed=seed, verbose_logging=False)
    return run_loop(client, ObjectiveProperties, name, trials, seed, same_init=same_init)


def worker_psyserve(name: str, trials: int, seed: int, address: str, server_pid: int, same_init: bool = False) -> dict[str, Any]:
    from psyserve_client.ax import AxClient, ObjectiveProperties

    client = AxClient(random_seed=seed, address=address)
    return run_loop(client, ObjectiveProperties, name, trials, seed, server_pid, same_init)


# ---------------------------------------------------------------------- driver
def start_server(db: str) -> tuple[subprocess.Popen[bytes], str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import free_port, spawn_server

    port = free_port()
    server = spawn_server(db, Path(db + ".log"), "--workers", "1", port=port)
    return server.proc, f"127.0.0.1:{port}"


def warm_up(address: str) -> None:
    """One model-based ask on a throwaway experiment: the worker has imported torch and BoTorch."""
    from psyserve_client.ax import AxClient, ObjectiveProperties

    client = AxClient(address=address)
    client.create_experiment(
        name="warm-up",
        parameters=[{"name": "x", "type": "range", "bounds": [0.0, 1.0]}],
        objectives={"y": ObjectiveProperties(minimize=True)},
        choose_generation_strategy_kwargs={"num_initialization_trials": 2},
    )
    for _ in range(3):
        p, index = client.get_next_trial()
        client.complete_trial(index, (float(p["x"]) ** 2, 0.0))


def one(engine: str, name: str, trials: int, seed: int, ax_python: str, address: str, server_pid: int, same_init: bool = False) -> dict[str, Any]:
    if engine == "psyserve":
        return worker_psyserve(name, trials, seed, address, server_pid, same_init)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [ax_python, __file__, "--worker", "ax", "--problems", name, "--trials", str(trials), "--seed", str(seed), *(["--same-init"] if same_init else [])],
        capture_output=True, text=True, env=env, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", default="branin,hartmann6,branincurrin")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--trials", type=int, default=0, help="trials per run (default: 30, 40 for branincurrin)")
    parser.add_argument("--ax-python", default="/work/venvs/ax/bin/python", help="python of a virtualenv with ax-platform==1.3.1")
    parser.add_argument("--engines", default="psyserve,ax")
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument(
        "--same-init",
        action="store_true",
        help="quality pairs: both engines start from the same attached scrambled-Sobol design (max(5, 2 d) points, "
        "SciPy, seeded by the seed) instead of their own Sobol step, so a seed's two runs differ only in the model phase",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "ax":
        print(json.dumps(worker_ax(args.problems, args.trials, args.seed, args.same_init)))
        return
    engines = args.engines.split(",")
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_server(os.path.join(tmp, "bench.db")) if "psyserve" in engines else (None, "")
        try:
            if address:
                warm_up(address)
            for name in args.problems.split(","):
                trials = args.trials or PROBLEMS[name]
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    for engine in engines:  # interleaved, so both see the same machine load
                        run = one(engine, name, trials, seed, args.ax_python, address, proc.pid if proc is not None else 0, args.same_init)
                        results.setdefault(name, {}).setdefault(engine, []).append(run)
                        if args.json:  # after every run, so an interrupted benchmark keeps what ran
                            Path(args.json).write_text(json.dumps(results))
                        d = len(problem(name)["parameters"])
                        skip = 0 if run.get("attached") else max(5, 2 * d)  # --same-init: every ask is a model ask
                        model_times = run["ask_seconds"][skip:] or run["ask_seconds"]
                        model_cpu = run["ask_cpu_seconds"][skip:] or run["ask_cpu_seconds"]
                        print(
                            f"{name} seed {seed} {engine}: score {run['score']:.4f}, model ask {statistics.mean(model_times):.3f} s "
                            f"(CPU {statistics.mean(model_cpu):.3f} s), loop {run['loop_seconds']:.1f} s; load {os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(120)  # a loaded machine can take a while to close the journal
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(30)
    print()
    print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    print(
        "| problem | trials | seeds | psyserve best (mean ± sd) | Ax 1.3 best (mean ± sd) | get_next_trial psyserve | Ax | Ax / psyserve "
        "| CPU per ask psyserve | Ax | Ax / psyserve | loop psyserve | Ax |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, by_engine in results.items():
        trials = args.trials or PROBLEMS[name]
        cells = []
        means: dict[str, float] = {}
        cpus: dict[str, float] = {}
        loops: dict[str, float] = {}
        for engine in ("psyserve", "ax"):
            runs = by_engine.get(engine, [])
            scores = [r["score"] for r in runs]
            cells.append(f"{statistics.mean(scores):.4f} ± {statistics.pstdev(scores):.4f}" if scores else "—")
            # model-based asks: after the quasi-random initialisation (Ax's and psyserve's 2*d or 5)
            d = len(problem(name)["parameters"])
            times = [t for r in runs for t in r["ask_seconds"][0 if r.get("attached") else max(5, 2 * d) :]]
            means[engine] = statistics.mean(times) if times else math.nan
            cpu_times = [t for r in runs for t in r.get("ask_cpu_seconds", [])[0 if r.get("attached") else max(5, 2 * d) :]]
            cpus[engine] = statistics.mean(cpu_times) if cpu_times else math.nan
            loops[engine] = statistics.mean(r["loop_seconds"] for r in runs) if runs and "loop_seconds" in runs[0] else math.nan
        ratio = means["ax"] / means["psyserve"] if means.get("psyserve") else math.nan
        cpu_ratio = cpus["ax"] / cpus["psyserve"] if cpus.get("psyserve") else math.nan
        label = "hypervolume" if name == "branincurrin" else "min"
        print(
            f"| {name} ({label}) | {trials} | {len(by_engine.get('psyserve', by_engine.get('ax', [])))} | {cells[0]} | {cells[1]} | "
            f"{means.get('psyserve', math.nan):.3f} s | {means.get('ax', math.nan):.3f} s | {ratio:.1f}× | "
            f"{cpus['psyserve']:.3f} s | {cpus['ax']:.3f} s | {cpu_ratio:.1f}× | {loops['psyserve']:.0f} s | {loops['ax']:.0f} s |"
        )


if __name__ == "__main__":
    main()
