"""Which pairs each server asked in `quality.py --trace` runs of the pairwise case: per side, the mean
over seeds of the model phase's |u(x1) - u(x2)| (true utility difference), the distance between the
two stimuli, the share of coordinates on an edge of the square and the share of repeated pairs.

Owns nothing the server uses; reads trace files only.

    python benchmarks/pair_stats.py benchmarks/results/quality-2026-12-03/traces
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from quality import CASES

INIT = CASES["pairwise"].init  # the Sobol trials before the model phase


def seed_stats(path: Path) -> dict[str, float]:
    trials = json.loads(path.read_text())["trials"][INIT:]
    X = np.array([t["x"] for t in trials], dtype=float)  # n x 2 x d
    u = CASES["pairwise"].problem
    repeated = [any(np.allclose(X[i], X[j], atol=1e-3) for j in range(i)) for i in range(len(X))]
    return {
        "|du|": float(np.mean(np.abs(u(X[:, 0]) - u(X[:, 1])))),
        "distance": float(np.mean(np.linalg.norm(X[:, 0] - X[:, 1], axis=1))),
        "on an edge": float(np.mean((X < 0.02) | (X > 0.98))),
        "repeated pair": float(np.mean(repeated)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("traces", type=Path)
    args = parser.parse_args()
    for side in ("psyserve", "aepsych"):
        rows = [seed_stats(p) for p in sorted(args.traces.glob(f"{side}-pairwise-*.json"))]
        if not rows:
            continue
        for key in rows[0]:
            v = np.array([r[key] for r in rows])
            print(f"{side:<9} {len(v):>3} seeds  {key:<14} {v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(len(v)):.3f}")


if __name__ == "__main__":
    main()
