"""Where does a pairwise accuracy difference come from: the model, or the pairs each server asked?

Reads the trials of `quality.py --trace` runs of the pairwise case (either server's) and fits both
servers' pairwise models on each run's trials: psyserve's PairwiseProbitModel in this process (a
fresh fit, as at a full refit), AEPsych 0.8's PairwiseProbitModel in its own venv
(`_aepsych_pairwise_driver.py`). Each fit is scored as `quality.py` scores a run (posterior mean
utility on its grid; MAE, Brier and misclassification of the preference probabilities of its
random grid pairs). Prints, per source of trials, both models' scores and their difference on the
same trials (the model effect), then, over the seeds traced on both sides, the difference between
psyserve's and AEPsych's trials with each model held fixed (the effect of the pairs asked).

Owns nothing the server uses; reads trace files and imports psyserve's compute layer.

    python benchmarks/pair_crossfit.py benchmarks/results/quality-2026-12-03/traces \\
        --aepsych-venv /work/venvs/aepsych
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from quality import CASES, mean_se, pairwise_scores, score_grid, sign_summary

from psyserve.compute.contract import PAIRWISE, ModelSpec
from psyserve.compute.models import fit_model

CASE = CASES["pairwise"]
METRICS = ("mae", "brier", "misclass")
Scores = dict[str, tuple[float, float, float]]  # run key ("psyserve-101") -> MAE, Brier, misclassified


def load(traces: Path, seeds: set[int] | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Run key -> (stimuli n x 2 x d, wire outcomes: 1 = the second stimulus preferred)."""
    runs = {}
    for path in sorted(traces.glob("*-pairwise-*.json")):
        side, _, seed = path.stem.split("-")
        if seeds is not None and int(seed) not in seeds:
            continue
        trials = json.loads(path.read_text())["trials"]
        runs[f"{side}-{seed}"] = (np.array([t["x"] for t in trials], float), np.array([t["outcome"] for t in trials], float))
    return runs


def psyserve_fits(runs: dict[str, tuple[np.ndarray, np.ndarray]], grid: np.ndarray, truth: np.ndarray, options: dict[str, str]) -> Scores:
    spec = ModelSpec(kind=PAIRWISE, dim=CASE.dim, options=options)
    unit = (grid - CASE.bounds[0]) / (CASE.bounds[1] - CASE.bounds[0])
    out = {}
    for key, (X, outcome) in runs.items():
        # psyserve's model reads y >= 0.5 as "the first stimulus won" (the wire's 0; see
        # transports/aepsych_tcp._pairwise_from_wire)
        unit_X = (X - CASE.bounds[0]) / (CASE.bounds[1] - CASE.bounds[0])
        fitted = fit_model(spec, unit_X, 1.0 - outcome, None, True)
        assert fitted.latent is not None
        mean = fitted.latent.mean_variance(torch.as_tensor(unit))[0].numpy().reshape(-1)
        out[key] = pairwise_scores(mean, truth)
    return out


def aepsych_fits(runs: dict[str, tuple[np.ndarray, np.ndarray]], grid: np.ndarray, truth: np.ndarray, venv: Path, jobs: int) -> Scores:
    driver = Path(__file__).resolve().parent / "_aepsych_pairwise_driver.py"
    keys = sorted(runs)
    chunks = [keys[i::jobs] for i in range(jobs)]

    def fit(chunk: list[str]) -> dict[str, list[float]]:
        job = {
            "grid": grid.tolist(),
            "lb": [CASE.bounds[0]] * CASE.dim,
            "ub": [CASE.bounds[1]] * CASE.dim,
            "runs": [{"key": k, "X": runs[k][0].tolist(), "outcome": runs[k][1].tolist()} for k in chunk],
        }
        done = subprocess.run(
            [str(venv / "bin" / "python"), str(driver)],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=60 * len(chunk) + 120,
            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        )
        if done.returncode != 0:
            raise RuntimeError(f"AEPsych driver failed: {done.stderr[-2000:]}")
        result: dict[str, list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    out: Scores = {}
    with ThreadPoolExecutor(jobs) as pool:
        for means in pool.map(fit, [c for c in chunks if c]):
            for key, mean in means.items():
                out[key] = pairwise_scores(np.asarray(mean), truth)
    return out


def option_item(item: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value); the model reads its options from strings too."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise SystemExit(f"--model-option: expected KEY=VALUE, got {item!r}")
    return key, value


def summary(values: list[float]) -> str:
    return mean_se(values, digits=4)


def paired(diff: list[float]) -> str:
    signs = sign_summary(diff)
    return f"{summary(diff)} ({signs})" if signs else summary(diff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", type=Path)
    parser.add_argument("--aepsych-venv", type=Path, help="venv with aepsych==0.8.0 (without: psyserve's fits only)")
    parser.add_argument("--seed-list", type=int, nargs="+", help="only these seeds (default: every traced run)")
    parser.add_argument("--jobs", type=int, default=2, help="AEPsych driver processes")
    parser.add_argument("--save", type=Path, help="write every run's scores (per model) to this JSON file")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a --save file of an earlier run: also print this run's psyserve fits − that file's, on the same trials",
    )
    parser.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of psyserve's model (a ModelSpec option, e.g. fit_ftol=2.2e-9 or laplace=botorch); repeatable",
    )
    args = parser.parse_args()
    runs = load(args.traces, set(args.seed_list) if args.seed_list else None)
    if not runs:
        sys.exit(f"no pairwise traces in {args.traces}")
    grid = score_grid(CASE)
    truth = CASE.problem(grid)
    t0 = time.perf_counter()
    options = dict(option_item(item) for item in args.model_option)
    ours = psyserve_fits(runs, grid, truth, options)
    t1 = time.perf_counter()
    theirs = aepsych_fits(runs, grid, truth, args.aepsych_venv, max(1, args.jobs)) if args.aepsych_venv else {}
    t2 = time.perf_counter()
    aepsych_each = f", AEPsych {(t2 - t1) * args.jobs / len(runs):.2f} s each" if theirs else ""
    print(f"{len(runs)} traced runs; psyserve model options {options or 'default'}; fits: psyserve {(t1 - t0) / len(runs):.2f} s each{aepsych_each}")
    if args.save:
        args.save.write_text(json.dumps({"options": options, "psyserve": ours, "aepsych": theirs}, indent=0))
    if args.baseline:
        saved = json.loads(args.baseline.read_text())["psyserve"]
        base: Scores = {k: (float(v[0]), float(v[1]), float(v[2])) for k, v in saved.items()}
        keys = sorted(k for k in runs if k in base)
        print(f"\n-- psyserve's fits with these options − those of {args.baseline.name} ({len(keys)} runs, the same trials)")
        for i, m in enumerate(METRICS):
            print(f"   {m:<9} {paired([ours[k][i] - base[k][i] for k in keys])}")
    if not theirs:
        return
    print("\n-- the model on the same trials (psyserve model | AEPsych model | psyserve − AEPsych model)")
    for source in ("psyserve", "aepsych", "all"):
        keys = sorted(k for k in runs if source == "all" or k.startswith(source + "-"))
        if len(keys) < 2:
            continue
        print(f"   trials of {source} ({len(keys)} runs)")
        for i, m in enumerate(METRICS):
            a, b = [ours[k][i] for k in keys], [theirs[k][i] for k in keys]
            print(f"      {m:<9} {summary(a)} | {summary(b)} | {paired([x - y for x, y in zip(a, b, strict=True)])}")
    seeds = sorted({k.split("-")[1] for k in runs if f"psyserve-{k.split('-')[1]}" in runs and f"aepsych-{k.split('-')[1]}" in runs})
    if len(seeds) >= 2:
        print(f"\n-- the pairs asked, one model held ({len(seeds)} seeds traced on both sides): psyserve's trials − AEPsych's")
        for name, scores in (("psyserve model", ours), ("AEPsych model", theirs)):
            for i, m in enumerate(METRICS):
                diff = [scores[f"psyserve-{s}"][i] - scores[f"aepsych-{s}"][i] for s in seeds]
                print(f"   {name:<15} {m:<9} {paired(diff)}")


if __name__ == "__main__":
    main()
