"""Trial leases: a trial asked with ttl_seconds and never told is abandoned and its point reissued."""

from __future__ import annotations

import time

import psyserve_client as pc
from conftest import ServerThread

CONFIG = """
[common]
parnames = [x]
outcome_types = [continuous]
strategy_names = [sweep]
[x]
lower_bound = 0
upper_bound = 10
[sweep]
generator = ManualGenerator
points = [[1], [2], [3]]
"""


def wait_for_state(client: pc.Client, trial_id: int, state: str, timeout: float = 5.0) -> pc.Trial:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trial = next(t for t in client.list_trials() if t.trial_id == trial_id)
        if trial.state == state:
            return trial
        time.sleep(0.05)
    raise AssertionError(f"trial {trial_id} did not become {state}")


def test_expired_lease_abandons_and_reissues(server: ServerThread) -> None:
    with pc.Client(server.address, timeout=10) as client:
        client.configure(config_str=CONFIG)
        leased = client.ask(ttl_seconds=0.3).trials[0]  # a worker that will die
        kept = client.ask(ttl_seconds=30).trials[0]
        assert (leased.params, kept.params) == ({"x": 1.0}, {"x": 2.0})
        client.tell(trial_id=kept.trial_id, outcome=0.2)
        abandoned = wait_for_state(client, leased.trial_id, "abandoned")
        assert abandoned.metadata["abandon_reason"] == "lease expired"
        # the lost point is handed out again before new ones, under a new trial id
        again = client.ask().trials[0]
        assert again.params == {"x": 1.0} and again.trial_id == 3
        third = client.ask()
        assert third.trials[0].params == {"x": 3.0} and third.is_finished
        # a late tell of the abandoned trial is still recorded
        late = client.tell(trial_id=leased.trial_id, outcome=0.5)
        assert late.trials_recorded == 1
        states = {t.trial_id: t.state for t in client.list_trials()}
        assert states == {1: "completed", 2: "completed", 3: "pending", 4: "pending"}
