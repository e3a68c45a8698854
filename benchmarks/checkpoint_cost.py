"""What journaling the model state costs per model ask (the price of exact repeats across restarts).

Each model ask now also (1) encodes the fitted state in the compute worker (compute.checkpoint,
timed here on real fitted states: GP classification with its variational parameters, which grow
with the number of inducing points up to 100, and a pairwise probit) and (2) writes it to the
journal in the ask's own transaction (timed here: a one-trial ask event alone, as before, against
the same event plus the state, sequential appends on a temporary SQLite file, WAL +
synchronous=FULL). Decoding happens once per rebuild (restart, eviction). Timing: run under the
benchmark lock.

    flock /work/bench.lock nice -n 0 .venv/bin/python benchmarks/checkpoint_cost.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from _harness import percentile
from psyserve.compute import ModelSpec, TrainingData, fit_state
from psyserve.compute.checkpoint import decode_state, encode_state
from psyserve.compute.jobs import worker_init
from psyserve.journal import Event, Journal, ModelStateWrite


def fitted_states() -> list[tuple[str, object]]:
    rng = np.random.default_rng(0)
    out: list[tuple[str, object]] = []
    for n in (20, 60, 150):
        X = rng.random((n, 2))
        y = (rng.random(n) < X[:, 0]).astype(float)
        state, _ = fit_state(ModelSpec(kind="GPClassificationModel", dim=2), TrainingData(X=X, y=y), 1)
        out.append((f"GPClassificationModel, {n} trials", state))
    X = rng.random((40, 2, 2))
    y = (rng.random(40) < 0.5).astype(float)
    state, _ = fit_state(ModelSpec(kind="PairwiseProbitModel", dim=2), TrainingData(X=X, y=y), 1)
    out.append(("PairwiseProbitModel, 40 trials", state))
    return out


def codec_ms(state: object, repeats: int) -> tuple[float, float, int]:
    blob = encode_state(state)  # type: ignore[arg-type]
    assert decode_state(blob) == state
    enc, dec = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encode_state(state)  # type: ignore[arg-type]
        t1 = time.perf_counter()
        decode_state(blob)
        dec.append(time.perf_counter() - t1)
        enc.append(t1 - t0)
    return 1e3 * statistics.median(enc), 1e3 * statistics.median(dec), len(blob)


async def append_ms(blobs: list[bytes], appends: int) -> dict[int, list[float]]:
    """Sequential ask appends, each size (0 = no state) in turn; per size, the latencies."""
    with tempfile.TemporaryDirectory() as tmp:
        journal = await Journal.open(Path(tmp) / "cost.db")
        times: dict[int, list[float]] = {len(b): [] for b in blobs}
        try:
            await journal.append([Event(1, "configure", {"name": "cost"})])
            trial = 0
            for _ in range(appends):
                for blob in blobs:
                    trial += 1
                    event = Event(1, "ask", {"phase_index": 1, "stimuli": [{"x0": 0.1234567, "x1": 0.7654321}]}, trial_id=trial)
                    state = ModelStateWrite(1, trial, blob) if blob else None
                    t0 = time.perf_counter()
                    await journal.append([event], state)
                    times[len(blob)].append(time.perf_counter() - t0)
        finally:
            await journal.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50, help="codec timings per state")
    parser.add_argument("--appends", type=int, default=200, help="journal appends per state size")
    args = parser.parse_args()
    worker_init()  # one BLAS thread, as in a pool worker
    print(f"== model-state journaling cost, {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}")
    states = fitted_states()
    blobs = [b""]
    print("| state | bytes | encode (worker) ms | decode (per rebuild) ms |\n|---|---|---|---|")
    for name, state in states:
        enc, dec, size = codec_ms(state, args.repeats)
        blobs.append(encode_state(state))  # type: ignore[arg-type]
        print(f"| {name} | {size:,} | {enc:.2f} | {dec:.2f} |")
    times = asyncio.run(append_ms(blobs, args.appends))
    print("\n| ask append | p50 ms | p99 ms |\n|---|---|---|")
    for size, values in times.items():
        label = "event only (before)" if size == 0 else f"event + {size:,}-byte state"
        print(f"| {label} | {1e3 * percentile(values, 50):.2f} | {1e3 * percentile(values, 99):.2f} |")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
