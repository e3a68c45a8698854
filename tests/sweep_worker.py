"""A sweep worker process for tests/test_sweeps.py: pulls indices with the client's worker loop.

usage: sweep_worker.py ADDRESS STRATEGY_ID TTL LOG [hang]
Each job sleeps briefly and reports metrics derived from its parameters; it appends
"start <index> <trial_id>" and "done <index> <trial_id>" lines to LOG. With `hang`, the first job
never finishes (the test SIGKILLs this process mid-job).
"""

from __future__ import annotations

import sys
import time

from psyserve_client import Client


def main() -> None:
    address, sid, ttl, log = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    hang = len(sys.argv) > 5 and sys.argv[5] == "hang"
    with Client(address) as client, open(log, "a", buffering=1) as out:
        for trial in client.sweep(sid, ttl=ttl, poll_seconds=0.1):
            out.write(f"start {trial.index} {trial.trial_id}\n")
            if hang:
                time.sleep(3600)
            time.sleep(0.02)
            p = trial.params
            score = float(p["alpha"]) * 10 + float(p["lambda"]) + trial.run
            trial.report({"score": score, "curve": [score * k for k in range(1, 6)]})
            out.write(f"done {trial.index} {trial.trial_id}\n")


if __name__ == "__main__":
    main()
