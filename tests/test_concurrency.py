"""Many clients at once: 8 with their own strategies, interleaved, plus 2 sharing one strategy."""

from __future__ import annotations

import asyncio
import sqlite3

import psyserve_client as pc
from conftest import ServerThread

CONFIG = """
[common]
parnames = [x, y]
outcome_types = [continuous]
strategy_names = [sobol]
[x]
lower_bound = 0
upper_bound = 1
[y]
lower_bound = -5
upper_bound = 5
[sobol]
generator = SobolGenerator
min_asks = 40
"""
TRIALS_EACH = 25


async def run_own_strategy(address: str, index: int) -> tuple[int, list[int]]:
    async with pc.AsyncClient(address, timeout=20) as client:
        sid = (await client.configure(config_str=CONFIG, config_name=f"worker-{index}")).strategy_id
        ids = []
        for i in range(TRIALS_EACH):
            trial = (await client.ask()).trials[0]
            ids.append(trial.trial_id)
            result = await client.tell(trial_id=trial.trial_id, outcome=float(trial.params["x"]) + index)  # type: ignore[arg-type]
            assert result.trials_completed == i + 1
            await asyncio.sleep(0)
        return sid, ids


async def run_shared(address: str, sid: int, count: int) -> list[int]:
    async with pc.AsyncClient(address, timeout=20) as client:
        ids = []
        for _ in range(count):
            trial = (await client.ask(strategy_id=sid)).trials[0]
            ids.append(trial.trial_id)
            await client.tell(trial_id=trial.trial_id, outcome=1.0, strategy_id=sid)
            # a retry of the same tell must not count twice
            again = await client.tell(trial_id=trial.trial_id, outcome=1.0, strategy_id=sid)
            assert again.duplicate
        return ids


async def test_interleaved_strategies_and_shared_strategy(server: ServerThread) -> None:
    address = server.address
    async with pc.AsyncClient(address) as setup:
        shared = (await setup.configure(config_str=CONFIG, config_name="shared")).strategy_id
    results = await asyncio.gather(
        *(run_own_strategy(address, i) for i in range(8)),
        run_shared(address, shared, 20),
        run_shared(address, shared, 20),
    )
    own = results[:8]
    shared_ids = results[8] + results[9]  # type: ignore[operator]
    # every strategy's trial ids are unique and consecutive
    for _sid, ids in own:  # type: ignore[misc]
        assert ids == list(range(1, TRIALS_EACH + 1))
    assert len({sid for sid, _ in own}) == 8  # type: ignore[misc]
    assert sorted(shared_ids) == list(range(1, 41))
    async with pc.AsyncClient(address) as check:
        summaries = {s.strategy_id: s for s in await check.list_strategies()}
        assert summaries[shared].trials_completed == 40 and summaries[shared].trials_pending == 0
        for sid, _ in own:  # type: ignore[misc]
            assert summaries[sid].trials_completed == TRIALS_EACH
    with sqlite3.connect(server.options.db) as db:
        tells = dict(db.execute("SELECT strategy_id, COUNT(*) FROM events WHERE kind = 'tell' GROUP BY strategy_id").fetchall())
    assert tells[shared] == 40
    assert all(tells[sid] == TRIALS_EACH for sid, _ in own)  # type: ignore[misc]
