"""Paired model-accuracy benchmark: psyserve against AEPsych 0.8 on the same observers, seeds and configs.

Both servers run as subprocesses on 127.0.0.1 and are driven by the same code over AEPsych's
JSON/TCP protocol (psyserve through `--aepsych-port`), with the same INI config (a fixed `seed`),
the same simulated observer and the same observer seed, one run after the other. AEPsych comes
from its own virtual environment (`--aepsych-venv`, `pip install aepsych==0.8.0` there; it is never
a psyserve dependency).

Cases (problem / acquisition): novel detection 2-D with MCLevelSetEstimation, EAVC and BALD; novel
discrimination 2-D, a 4-D detection problem and the binarised Hartmann6 6-D (the issue's config:
15 Sobol, target 0.5, refit_every 5, 60 trials) with MCLevelSetEstimation; GP regression with
qLogNoisyExpectedImprovement on a noisy Hartmann6. Accuracy on a 512-point Sobol grid: MAE and
expected Brier score in probability space, misclassification at the target level, the 2-D
threshold-contour error; for regression the MAE of the posterior mean and the true value at the
model's maximum. Reported per case: mean ± standard error over seeds, and the paired difference
psyserve − AEPsych (negative = psyserve better).

Usage: python benchmarks/quality.py --aepsych-venv /work/venvs/aepsych [--seeds 5] [--cases det_mclse h6_mclse]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import norm, qmc, wilcoxon

from _harness import WireClient, free_port, server_process

try:  # the simulated observers live beside the benchmarks
    import observers
except ImportError:  # pragma: no cover - older checkouts kept them in the server package
    from psyserve.compute import observers  # type: ignore[no-redef]


def detection_4d(x: np.ndarray) -> np.ndarray:
    """A psychometric field in 4-D on [-1, 1]^4: contrast x0 against a smooth 3-D threshold surface."""
    x = np.atleast_2d(x)
    theta = 0.35 * np.sin(2.0 * x[:, 1]) + 0.25 * x[:, 2] ** 2 - 0.2 * np.cos(2.5 * x[:, 3]) * x[:, 1]
    return 4.0 * (x[:, 0] - theta)


def preference_2d(x: np.ndarray) -> np.ndarray:
    """A latent utility on [0, 1]^2 with one peak at (0.3, 0.6) (benchmarks/preference.py's)."""
    x = np.atleast_2d(x)
    return -8.0 * ((x[:, 0] - 0.3) ** 2 + (x[:, 1] - 0.6) ** 2)


def hartmann6_positive(x: np.ndarray) -> np.ndarray:
    """-hartmann6: positive, maximum 3.32237 (the regression problem maximises it)."""
    return -observers.hartmann6(x)


@dataclass(frozen=True)
class Case:
    problem: Callable[[np.ndarray], np.ndarray]
    dim: int
    bounds: tuple[float, float]
    acqf: str
    init: int
    trials: int
    target: float
    refit_every: int = 1
    regression: bool = False
    noise_sd: float = 0.0
    threshold_problem: str = ""  # a 2-D problem with a known threshold contour
    floor: float = 0.0  # n-AFC guess rate: p = floor + (1 - floor) Phi(f), run with FloorProbitObjective
    generator: str = "OptimizeAcqfGenerator"
    pairwise: bool = False  # stimuli_per_trial = 2, PairwiseProbitModel; problem = the latent utility
    model: str = ""  # default: GPClassificationModel / GPRegressionModel
    model_section: str = ""  # extra INI text (the model's options)
    objective: str = ""  # the acquisition's objective (default ProbitObjective / FloorProbitObjective)


GRID = 512  # Sobol evaluation points (AEPsych answers one prediction per query)
N_C, N_A = 25, 51  # the (c, a) grid on which the 2-D threshold contour is located

CASES: dict[str, Case] = {
    "det_mclse": Case(
        observers.novel_detection, 2, (-1.0, 1.0), "MCLevelSetEstimation", 10, 50, 0.75, threshold_problem="novel_detection"
    ),
    "det_eavc": Case(observers.novel_detection, 2, (-1.0, 1.0), "EAVC", 10, 50, 0.75, threshold_problem="novel_detection"),
    "det_bald": Case(
        observers.novel_detection,
        2,
        (-1.0, 1.0),
        "BernoulliMCMutualInformation",
        10,
        50,
        0.75,
        threshold_problem="novel_detection",
    ),
    "disc_mclse": Case(
        observers.novel_discrimination,
        2,
        (-1.0, 1.0),
        "MCLevelSetEstimation",
        10,
        50,
        0.75,
        threshold_problem="novel_discrimination",
    ),
    # a 2AFC observer (guess rate 0.5) with FloorProbitObjective (model likelihood and acquisition)
    "det2afc_floor": Case(observers.novel_detection, 2, (-1.0, 1.0), "MCLevelSetEstimation", 10, 40, 0.75, floor=0.5),
    "det_grid": Case(
        observers.novel_detection, 2, (-1.0, 1.0), "MCLevelSetEstimation", 10, 40, 0.75, generator="AcqfGridSearchGenerator"
    ),
    "det_thompson": Case(
        observers.novel_detection, 2, (-1.0, 1.0), "MCLevelSetEstimation", 10, 40, 0.75, generator="AcqfThompsonSamplerGenerator"
    ),
    "det_epsgreedy": Case(
        observers.novel_detection, 2, (-1.0, 1.0), "MCLevelSetEstimation", 10, 40, 0.75, generator="EpsilonGreedyGenerator"
    ),
    # semi-parametric models: novel_detection is linear in the intensity a (slope 4 / theta(c), offset
    # theta(c) - 1), a semi-parametric observer; intensity = x1 (stim_dim = 1); AEPsych's default priors
    "det_semip": Case(
        observers.novel_detection,
        2,
        (-1.0, 1.0),
        "MCLevelSetEstimation",
        10,
        40,
        0.75,
        threshold_problem="novel_detection",
        model="SemiParametricGPModel",
        model_section="[SemiParametricGPModel]\nstim_dim = 1\n",
        objective="SemiPProbabilityObjective",
    ),
    "det_semip_ia": Case(
        observers.novel_detection,
        2,
        (-1.0, 1.0),
        "MCPosteriorVariance",
        10,
        40,
        0.75,
        threshold_problem="novel_detection",
        model="SemiParametricGPModel",
        model_section="[SemiParametricGPModel]\nstim_dim = 1\n[SemiPThresholdObjective]\ntarget = 0.75\n",
        objective="SemiPThresholdObjective",
        generator="IntensityAwareSemiPGenerator",
    ),
    "det_hadamard": Case(
        observers.novel_detection,
        2,
        (-1.0, 1.0),
        "MCLevelSetEstimation",
        10,
        30,
        0.75,
        threshold_problem="novel_detection",
        model="HadamardSemiPModel",
        model_section="[HadamardSemiPModel]\nstim_dim = 1\nlikelihood = BernoulliLikelihood\n",
    ),
    # the plain GP at the monotonic case's trial count (its baseline, and AEPsych's: AEPsych 0.8's own
    # MonotonicProjectionGP cannot drive a generator, its posterior refuses batched inputs)
    "det_mclse30": Case(
        observers.novel_detection, 2, (-1.0, 1.0), "MCLevelSetEstimation", 10, 30, 0.75, threshold_problem="novel_detection"
    ),
    # novel_detection is monotone in the intensity a = x1: MonotonicProjectionGP with monotonic_dims = [1]
    "det_monotonic": Case(
        observers.novel_detection,
        2,
        (-1.0, 1.0),
        "MCLevelSetEstimation",
        10,
        30,
        0.75,
        threshold_problem="novel_detection",
        model="MonotonicProjectionGP",
        model_section="[MonotonicProjectionGP]\nmonotonic_dims = [1]\n",
    ),
    "det4d_mclse": Case(detection_4d, 4, (-1.0, 1.0), "MCLevelSetEstimation", 12, 60, 0.75),
    "h6_mclse": Case(observers.hartmann6_binary, 6, (0.0, 1.0), "MCLevelSetEstimation", 15, 60, 0.5, refit_every=5),
    "h6_regression": Case(
        hartmann6_positive, 6, (0.0, 1.0), "qLogNoisyExpectedImprovement", 12, 40, 0.0, regression=True, noise_sd=0.1
    ),
    # AEPsych's convention on the wire: outcome 1 = the SECOND stimulus preferred, with
    # P(1) = Phi((u(x2) - u(x1)) / sqrt 2) (aepsych.benchmark.test_functions.f_pairwise)
    "pairwise": Case(preference_2d, 2, (0.0, 1.0), "PairwiseMCPosteriorVariance", 10, 40, 0.5, pairwise=True),
}
N_PAIRS = 2000  # random grid pairs on which the pairwise preference probabilities are scored


def config_for(case: Case, seed: int) -> str:
    names = [f"x{i}" for i in range(case.dim)]
    params = "".join(
        f"[{n}]\npar_type = continuous\nlower_bound = {case.bounds[0]}\nupper_bound = {case.bounds[1]}\n" for n in names
    )
    model = case.model or ("PairwiseProbitModel" if case.pairwise else "GPRegressionModel" if case.regression else "GPClassificationModel")
    outcome = "continuous" if case.regression else "binary"
    gen_section = f"[{case.generator}]\nacqf = {case.acqf}\n" if case.generator != "OptimizeAcqfGenerator" else ""
    objective = case.objective or ("FloorProbitObjective" if case.floor else "ProbitObjective")
    acqf_section = f"[{case.acqf}]\nobjective = {objective}\n" if not case.regression else f"[{case.acqf}]\n"
    if case.acqf in ("MCLevelSetEstimation", "EAVC", "GlobalMI"):
        acqf_section += f"target = {case.target}\n"
    if case.floor:  # AEPsych fits with the floor only through the likelihood; psyserve reads both
        acqf_section += (
            f"[GPClassificationModel]\nlikelihood = BernoulliObjectiveLikelihood\n"
            f"[BernoulliObjectiveLikelihood]\nobjective = FloorProbitObjective\n[FloorProbitObjective]\nfloor = {case.floor}\n"
        )
    return f"""
[common]
parnames = [{", ".join(names)}]
stimuli_per_trial = {2 if case.pairwise else 1}
outcome_types = [{outcome}]
strategy_names = [init_strat, opt_strat]
seed = {seed}
{params}
[init_strat]
generator = SobolGenerator
min_asks = {case.init}
[opt_strat]
generator = {case.generator}
model = {model}
min_asks = {case.trials - case.init}
refit_every = {case.refit_every}
[OptimizeAcqfGenerator]
acqf = {case.acqf}
restarts = 10
samps = 1000
{gen_section}{acqf_section}{case.model_section}"""


@contextlib.contextmanager
def aepsych_server(venv: Path) -> Iterator[int]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        log = Path(tmp) / "aepsych.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    str(venv / "bin" / "aepsych_server"),
                    "--port",
                    str(port),
                    "--ip",
                    "127.0.0.1",
                    "-d",
                    f"{tmp}/a.db",
                    "--logs",
                    tmp,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
            )
        try:
            yield port
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextlib.contextmanager
def psyserve_server(workers: int) -> Iterator[int]:
    port = free_port()
    with server_process("--aepsych-port", str(port), "--workers", str(workers)):
        deadline = time.monotonic() + 60  # the AEPsych port opens after the gRPC one
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.2)
        yield port


@dataclass
class Score:
    mae: float = math.nan
    brier: float = math.nan
    misclass: float = math.nan
    threshold_error: float = math.nan
    regret: float = math.nan
    seconds_per_trial: float = math.nan


def score_grid(case: Case) -> np.ndarray:
    """The GRID Sobol points (fixed seed) on which every run of ``case`` is scored."""
    return qmc.Sobol(d=case.dim, scramble=True, seed=0).random(GRID) * (case.bounds[1] - case.bounds[0]) + case.bounds[0]


def pairwise_scores(predicted: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """MAE, expected Brier score and misclassification of the preference probabilities of N_PAIRS
    random grid pairs (fixed seed), from the predicted utility on ``score_grid`` against the true one."""
    a, b = np.random.default_rng(0).integers(0, GRID, size=(2, N_PAIRS))
    p_hat = norm.cdf((predicted[b] - predicted[a]) / math.sqrt(2))
    p_true = norm.cdf((truth[b] - truth[a]) / math.sqrt(2))
    mae = float(np.mean(np.abs(p_hat - p_true)))
    brier = float(np.mean((p_hat - p_true) ** 2 + p_true * (1 - p_true)))
    misclass = float(np.mean((p_hat >= 0.5) != (p_true >= 0.5)))
    return mae, brier, misclass


def run(port: int, case: Case, seed: int, trace: list[dict[str, object]] | None = None) -> Score:
    """One run of ``case`` at observer seed ``seed``; ``trace`` (when given) receives each trial's
    stimulus (pairwise: both) and outcome."""
    names = [f"x{i}" for i in range(case.dim)]
    rng = np.random.default_rng(10_000 + seed)  # the observer's seed: the same responses for the same stimuli
    client = WireClient(port)
    score = Score()
    try:
        client.call("setup", {"config_str": config_for(case, seed)})
        t0 = time.perf_counter()
        for _ in range(case.trials):
            config = client.call("ask", {"num_points": 1})["config"]
            assert isinstance(config, dict)
            outcome: float
            if case.pairwise:
                stimulus = np.array([[float(np.ravel(config[n])[k]) for n in names] for k in range(2)])
                u = case.problem(stimulus)
                outcome = int(rng.random() < norm.cdf((u[1] - u[0]) / math.sqrt(2)))
                tell = {n: [[float(stimulus[0, i]), float(stimulus[1, i])]] for i, n in enumerate(names)}
            else:
                x = np.array([[float(config[n][0]) for n in names]])
                stimulus = x[0]
                f = float(case.problem(x)[0])
                if case.regression:
                    outcome = f + case.noise_sd * float(rng.standard_normal())
                else:
                    outcome = int(rng.random() < case.floor + (1 - case.floor) * norm.cdf(f))
                tell = {n: [float(config[n][0])] for n in names}
            client.call("tell", {"config": tell, "outcome": outcome})
            if trace is not None:
                trace.append({"x": stimulus.tolist(), "outcome": outcome})
        score.seconds_per_trial = (time.perf_counter() - t0) / case.trials
        grid = score_grid(case)
        predicted = predict(client, names, grid, probability=not (case.regression or case.pairwise))
        truth = case.problem(grid)
        if case.pairwise:
            score.mae, score.brier, score.misclass = pairwise_scores(predicted, truth)
        elif case.regression:
            score.mae = float(np.mean(np.abs(predicted - truth)))
            best = client.call("query", {"query_type": "max", "probability_space": False})["x"]
            assert isinstance(best, dict)
            xb = np.array([[float(np.ravel(best[n])[0]) for n in names]])
            score.regret = float(np.max(truth) - case.problem(xb)[0])  # against the grid's best
        else:
            p_true = case.floor + (1 - case.floor) * norm.cdf(truth)
            score.mae = float(np.mean(np.abs(predicted - p_true)))
            score.brier = float(np.mean((predicted - p_true) ** 2 + p_true * (1 - p_true)))
            score.misclass = float(np.mean((predicted >= case.target) != (p_true >= case.target)))
            if case.threshold_problem:
                cs, as_ = np.linspace(-1, 1, N_C), np.linspace(-1, 1, N_A)
                dense = np.array([[c, a] for c in cs for a in as_])
                table = predict(client, names, dense, probability=True).reshape(N_C, N_A)

                def lookup(x: np.ndarray) -> np.ndarray:
                    ci = np.clip(np.rint((x[:, 0] + 1) / 2 * (N_C - 1)).astype(int), 0, N_C - 1)
                    ai = np.clip(np.rint((x[:, 1] + 1) / 2 * (N_A - 1)).astype(int), 0, N_A - 1)
                    return table[ci, ai]

                score.threshold_error = float(
                    observers.threshold_contour_error(
                        lookup, target=case.target, problem=case.threshold_problem, n_c=N_C, n_a=N_A
                    )
                )
    finally:
        client.close()
    return score


def predict(client: WireClient, names: list[str], points: np.ndarray, probability: bool) -> np.ndarray:
    """Posterior prediction at many points: in chunks where the server answers every x of one query
    (psyserve), one point per query where it cannot (AEPsych 0.8: "a Tensor with 2 elements cannot
    be converted to Scalar")."""
    out: list[float] = []
    step = 250 if client.multi_point else 1
    for start in range(0, len(points), step):
        chunk = points[start : start + step]
        x = {n: chunk[:, i].tolist() for i, n in enumerate(names)}
        try:
            reply = client.call("query", {"query_type": "prediction", "probability_space": probability, "x": x})
        except RuntimeError as exc:
            if not client.multi_point or "Scalar" not in str(exc):
                raise
            client.multi_point = False
            return predict(client, names, points, probability)
        y = np.ravel(np.asarray(reply["y"], dtype=float))
        if len(y) != len(chunk):
            raise RuntimeError(f"prediction answered {len(y)} values for {len(chunk)} points")
        out.extend(y.tolist())
    return np.asarray(out)


@dataclass
class Paired:
    psyserve: list[Score] = field(default_factory=list)
    aepsych: list[Score] = field(default_factory=list)


def mean_se(values: list[float], digits: int = 3) -> str:
    v = np.array([x for x in values if np.isfinite(x)])
    if len(v) == 0:
        return "    —        "
    if len(v) == 1:
        return f"{v[0]:.{digits}f}        "
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1) / np.sqrt(len(v)):.{digits}f}"


def sign_summary(diff: list[float]) -> str:
    """How often psyserve was better (lower) and the two-sided Wilcoxon signed-rank p of the
    paired differences: how far the mean difference stands out from the seed-to-seed noise."""
    v = np.array([x for x in diff if np.isfinite(x)])
    if len(v) < 5 or not np.any(v):
        return ""
    p = float(wilcoxon(v).pvalue)
    return f"{int((v < 0).sum())}/{len(v)} lower, p = {p:.2g}"


def report(name: str, paired: Paired) -> None:
    metrics = ["mae", "brier", "misclass", "threshold_error", "regret", "seconds_per_trial"]
    print(f"-- {name}: {len(paired.psyserve)} seeds (psyserve | AEPsych 0.8 | paired difference psyserve − AEPsych)")
    for m in metrics:
        ours = [getattr(s, m) for s in paired.psyserve]
        theirs = [getattr(s, m) for s in paired.aepsych]
        if not any(np.isfinite(ours)) and not any(np.isfinite(theirs)):
            continue
        diff = [a - b for a, b in zip(ours, theirs, strict=True)]
        print(f"   {m:<18} {mean_se(ours):>15} | {mean_se(theirs):>15} | {mean_se(diff):>15}  {sign_summary(diff)}")
    sys.stdout.flush()


def markdown_table(rows: list[tuple[str, Paired]]) -> str:
    """One line per case and metric: n seeds of each side, mean ± s.e., paired difference."""
    out = [
        "| case | metric | psyserve (n) | AEPsych 0.8 (n) | paired difference (n) | psyserve lower; Wilcoxon p |",
        "|---|---|---|---|---|---|",
    ]
    for name, paired in rows:
        for m in ("mae", "brier", "misclass", "threshold_error", "regret"):
            ours = [getattr(s, m) for s in paired.psyserve]
            theirs = [getattr(s, m) for s in paired.aepsych]
            if not any(np.isfinite(ours)) and not any(np.isfinite(theirs)):
                continue
            diff = [a - b for a, b in zip(ours, theirs, strict=True)]

            def n(v: list[float]) -> int:
                return int(np.isfinite(v).sum())

            out.append(
                f"| {name} | {m} | {mean_se(ours).strip()} ({n(ours)}) | {mean_se(theirs).strip()} ({n(theirs)}) "
                f"| {mean_se(diff).strip()} ({n(diff)}) | {sign_summary(diff)} |"
            )
    return "\n".join(out)


def checkout_commit() -> str:
    """This checkout's commit, "+dirty" when its tracked files differ from it ("" outside git)."""
    root = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return head + ("+dirty" if head and dirty.strip() else "")


def load_scores(path: Path) -> dict[tuple[str, str, int], Score]:
    """Per-seed scores written by --save: {(side, case, seed): Score} (the last line wins)."""
    out: dict[tuple[str, str, int], Score] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[(row["side"], row["case"], int(row["seed"]))] = Score(**row["score"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aepsych-venv", type=Path, default=Path("/work/venvs/aepsych"), help="venv with aepsych==0.8.0")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-list", type=int, nargs="+", default=None, help="these observer seeds instead of 1..--seeds")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--workers", type=int, default=1, help="psyserve model workers")
    parser.add_argument("--only", choices=["psyserve", "aepsych"], default=None, help="run one side only")
    parser.add_argument("--save", type=Path, default=None, help="append each run's scores as JSON lines to this file")
    parser.add_argument(
        "--trace", type=Path, default=None, help="write each run's trials (stimuli, outcomes) to DIR/SIDE-CASE-SEED.json"
    )
    parser.add_argument(
        "--from-saved",
        type=Path,
        nargs="+",
        default=None,
        help="run nothing: report both sides from these --save files (seeds a side lacks are left out of its "
        "figures and of the paired differences), with a Markdown table",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        default=None,
        help="take AEPsych's scores from a --save file where it has them (accuracy does not depend on load; "
        "AEPsych's runs are not bit-for-bit repeatable though: a saved run is one draw), run it where it has not",
    )
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so that the servers' context managers stop them (an orphaned
    # AEPsych server would busy-poll a core for ever)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stored = load_scores(args.reuse) if args.reuse else {}
    seeds = args.seed_list or list(range(1, args.seeds + 1))
    if args.from_saved:
        saved: dict[tuple[str, str, int], Score] = {}
        for path in args.from_saved:
            saved.update(load_scores(path))
        print(f"== paired accuracy benchmark from {[str(p) for p in args.from_saved]}, seeds {seeds}")
        rows = []
        for name in args.cases:
            paired = Paired(
                [saved.get(("psyserve", name, s), Score()) for s in seeds],
                [saved.get(("aepsych", name, s), Score()) for s in seeds],
            )
            report(name, paired)
            rows.append((name, paired))
        print(markdown_table(rows))
        return
    print(f"== paired accuracy benchmark, seeds {seeds}, {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}")

    commit = checkout_commit()

    if args.trace:
        args.trace.mkdir(parents=True, exist_ok=True)

    def write_trace(side: str, name: str, seed: int, trials: list[dict[str, object]] | None) -> None:
        if args.trace and trials is not None:
            (args.trace / f"{side}-{name}-{seed}.json").write_text(json.dumps({"commit": commit, "trials": trials}))

    def save(side: str, name: str, seed: int, score: Score) -> None:
        if args.save:  # with the commit: a seed's score repeats exactly only at the same code
            with open(args.save, "a") as out:
                out.write(json.dumps({"side": side, "case": name, "seed": seed, "score": score.__dict__, "commit": commit}) + "\n")

    for name in args.cases:
        case = CASES[name]
        paired = Paired()
        for seed in seeds:
            if args.only != "aepsych":
                trials: list[dict[str, object]] | None = [] if args.trace else None
                with psyserve_server(args.workers) as port:
                    paired.psyserve.append(run(port, case, seed, trials))
                save("psyserve", name, seed, paired.psyserve[-1])
                write_trace("psyserve", name, seed, trials)
            else:
                paired.psyserve.append(Score())
            if ("aepsych", name, seed) in stored:
                paired.aepsych.append(stored[("aepsych", name, seed)])
            elif args.only != "psyserve":
                trials = [] if args.trace else None
                try:
                    with aepsych_server(args.aepsych_venv) as port:
                        paired.aepsych.append(run(port, case, seed, trials))
                except (RuntimeError, ConnectionError, TimeoutError) as exc:  # recorded, not hidden
                    print(f"   {name} seed {seed}: AEPsych failed: {exc}", flush=True)
                    paired.aepsych.append(Score())
                else:
                    save("aepsych", name, seed, paired.aepsych[-1])
                    write_trace("aepsych", name, seed, trials)
            else:
                paired.aepsych.append(Score())
            ours, theirs = paired.psyserve[-1], paired.aepsych[-1]
            print(
                f"   {name} seed {seed}: psyserve MAE {ours.mae:.3f} Brier {ours.brier:.3f} misclass {ours.misclass:.3f} "
                f"({ours.seconds_per_trial:.2f} s/trial) | AEPsych MAE {theirs.mae:.3f} Brier {theirs.brier:.3f} "
                f"misclass {theirs.misclass:.3f} ({theirs.seconds_per_trial:.2f} s/trial)",
                flush=True,
            )
        report(name, paired)


if __name__ == "__main__":
    main()
