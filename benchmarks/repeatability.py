"""Does a seeded run repeat exactly? The same seeded experiment driven several ways, trial by trial.

Quality only (no timing figures): run it with `nice -n 10`, no benchmark lock needed.

For each case (GP classification with MCLevelSetEstimation / EAVC / BALD, pairwise probit,
regression with qLogNEI, an Ax-facade optimisation with `random_seed`) the same seeded config is
run on one model server in several client modes:

- ``fast``: ask, tell at once, ask again (speculation mostly misses or is still running);
- ``slow``: random 0-`--delay` s waits between ask and tell and between tell and ask (speculation
  finishes and is served);
- ``again``: ``fast`` a second time on the same server (worker processes with history);
- ``wire``: ``fast`` over the AEPsych JSON/TCP protocol (classification / pairwise / regression);
- ``restart``: ``fast`` with the server SIGKILLed after `--kill-at` trials and restarted on the
  same journal (replay); the run continues on the new server;
- ``nospec``: ``fast`` on a server started with PSYSERVE_SPECULATE=0.

The observer's answer to trial i is a fixed function of (stimulus, i), so two runs that propose
the same stimuli receive the same answers. Prints, per case and mode, the first trial whose
stimuli differ from the ``fast`` run (``-`` when all are bit-identical) and the largest
difference there.

    nice -n 10 .venv/bin/python benchmarks/repeatability.py --cases cls_mclse pairwise --modes fast slow restart
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
from scipy.stats import norm

import psyserve_client as pc
from _harness import WireClient, free_port
from psyserve_client.ax import AxClient, ObjectiveProperties


@dataclass(frozen=True)
class Case:
    kind: str  # "binary", "pairwise", "continuous", "ax"
    acqf: str = ""
    model: str = "GPClassificationModel"
    init: int = 4
    trials: int = 14


CASES: dict[str, Case] = {
    "cls_mclse": Case("binary", "MCLevelSetEstimation"),
    "cls_eavc": Case("binary", "EAVC"),
    "cls_bald": Case("binary", "BernoulliMCMutualInformation"),
    "pairwise": Case("pairwise", "PairwiseMCPosteriorVariance", "PairwiseProbitModel"),
    "regression": Case("continuous", "qLogNoisyExpectedImprovement", "GPRegressionModel"),
    "ax": Case("ax", init=5, trials=12),
}
SERVE = (sys.executable, "-m", "psyserve", "serve", "--host", "127.0.0.1", "--log-level", "WARNING")
MODES = ("fast", "slow", "again", "wire", "restart", "nospec")


def config_for(case: Case, seed: int) -> str:
    target = "target = 0.75\n" if case.acqf in ("MCLevelSetEstimation", "EAVC") else ""
    objective = "objective = ProbitObjective\n" if case.kind in ("binary", "pairwise") else ""
    return f"""
[common]
parnames = [x0, x1]
stimuli_per_trial = {2 if case.kind == "pairwise" else 1}
outcome_types = [{"continuous" if case.kind == "continuous" else "binary"}]
strategy_names = [init_strat, opt_strat]
seed = {seed}
[x0]
par_type = continuous
lower_bound = -1
upper_bound = 1
[x1]
par_type = continuous
lower_bound = -1
upper_bound = 1
[init_strat]
generator = SobolGenerator
min_asks = {case.init}
[opt_strat]
generator = OptimizeAcqfGenerator
model = {case.model}
min_asks = {case.trials - case.init}
[OptimizeAcqfGenerator]
acqf = {case.acqf}
restarts = 4
samps = 256
[{case.acqf}]
{objective}{target}"""


def latent(x: np.ndarray) -> np.ndarray:
    """A smooth 2-D test function on [-1, 1]^2."""
    x = np.atleast_2d(x)
    return 3.0 * x[:, 1] - 1.5 * np.sin(2.5 * x[:, 0]) + 0.5


def answer(case: Case, stimuli: np.ndarray, index: int) -> float:
    """The observer's answer to trial `index` (stimuli: k x 2): a function of both, nothing else."""
    u = np.random.default_rng([4242, index]).random()
    if case.kind == "pairwise":
        f = latent(stimuli)
        return float(u < norm.cdf((f[1] - f[0]) / math.sqrt(2)))
    if case.kind == "continuous":
        return float(-np.sum((stimuli[0] - 0.3) ** 2) + 0.1 * norm.ppf(u))
    return float(u < norm.cdf(latent(stimuli)[0]))


# ----------------------------------------------------------------------------- servers
class Server:
    """`psyserve serve` in a subprocess (gRPC + the AEPsych port) on a journal that outlives it."""

    def __init__(self, db: str, log: Path, workers: int, env: dict[str, str] | None = None) -> None:
        self.db, self.log, self.workers, self.env = db, log, workers, env or {}
        self.port, self.wire_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    *SERVE,
                    "--port",
                    str(self.port),
                    "--db",
                    self.db,
                    "--aepsych-port",
                    str(self.wire_port),
                    "--workers",
                    str(self.workers),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        deadline = time.monotonic() + 180
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server failed to start: " + self.log.read_text()[-2000:])
            try:
                with grpc.insecure_channel(self.address) as channel:
                    grpc.channel_ready_future(channel).result(timeout=0.5)
                break
            except grpc.FutureTimeoutError:
                continue
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.wire_port), timeout=0.5):
                return
            time.sleep(0.2)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@contextlib.contextmanager
def running(tmp: str, name: str, workers: int, env: dict[str, str] | None = None) -> Iterator[Server]:
    server = Server(str(Path(tmp) / f"{name}.db"), Path(tmp) / f"{name}.log", workers, env)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------- drivers
Pause = Callable[[], None]


def drive_grpc(server: Server, case: Case, seed: int, pause: Pause, kill_at: int | None) -> list[list[list[float]]]:
    """Ask/tell over gRPC; optionally SIGKILL + restart the server after `kill_at` trials."""
    seen: list[list[list[float]]] = []
    client = pc.Client(server.address, timeout=600)
    try:
        sid = client.configure(config_str=config_for(case, seed)).strategy_id
        for i in range(case.trials):
            if kill_at is not None and i == kill_at:
                client.close()
                server.stop(signal.SIGKILL)
                server.start()
                client = pc.Client(server.address, timeout=600)
            trial = client.ask(strategy_id=sid).trials[0]
            stimuli = np.array([[float(s["x0"]), float(s["x1"])] for s in trial.stimuli])
            seen.append(stimuli.tolist())
            pause()
            client.tell(trial_id=trial.trial_id, outcome=answer(case, stimuli, i), strategy_id=sid)
            pause()
    finally:
        client.close()
    return seen


def drive_ax(server: Server, case: Case, seed: int, pause: Pause, kill_at: int | None) -> list[list[list[float]]]:
    seen: list[list[list[float]]] = []
    ax = AxClient(random_seed=seed, address=server.address)
    ax.create_experiment(
        name=(name := f"rep{seed}-{time.monotonic_ns()}"),
        parameters=[{"name": n, "type": "range", "bounds": [-1.0, 1.0]} for n in ("x0", "x1")],
        objectives={"y": ObjectiveProperties(minimize=False)},
        choose_generation_strategy_kwargs={"num_initialization_trials": case.init, "num_restarts": 2, "raw_samples": 64},
    )
    for i in range(case.trials):
        if kill_at is not None and i == kill_at:
            server.stop(signal.SIGKILL)
            server.start()
            ax = AxClient(random_seed=seed, address=server.address)
            ax.load_experiment_from_database(name)
        params, index = ax.get_next_trial()
        x = np.array([[float(params["x0"]), float(params["x1"])]])
        seen.append(x.tolist())
        pause()
        ax.complete_trial(index, {"y": (answer(Case("continuous"), x, i), 0.0)})
        pause()
    return seen


def drive_wire(server: Server, case: Case, seed: int, pause: Pause, kill_at: int | None) -> list[list[list[float]]]:
    seen: list[list[list[float]]] = []
    wire = WireClient(server.wire_port)
    try:
        wire.call("setup", {"config_str": config_for(case, seed)})
        for i in range(case.trials):
            config = cast(dict[str, Any], wire.call("ask", {"num_points": 1})["config"])
            tell: dict[str, Any]
            if case.kind == "pairwise":
                stimuli = np.array([[float(np.ravel(config[n])[k]) for n in ("x0", "x1")] for k in range(2)])
                tell = {n: [[float(stimuli[0, j]), float(stimuli[1, j])]] for j, n in enumerate(("x0", "x1"))}
            else:
                stimuli = np.array([[float(np.ravel(config[n])[0]) for n in ("x0", "x1")]])
                tell = {n: [float(stimuli[0, j])] for j, n in enumerate(("x0", "x1"))}
            seen.append(stimuli.tolist())
            pause()
            outcome = answer(case, stimuli, i)
            wire.call("tell", {"config": tell, "outcome": int(outcome) if case.kind != "continuous" else outcome})
            pause()
    finally:
        wire.close()
    return seen


def first_difference(a: list[Any], b: list[Any]) -> tuple[str, float]:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return str(i), float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
    return "-", 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--delay", type=float, default=1.0, help="slow mode: the longest random wait (s)")
    parser.add_argument("--kill-at", type=int, default=8, help="restart mode: SIGKILL before this trial")
    parser.add_argument("--save", type=Path, default=None, help="write every run's stimuli here (JSON)")
    args = parser.parse_args()
    saved: dict[str, dict[str, Any]] = {}
    fast: Pause = lambda: None  # noqa: E731
    jitter = random.Random(0)

    def slow() -> None:
        time.sleep(jitter.uniform(0, args.delay))

    with tempfile.TemporaryDirectory() as tmp:
        with running(tmp, "main", args.workers) as server:
            for name in args.cases:
                case = CASES[name]
                drive = drive_ax if case.kind == "ax" else drive_grpc
                runs: dict[str, Any] = {"fast": drive(server, case, args.seed, fast, None)}
                for mode in args.modes:
                    if mode == "fast":
                        continue
                    t0 = time.perf_counter()
                    if mode == "slow":
                        runs[mode] = drive(server, case, args.seed, slow, None)
                    elif mode == "again":
                        runs[mode] = drive(server, case, args.seed, fast, None)
                    elif mode == "wire":
                        if case.kind == "ax":
                            continue
                        runs[mode] = drive_wire(server, case, args.seed, fast, None)
                    elif mode == "restart":
                        with running(tmp, f"restart-{name}", args.workers) as other:
                            runs[mode] = drive(other, case, args.seed, fast, args.kill_at)
                    elif mode == "nospec":
                        with running(tmp, f"nospec-{name}", args.workers, {"PSYSERVE_SPECULATE": "0"}) as other:
                            runs[mode] = drive(other, case, args.seed, fast, None)
                    where, size = first_difference(runs["fast"], runs[mode])
                    print(
                        f"{name:12s} {mode:8s} first differing trial {where:>3s} (of {case.trials}; max |diff| {size:.3g}) [{time.perf_counter() - t0:.0f} s]",
                        flush=True,
                    )
                saved[name] = runs
    if args.save is not None:
        args.save.write_text(json.dumps(saved))


if __name__ == "__main__":
    main()
