"""Do psyserve and AEPsych 0.8 ask the same initial trials for the same config seed?

For each of quality.py's cases and each seed, both servers get the same INI over AEPsych's JSON/TCP
protocol (psyserve through `--aepsych-port`), and each SobolGenerator trial is asked and told (outcome
0 or 1 alternately; continuous cases a number) until the model phase starts. Prints the largest
coordinate difference per case and seed as a share of the parameter range (psyserve's port of
torch's engine agrees with torch to float32 rounding, < 1e-7; before it drew SciPy's scramble, and
the trials differed by up to 0.9 of the range). Nothing here is timed.

With --ax-python (a venv with ax-platform==1.3.1), the same for the Ax facade: Ax's own
AxClient(random_seed=s) and psyserve_client.ax.AxClient(random_seed=s) on Branin's box, their
first 5 (Sobol) trials.

Usage: python benchmarks/sobol_parity.py --aepsych-venv /work/venvs/aepsych [--seeds 1 2 3] [--cases pairwise det_mclse]
           [--ax-python /work/venvs/ax/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
from quality import CASES, Case, aepsych_server, config_for, psyserve_server

from _harness import WireClient, server_process


def initial_trials(port: int, case: Case, seed: int) -> np.ndarray:
    """The case's init trials as asked: n x stimuli x d."""
    names = [f"x{i}" for i in range(case.dim)]
    client = WireClient(port)
    try:
        client.call("setup", {"config_str": config_for(case, seed)})
        out = []
        for i in range(case.init):
            config = client.call("ask", {"num_points": 1})["config"]
            assert isinstance(config, dict)
            stimuli = 2 if case.pairwise else 1
            point = np.array([[float(np.ravel(config[n])[k]) for n in names] for k in range(stimuli)])
            out.append(point)
            outcome: float = 0.5 * i if case.regression else i % 2
            tell = {n: [point[:, j].tolist()] if case.pairwise else [float(point[0, j])] for j, n in enumerate(names)}
            client.call("tell", {"config": tell, "outcome": outcome})
        return np.array(out)
    finally:
        client.close()


BRANIN_BOX = [{"name": "x1", "type": "range", "bounds": [-5.0, 10.0]}, {"name": "x2", "type": "range", "bounds": [0.0, 15.0]}]
AX_SIDE = """
import json, sys
from ax.service.ax_client import AxClient, ObjectiveProperties
c = AxClient(random_seed=int(sys.argv[1]), verbose_logging=False)
c.create_experiment(name="b", parameters=json.loads(sys.argv[2]), objectives={"y": ObjectiveProperties(minimize=True)})
out = []
for i in range(5):
    p, t = c.get_next_trial()
    out.append([p["x1"], p["x2"]])
    c.complete_trial(t, raw_data={"y": (float(i), 0.0)})
print(json.dumps(out))
"""


def ax_trials(ax_python: str, seed: int) -> np.ndarray:
    done = subprocess.run([ax_python, "-c", AX_SIDE, str(seed), json.dumps(BRANIN_BOX)], capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return np.array(json.loads(done.stdout.strip().splitlines()[-1]))


def facade_trials(seed: int) -> np.ndarray:
    from psyserve_client.ax import AxClient, ObjectiveProperties

    with server_process("--workers", "1") as (address, _):
        client = AxClient(address=address, random_seed=seed)
        client.create_experiment(name="b", parameters=BRANIN_BOX, objectives={"y": ObjectiveProperties(minimize=True)})
        out = []
        for i in range(5):
            params, trial = client.get_next_trial()
            out.append([params["x1"], params["x2"]])
            client.complete_trial(trial, raw_data={"y": (float(i), 0.0)})
        return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aepsych-venv", type=Path, default=Path("/work/venvs/aepsych"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    default_cases = ["det_mclse", "disc_mclse", "det4d_mclse", "h6_mclse", "h6_regression", "pairwise"]
    parser.add_argument("--cases", nargs="+", default=default_cases, choices=list(CASES))
    parser.add_argument("--ax-python", default=None, help="also compare the Ax facade with Ax 1.3 (this venv's python)")
    args = parser.parse_args()
    worst = 0.0
    for name in args.cases:
        case = CASES[name]
        for seed in args.seeds:
            with psyserve_server(1) as port:
                ours = initial_trials(port, case, seed)
            with aepsych_server(args.aepsych_venv) as port:
                theirs = initial_trials(port, case, seed)
            diff = float(np.abs(ours - theirs).max()) / (case.bounds[1] - case.bounds[0])
            worst = max(worst, diff)
            print(f"{name:<14} seed {seed}: {len(ours)} initial trials x {ours.shape[1]} stimuli x {case.dim}-D, "
                  f"largest difference {diff:.1e} of the range", flush=True)
    if args.ax_python:
        for seed in args.seeds:
            diff = float(np.abs(facade_trials(seed) - ax_trials(args.ax_python, seed)).max()) / 15.0
            worst = max(worst, diff)
            print(f"Ax facade, Branin box, seed {seed}: 5 Sobol trials, largest difference {diff:.1e} of the range", flush=True)
    print(f"largest difference over all: {worst:.1e} of the range ({'the same trials' if worst < 1e-6 else 'DIFFERENT trials'})")


if __name__ == "__main__":
    main()
