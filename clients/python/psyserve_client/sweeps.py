"""Parameter sweeps on the client: a worker loop (`for trial in client.sweep(...)`) and result tables.

The server owns the sweep (indices, leases, results, aggregation); this module only pulls trials,
reports metrics and shapes GetSweepResults replies into pandas objects. pandas is imported lazily:
it is the optional extra `psyserve-client[sweeps]`, needed only for the table methods.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._common import SweepResultsData, Trial, Value

if TYPE_CHECKING:
    import pandas as pd

    from .client import AsyncClient, Client


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("sweep result tables need pandas: pip install 'psyserve-client[sweeps]'") from exc
    return pandas


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class SweepResults:
    """GetSweepResults, as tables. `frame()`: one row per permutation, parameter columns then
    `<metric>` (mean), `<metric>.sem`, `<metric>.count`; `runs_frame()`: one row per (index, run)."""

    data: SweepResultsData
    parameter_names: list[str] = field(default_factory=list)

    @property
    def best_permutation(self) -> int | None:
        return self.data.best_permutation

    @property
    def metric_names(self) -> list[str]:
        names: dict[str, None] = {}
        for p in self.data.permutations:
            names.update(dict.fromkeys(p.metrics))
        return list(names)

    def best(self, metric: str, mode: str = "max") -> dict[str, Any]:
        """The permutation with the highest (mode="max") or lowest mean of `metric`: its
        parameters, permutation number, mean, sem and count (ties: the lowest permutation)."""
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be max or min, got {mode!r}")
        scored = [(p.metrics[metric].mean, p) for p in self.data.permutations if metric in p.metrics]
        if not scored:
            raise KeyError(f"no permutation reported metric {metric!r}")
        target = max(m for m, _ in scored) if mode == "max" else min(m for m, _ in scored)
        best = min((p for m, p in scored if m == target), key=lambda p: p.permutation)
        s = best.metrics[metric]
        return {"permutation": best.permutation, **best.parameters, "mean": s.mean, "sem": s.sem, "count": s.count}

    def frame(self) -> pd.DataFrame:
        pandas = _pandas()
        rows = []
        for p in self.data.permutations:
            row: dict[str, Any] = {"permutation": p.permutation, **p.parameters, "runs_done": p.runs_done}
            for name, s in p.metrics.items():
                row[name], row[f"{name}.sem"], row[f"{name}.count"] = s.mean, s.sem, s.count
            rows.append(row)
        return pandas.DataFrame(rows).set_index("permutation") if rows else pandas.DataFrame()

    def runs_frame(self) -> pd.DataFrame:
        """One row per (index, run) with a result: index, run, permutation, trial_id, the
        permutation's parameters and each metric (a series summarised over the asked window)."""
        pandas = _pandas()
        params = {p.permutation: p.parameters for p in self.data.permutations}
        rows = [
            {"index": r.index, "run": r.run, "permutation": r.permutation, "trial_id": r.trial_id, **params.get(r.permutation, {}), **r.metrics}
            for r in self.data.runs
        ]
        return pandas.DataFrame(rows)

    def to_csv(self, path: str) -> int:
        """Write runs_frame() as CSV (one row per (index, run)); return the number of rows."""
        df = self.runs_frame()
        df.to_csv(path, index=False)
        return len(df)

    def split_over(self, parameter: str) -> dict[Value, pd.DataFrame]:
        """PyExpUtils' splitOverParameter: {value of `parameter`: the permutations with that value}."""
        df = self.frame()
        if parameter not in df.columns:
            raise KeyError(f"unknown parameter {parameter!r} (known: {self.parameter_names or list(df.columns)})")
        return {value: group for value, group in df.groupby(parameter, sort=False)}

    def slice_over(self, parameter: str, fixed: Mapping[str, Value] | None = None, metric: str | None = None) -> pd.DataFrame:
        """PyExpUtils' sliceOverParameter: the permutations whose other parameters equal `fixed`,
        indexed by the value of `parameter` (in the sweep's listed order). With `metric`: only
        that metric's mean / sem / count columns."""
        df = self.frame()
        if parameter not in df.columns:
            raise KeyError(f"unknown parameter {parameter!r}")
        mask = None
        for name, value in (fixed or {}).items():
            if name not in df.columns:
                raise KeyError(f"unknown parameter {name!r} in fixed")
            m = df[name] == value
            mask = m if mask is None else mask & m
        sliced = df[mask] if mask is not None else df
        if sliced[parameter].duplicated().any():
            others = [n for n in self.parameter_names if n != parameter and n not in (fixed or {})]
            raise ValueError(f"slice_over({parameter!r}): fix the other swept parameters {others} to get one row per value")
        sliced = sliced.set_index(parameter)
        if metric is not None:
            sliced = sliced[[metric, f"{metric}.sem", f"{metric}.count"]]
        return sliced


# ---------------------------------------------------------------------- the worker loop
class SweepTrial:
    """One handed-out sweep index: `params`, `index`, `run`, `permutation`, `trial_id`; call
    `report(metrics)` once (a metric is a number or a sequence of numbers, e.g. a learning curve)."""

    def __init__(self, client: Client, strategy_id: int, trial: Trial) -> None:
        # the client, not the loop: a bare `for` loop object must die with the loop (see SweepLoop)
        self._client = client
        self._strategy_id = strategy_id
        self.trial = trial
        self.trial_id = trial.trial_id
        self.params: dict[str, Value] = dict(trial.params)
        self.index: int = trial.sweep_index or 0
        self.run: int = trial.sweep_run or 0
        self.permutation: int = trial.sweep_permutation or 0
        self.reported = False

    def report(self, metrics: Mapping[str, float | Sequence[float]], **metadata: Any) -> bool:
        """Tell the trial's metrics; returns False when the index already had a result (a late
        report after the lease ran out and another worker finished it: not counted twice)."""
        result = self._client.tell(trial_id=self.trial_id, outcome=dict(metrics), strategy_id=self._strategy_id, **metadata)
        self.reported = True
        return not result.duplicate

    def __enter__(self) -> SweepTrial:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        """`with trial:` around the body: an exception marks the trial failed with its text and is
        swallowed, so the loop goes on to the next index (KeyboardInterrupt: abandoned, re-raised)."""
        if exc is None or self.reported:
            return False
        if not isinstance(exc, Exception):
            self._client.abandon_trial(self.trial_id, reason="worker interrupted", strategy_id=self._strategy_id)
            self.reported = True
            return False
        self.fail("".join(traceback.format_exception_only(type(exc), exc)).strip())
        return True

    def fail(self, reason: str) -> None:
        """Mark the trial failed (it is not handed out again; ListMissingResults lists it)."""
        self._client.abandon_trial(self.trial_id, failed=True, reason=reason[:1000], strategy_id=self._strategy_id)
        self.reported = True


class SweepLoop:
    """`for trial in client.sweep(strategy_id, ttl=60): trial.report(run(**trial.params))`.

    Asks for the next index (with a lease of `ttl` seconds), waits while every remaining index is
    leased to another worker, and stops when the sweep is finished. A trial left unreported when
    the loop moves on is abandoned (handed out again).

    Exceptions in the body mark the trial failed (AbandonTrial failed=True) with the error text:
    - `with trial:` inside the loop: the exception is recorded and swallowed, the loop goes on;
    - `with client.sweep(...) as trials: for trial in trials:` the exception is recorded and ends
      the loop (it propagates);
    - a bare `for`: Python does not show the iterator the exception; the loop object is released
      as the exception leaves the loop (trials do not hold it), and an unreported trial is then
      marked failed with a generic reason instead of the error text (a `break` before report()
      does the same).
    """

    def __init__(self, client: Client, strategy_id: int, ttl: float, poll_seconds: float, max_wait_seconds: float | None) -> None:
        self.client = client
        self.strategy_id = strategy_id
        self.ttl = ttl
        self.poll_seconds = poll_seconds
        self.max_wait_seconds = max_wait_seconds
        self.current: SweepTrial | None = None
        self.trials_run = 0

    def __iter__(self) -> Iterator[SweepTrial]:
        return self

    def _settle(self, error: BaseException | None) -> None:
        trial, self.current = self.current, None
        if trial is None or trial.reported:
            return
        if error is None or not isinstance(error, Exception):
            self.client.abandon_trial(trial.trial_id, failed=False, reason="not reported by the worker loop", strategy_id=self.strategy_id)
        else:
            text = "".join(traceback.format_exception_only(type(error), error)).strip()
            trial.fail(text)

    def __next__(self) -> SweepTrial:
        self._settle(None)
        waited = 0.0
        while True:
            ask = self.client.ask(strategy_id=self.strategy_id, ttl_seconds=self.ttl)
            if ask.trials:
                self.current = SweepTrial(self.client, self.strategy_id, ask.trials[0])
                self.trials_run += 1
                return self.current
            if ask.is_finished:
                raise StopIteration
            if self.max_wait_seconds is not None and waited >= self.max_wait_seconds:
                raise StopIteration
            pause = min(max(ask.retry_after_seconds, 0.01), self.poll_seconds)
            time.sleep(pause)
            waited += pause

    def close(self, error: BaseException | None = None) -> None:
        self._settle(error)

    def __enter__(self) -> SweepLoop:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.close(exc)

    def __del__(self) -> None:  # a bare `for` left by an exception or break: failed, without the text
        if getattr(self, "current", None) is not None and not self.current.reported:  # type: ignore[union-attr]
            try:
                self._settle(RuntimeError("the worker loop was left before report() (an exception in the loop body?)"))
            except Exception:
                pass


# ---------------------------------------------------------------------- the asyncio worker loop
class AsyncSweepTrial:
    """SweepTrial for AsyncClient: `await trial.report(metrics)`, `async with trial:`."""

    def __init__(self, client: AsyncClient, strategy_id: int, trial: Trial) -> None:
        self._client = client
        self._strategy_id = strategy_id
        self.trial = trial
        self.trial_id = trial.trial_id
        self.params: dict[str, Value] = dict(trial.params)
        self.index: int = trial.sweep_index or 0
        self.run: int = trial.sweep_run or 0
        self.permutation: int = trial.sweep_permutation or 0
        self.reported = False

    async def report(self, metrics: Mapping[str, float | Sequence[float]], **metadata: Any) -> bool:
        result = await self._client.tell(trial_id=self.trial_id, outcome=dict(metrics), strategy_id=self._strategy_id, **metadata)
        self.reported = True
        return not result.duplicate

    async def fail(self, reason: str) -> None:
        await self._client.abandon_trial(self.trial_id, failed=True, reason=reason[:1000], strategy_id=self._strategy_id)
        self.reported = True

    async def abandon(self, reason: str) -> None:
        await self._client.abandon_trial(self.trial_id, failed=False, reason=reason[:1000], strategy_id=self._strategy_id)
        self.reported = True

    async def __aenter__(self) -> AsyncSweepTrial:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None or self.reported:
            return False
        if not isinstance(exc, Exception):  # cancelled / interrupted: handed out again
            await self.abandon("worker interrupted")
            return False
        await self.fail("".join(traceback.format_exception_only(type(exc), exc)).strip())
        return True


class AsyncSweepLoop:
    """`async for trial in client.sweep(sid, ttl=60): await trial.report({...})` (see SweepLoop);
    `async with trial:` records an exception's text and goes on. A trial left unreported when the
    loop moves on is abandoned (handed out again)."""

    def __init__(self, client: AsyncClient, strategy_id: int, ttl: float, poll_seconds: float, max_wait_seconds: float | None) -> None:
        self.client = client
        self.strategy_id = strategy_id
        self.ttl = ttl
        self.poll_seconds = poll_seconds
        self.max_wait_seconds = max_wait_seconds
        self.current: AsyncSweepTrial | None = None
        self.trials_run = 0

    def __aiter__(self) -> AsyncSweepLoop:
        return self

    async def __anext__(self) -> AsyncSweepTrial:
        trial, self.current = self.current, None
        if trial is not None and not trial.reported:
            await trial.abandon("not reported by the worker loop")
        waited = 0.0
        while True:
            ask = await self.client.ask(strategy_id=self.strategy_id, ttl_seconds=self.ttl)
            if ask.trials:
                self.current = AsyncSweepTrial(self.client, self.strategy_id, ask.trials[0])
                self.trials_run += 1
                return self.current
            if ask.is_finished or (self.max_wait_seconds is not None and waited >= self.max_wait_seconds):
                raise StopAsyncIteration
            pause = min(max(ask.retry_after_seconds, 0.01), self.poll_seconds)
            await asyncio.sleep(pause)
            waited += pause
