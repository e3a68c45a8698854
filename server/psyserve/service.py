"""ExperimentService: the one transport-free async API every transport calls.

Owns strategies keyed by id, per-strategy locks, request validation, idempotency and the order
"journal first, then state, then reply"; hands transports immutable views, never a live Strategy,
and journal failures as service errors. Knows nothing of gRPC, JSON/TCP or SQL statements.

Strategies live in memory only while they are in use: every strategy is known by its index entry
(id, name, its last summary), its state is rebuilt from its own journal events on first access and
dropped again when it is idle (psyserve.residency decides when); nothing that is not durably in the
journal is ever dropped.

Longer than ~500 lines on purpose: it is one class, the domain API, whose methods share one
discipline (validate, take the strategy lock, journal, apply, answer with a view); its result
types sit beside it because transports import them from here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from . import optimization_spec
from .config import ConfigError, ExperimentSpec, parse_config
from .errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from .journal import Event, Journal, JournalError, JournalFull, ModelStateWrite, decode_rows
from .optimization_spec import (
    DEFAULT_RAW_SAMPLES,
    DEFAULT_RESTARTS,
    OptimizationConfigError,
    TypedExperiment,
    typed_to_ini,
)
from .params import OutcomeValue, ParameterSpec, ParameterValueError, Stimulus
from .residency import Residency, from_plain, to_plain
from .strategy import ABANDONED, COMPLETED, FAILED, PENDING, Strategy, TrialRecord
from .sweep import (
    MAX_INDICES,
    MissingResults,
    SweepConfigError,
    SweepResults,
    SweepSpec,
    SweepStrategy,
    SweepView,
    parse_sweep_ini,
    parse_sweep_json,
    sweep_section,
)

# the typed (Ax-style) experiment config, as transports build it
TypedParameter = optimization_spec.TypedParameter
TypedObjective = optimization_spec.TypedObjective

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_strategies: int = 10_000
    max_points_per_ask: int = 1_000
    max_metadata_entries: int = 64
    max_metadata_bytes: int = 16 * 1024
    max_name_length: int = 256
    max_sweep_metrics: int = 256
    max_series_points: int = 100_000  # per tell, all metrics together
    max_resident_strategies: int = 1000  # strategies held in memory; the least recently used others wait in the journal
    evict_idle_seconds: float = 300.0  # a strategy unused this long leaves memory (it comes back on its next request)


@dataclass(frozen=True)
class PhaseView:
    index: int
    name: str
    generator: str
    model: str
    acqf: str
    asks: int
    finished: bool


@dataclass(frozen=True)
class ExperimentShape:
    """What a transport needs of an experiment's config: its parameters and outcomes."""

    parameters: tuple[ParameterSpec, ...]
    stimuli_per_trial: int
    outcome_names: tuple[str, ...]
    outcome_types: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parameters]

    @classmethod
    def of(cls, spec: ExperimentSpec) -> ExperimentShape:
        return cls(tuple(spec.space.parameters), spec.stimuli_per_trial, tuple(spec.outcome_names), tuple(spec.outcome_types))


@dataclass(frozen=True)
class StrategyView:
    strategy_id: int
    name: str
    metadata: dict[str, str]
    phases: list[PhaseView]
    current_phase_index: int
    is_finished: bool
    trials_asked: int
    trials_completed: int
    trials_pending: int
    model_data_points: int
    created_at: float
    shape: ExperimentShape
    can_fit: bool
    model_asks: int = 0  # model-based asks answered since the server started
    precomputed_asks: int = 0  # ... of which from a speculative branch computed before the ask
    last_activity: float = 0.0  # time of the last ask or tell (the strategy's creation before any)
    sweep: SweepView | None = None  # parameter sweeps only
    seed: int = 0  # the experiment seed: the config's, or drawn by the server (journaled) when it sets none
    seed_from_config: bool = False
    optimization: OptimizationView | None = None  # Ax-style experiments only
    resident: bool = True  # False: its trials are not in memory now (evicted; this is its last summary)


@dataclass(frozen=True)
class OptimizationView:
    """An optimisation experiment's objectives (metric, minimize, threshold), constraints (as text)
    and generation strategy, as a transport shows them."""

    objectives: tuple[tuple[str, bool, float | None], ...]
    parameter_constraints: tuple[str, ...]
    outcome_constraints: tuple[str, ...]
    tracking_metrics: tuple[str, ...]
    method: str
    initialization_trials: int
    max_parallelism: int
    num_restarts: int
    raw_samples: int
    seed: int

    @classmethod
    def of(cls, spec: ExperimentSpec) -> OptimizationView | None:
        opt = spec.optimization
        if opt is None:
            return None
        model_phases = [p for p in spec.phases if p.is_model_based]
        options = model_phases[0].generator_options if model_phases else {}
        return cls(
            objectives=tuple((o.metric, o.minimize, o.threshold) for o in opt.objectives),
            parameter_constraints=tuple(c.text for c in opt.parameter_constraints),
            outcome_constraints=tuple(c.text for c in opt.outcome_constraints),
            tracking_metrics=tuple(opt.tracking_metrics),
            method="fast" if model_phases else "random_search",
            initialization_trials=sum(p.max_asks or 0 for p in spec.phases if not p.is_model_based),
            max_parallelism=opt.max_parallelism,
            num_restarts=int(options.get("restarts", DEFAULT_RESTARTS)),
            raw_samples=int(options.get("samps", DEFAULT_RAW_SAMPLES)),
            seed=spec.seed or 0,
        )


@dataclass(frozen=True)
class TrialView:
    """A snapshot of one trial (copies: later changes to the strategy do not show through)."""

    trial_id: int
    phase_index: int
    phase_name: str
    stimuli: tuple[Stimulus, ...]
    state: str
    outcomes: tuple[OutcomeValue, ...]
    metadata: dict[str, Any]
    asked_at: float
    told_at: float | None
    model_data: bool
    sweep_index: int | None = None  # sweeps: index, run (index div permutations), permutation (index mod permutations)
    sweep_run: int | None = None
    sweep_permutation: int | None = None
    sample_size: int | None = None  # Ax-style tells may carry one

    @classmethod
    def of(cls, trial: TrialRecord, spec: ExperimentSpec) -> TrialView:
        return cls(
            trial_id=trial.trial_id,
            phase_index=trial.phase_index,
            phase_name=spec.phases[trial.phase_index].name,
            stimuli=tuple(dict(s) for s in trial.stimuli),
            state=trial.state,
            outcomes=tuple(trial.outcomes),
            metadata=dict(trial.metadata),
            asked_at=trial.asked_at,
            told_at=trial.told_at,
            model_data=trial.model_data,
            sweep_index=trial.sweep_index,
            sweep_run=trial.sweep_run,
            sweep_permutation=trial.sweep_permutation,
            sample_size=trial.sample_size,
        )


@dataclass(frozen=True)
class ExportedTrial:
    """One row of ExportData: a trial with the strategy it belongs to."""

    strategy_id: int
    strategy_name: str
    trial: TrialView


@dataclass(frozen=True)
class InfoView:
    """AEPsych's `info` fields for one strategy (its current phase is AEPsych's current strat)."""

    strategy_id: int
    db_name: str
    strat_count: int
    all_strat_names: list[str]
    current_strat_index: int
    current_strat_name: str
    current_strat_data_pts: int
    current_strat_model: str
    current_strat_acqf: str
    current_strat_finished: bool
    current_strat_can_fit: bool


@dataclass(frozen=True)
class ConfigureResult:
    strategy: StrategyView
    warnings: list[str]


@dataclass(frozen=True)
class AskResult:
    trials: list[TrialView]
    is_finished: bool
    phase_index: int
    phase_name: str
    precomputed: bool = False
    fit_seconds: float = 0.0
    generate_seconds: float = 0.0
    wait_seconds: float = 0.0
    retry_after_seconds: float = 0.0  # sweeps: nothing to hand out until the earliest lease ends


@dataclass(frozen=True)
class SweepRequest:
    """A PyExpUtils-style sweep for Configure: description JSON, runs, order, optional seed."""

    description_json: str
    runs: int
    order: str = "index"
    seed: int | None = None


@dataclass(frozen=True)
class TellResult:
    trial_id: int
    trials_recorded: int
    model_data_added: int
    duplicate: bool
    trials_completed: int
    is_finished: bool


@dataclass(frozen=True)
class TellItem:
    """One trial's outcome for tell_many: by trial id, or by explicit stimuli."""

    outcomes: Sequence[OutcomeValue]
    trial_id: int | None = None
    stimuli: Sequence[Mapping[str, Any]] | None = None
    model_data: bool = True
    metadata: Mapping[str, Any] | None = None
    request_id: str = ""
    sample_size: int | None = None


@dataclass(frozen=True)
class ArmEstimate:
    """A trial's (or a parameterisation's) mean and SEM per modelled metric (SEM NaN: unknown)."""

    trial_id: int
    parameters: Stimulus
    means: dict[str, float]
    sems: dict[str, float]


@dataclass(frozen=True)
class Readout:
    """What a model engine answers to an optimisation read-out (compute rows mapped to trials)."""

    trial_ids: list[int]
    means: np.ndarray
    sems: np.ndarray
    trace: np.ndarray


@dataclass(frozen=True)
class QueryPoint:
    x: Stimulus
    mean: float
    variance: float
    probability: float
    lower: float
    upper: float
    #: ordinal outcomes: the probability of each level 0..n_levels-1 (``probability`` is the expected level)
    level_probabilities: tuple[float, ...] = ()


@dataclass(frozen=True)
class QueryAnswer:
    query_type: str
    probability_space: bool
    points: list[QueryPoint]
    fit_seconds: float = 0.0
    outcome: str = ""


@dataclass(frozen=True)
class FinishResult:
    finished_strategy: str
    finished_strat_idx: int
    is_finished: bool


@dataclass
class Generated:
    """What a model engine hands back for an ask: n x k x d unit points plus timings."""

    points: np.ndarray
    precomputed: bool = False
    fit_seconds: float = 0.0
    generate_seconds: float = 0.0
    wait_seconds: float = 0.0
    checkpoint: bytes | None = None  # the engine's state after this ask (opaque), journaled with it
    served: Callable[[], object] | None = None  # called once the ask is committed


class ModelEngine(Protocol):
    """Model-based generation and queries (psyserve.modeling); the service only calls this."""

    async def generate(self, strategy: Strategy, phase_index: int, n: int, fixed: dict[int, float]) -> Generated: ...

    async def query(
        self,
        strategy: Strategy,
        query_type: str,
        probability_space: bool,
        x: np.ndarray | None,
        y: float | None,
        fixed: dict[int, float],
        background: bool = False,
        outcome_index: int = 0,
    ) -> tuple[np.ndarray, dict[str, np.ndarray], float]: ...

    async def optimization_readout(self, strategy: Strategy, kind: str, use_model: bool, x: np.ndarray | None) -> Readout: ...

    def data_changed(self, strategy: Strategy) -> None: ...

    def restore(self, strategy_id: int, checkpoint: bytes) -> None: ...

    def forget(self, strategy_id: int) -> None: ...

    async def close(self) -> None: ...


QUERY_TYPES = ("max", "min", "prediction", "inverse")
# A query's points are checked and answered this many at a time, the event loop served in between:
# a plot's 1,600-point grid would otherwise hold every participant's ask for ~20 ms.
_POINTS_PER_STEP = 100


@dataclass
class _Registry:
    by_id: dict[int, Strategy] = field(default_factory=dict)  # resident strategies (state in memory)
    cold: dict[int, StrategyView] = field(default_factory=dict)  # the others: their last summary
    by_name: dict[str, int] = field(default_factory=dict)
    configure_requests: dict[str, int] = field(default_factory=dict)
    next_id: int = 1
    model_asks: dict[int, tuple[int, int]] = field(default_factory=dict)  # strategy id -> (model asks, precomputed)
    changes: dict[int, int] = field(default_factory=dict)  # strategy id -> changes applied since the server started
    loading: dict[int, asyncio.Future[Strategy]] = field(default_factory=dict)  # being rebuilt from the journal
    waiting: dict[int, int] = field(default_factory=dict)  # requests about to use a strategy just rebuilt

    @property
    def count(self) -> int:
        return len(self.by_id) + len(self.cold)


class ExperimentService:
    """Strategies keyed by id; every state change is journaled before it is applied or answered."""

    def __init__(self, journal: Journal, models: ModelEngine | None = None, limits: Limits | None = None) -> None:
        self.journal = journal
        self.models = models
        self.limits = limits or Limits()
        self._registry = _Registry()
        self.residency = Residency(self.limits.max_resident_strategies, self.limits.evict_idle_seconds)
        self._evicting = False  # set by recover() for a serving service; offline readers keep everything
        self._summary_writes: set[asyncio.Task[None]] = set()
        self._configure_lock = asyncio.Lock()
        self._lease_task: asyncio.Task[None] | None = None
        self.lease_check_seconds = 0.25
        self._journal_failure: str | None = None  # the kind of the ongoing journal failure episode

    @property
    def db_name(self) -> str:
        return os.path.basename(self.journal.path)

    def change_marks(self) -> dict[int, int]:
        """Strategy id -> a number that grows with every change applied to it (asks, tells, abandons,
        phase changes) since this server started: observers compare marks instead of building views.
        A strategy appears here once it exists (0 before its first change here)."""
        reg = self._registry
        return {sid: reg.changes.get(sid, 0) for sid in sorted([*reg.by_id, *reg.cold])}

    @property
    def change_count(self) -> int:
        """Grows with every journaled state change (observers poll it: a cheap "anything new?").
        It may move just before the change is applied to the strategy; look again once more."""
        return self.journal.events_written

    # ------------------------------------------------------------------ recovery
    async def recover(self, expire_leases: bool = True, load_all: bool = False) -> int:
        """Index every strategy from the journal; rebuild those without a current summary (the ones
        active since they last left memory) and leave the others in the journal until first used.
        A serving service (`expire_leases`) then expires leases and evicts idle strategies; an
        offline reader passes `load_all` to rebuild everything and never writes. Returns the number
        of events replayed."""
        reg = self._registry
        replayed = self.residency.stats.events_replayed
        self._evicting = expire_leases and not load_all
        needed = []
        for row in await self.journal.strategy_index():
            reg.next_id = max(reg.next_id, row.strategy_id + 1)
            if row.name:
                reg.by_name[row.name] = row.strategy_id
            if row.request_id:
                reg.configure_requests[row.request_id] = row.strategy_id
            view = None
            if row.summary is not None and not load_all:
                try:
                    view = dataclasses.replace(from_plain(StrategyView, row.summary), resident=False, model_asks=0, precomputed_asks=0)
                except (KeyError, TypeError, ValueError) as exc:  # written by another version: replay instead
                    log.warning("strategy %s: stored summary unreadable (%s); replaying it", row.strategy_id, exc)
            if view is not None:
                reg.cold[row.strategy_id] = view
            else:
                needed.append(row.strategy_id)
        for strategy_id in needed:
            strategy = await self._load(strategy_id)
            if self._evicting and strategy.is_finished and strategy_id in self._registry.by_id and not self._busy(strategy):
                self._evict(strategy)  # finished before the restart: its summary is all a start needs
        if expire_leases:
            self._lease_task = asyncio.create_task(self._expire_leases(), name="lease-expiry")
        return self.residency.stats.events_replayed - replayed

    # ------------------------------------------------------------------ residency
    async def strategy(self, strategy_id: int) -> Strategy:
        """The strategy with its state in memory, rebuilt from the journal if it was evicted
        (NotFound if unknown). For in-process readers above the service; never a transport's.
        Use it without an await in between: after one, it may have left memory again."""
        reg = self._registry
        while True:
            strategy = reg.by_id.get(strategy_id)
            if strategy is not None:
                self.residency.touch(strategy_id)
                return strategy
            if strategy_id not in reg.cold:
                raise NotFound(f"strategy_id {strategy_id} not found", "strategy_id")
            loading = reg.loading.get(strategy_id)
            if loading is None:
                loading = reg.loading[strategy_id] = asyncio.ensure_future(self._load(strategy_id))
            # Until this request has resumed and taken what it needs, the rebuilt strategy stays.
            reg.waiting[strategy_id] = reg.waiting.get(strategy_id, 0) + 1
            try:
                await asyncio.shield(loading)
            finally:
                left = reg.waiting.pop(strategy_id) - 1
                if left:
                    reg.waiting[strategy_id] = left

    async def _load(self, strategy_id: int) -> Strategy:
        """Rebuild one strategy from its own events (read through the index on strategy_id, decoded
        and applied in a worker thread) and make it resident."""
        reg = self._registry
        try:
            try:
                rows = await self.journal.load_rows(strategy_id)
            except Exception as exc:  # the database could not be read
                raise Unavailable(f"strategy_id {strategy_id}: its journal could not be read ({exc})") from exc
            strategy = await asyncio.to_thread(self._rebuild, rows)
            if self.models is not None and not isinstance(strategy, SweepStrategy) and strategy.has_model_phase:
                await self._restore_models(strategy, rows)
            reg.cold.pop(strategy_id, None)
            reg.by_id[strategy_id] = strategy
            self.residency.touch(strategy_id)
            stats = self.residency.stats
            stats.loads += 1
            stats.events_replayed += len(rows)
            self._evict_due()
            return strategy
        finally:
            reg.loading.pop(strategy_id, None)

    async def _restore_models(self, strategy: Strategy, rows: list[tuple[Any, ...]]) -> None:
        """Give the model engine the state journaled with the strategy's last model ask, so that its
        next fits start exactly where they would have without the restart or the eviction. A state
        from an older ask (written by a server that did not store states) is not used."""
        assert self.models is not None
        try:
            stored = await self.journal.model_state(strategy.strategy_id)
        except Exception as exc:  # unreadable: the next fit starts cold
            log.warning("strategy %s: model state not read (%s)", strategy.strategy_id, exc)
            return
        if stored is None:
            return
        last_model_ask = None
        for row in rows:  # (seq, strategy_id, kind, trial_id, created_at, payload)
            if row[2] == "ask" and row[3] is not None:
                trial = strategy.trials.get(int(row[3]))
                if trial is not None and strategy.spec.phases[trial.phase_index].is_model_based:
                    last_model_ask = int(row[3])
        if stored[0] == last_model_ask:
            self.models.restore(strategy.strategy_id, stored[1])
        else:
            log.warning(
                "strategy %s: stored model state is not its last model ask's; its next fit starts cold", strategy.strategy_id
            )

    def _rebuild(self, rows: list[tuple[Any, ...]]) -> Strategy:
        """A strategy from its events, oldest first (the configure event first). No shared state is
        touched: it runs in a worker thread."""
        events = decode_rows(rows)
        if not events or events[0].kind != "configure":
            raise Unavailable(f"strategy_id {events[0].strategy_id if events else '?'}: its journal has no configure event")
        strategy = self._build(events[0])
        for event in events[1:]:
            strategy.apply(event)
        return strategy

    def _busy(self, strategy: Strategy) -> bool:
        """Whether the strategy must stay in memory: a request holds or waits for its lock, or is
        about to use it, a sweep decision is being committed, or a trial's lease is running."""
        lock = strategy.lock
        if lock.locked() or getattr(lock, "_waiters", None) or strategy.strategy_id in self._registry.waiting:
            return True
        if isinstance(strategy, SweepStrategy) and (
            strategy.in_flight_indices or strategy.in_flight_trials or strategy.in_flight_results or strategy.in_flight_requests
        ):
            return True
        return strategy.next_lease_expiry() is not None

    def _evict_due(self) -> None:
        """Drop the strategies the residency policy wants out (least recently used first) that are
        not busy. Everything a strategy holds is in the journal: a state change is applied only
        after its events are committed, and a busy strategy (a commit on its way) is never dropped."""
        if not self._evicting:
            return
        reg = self._registry
        for strategy_id in self.residency.due():
            strategy = reg.by_id.get(strategy_id)
            if strategy is None:
                self.residency.drop(strategy_id)
            elif not self._busy(strategy):
                self._evict(strategy)

    def _evict(self, strategy: Strategy) -> None:
        reg = self._registry
        view = dataclasses.replace(self.view(strategy), resident=False)
        del reg.by_id[strategy.strategy_id]
        reg.cold[strategy.strategy_id] = view
        self.residency.drop(strategy.strategy_id)
        self.residency.stats.evictions += 1
        if self.models is not None:
            self.models.forget(strategy.strategy_id)
        self._write_summary(view)

    def _write_summary(self, view: StrategyView) -> None:
        """Store the summary in the journal (in the background: a summary that is never written
        only means that the strategy is replayed at the next start)."""

        async def write() -> None:
            try:
                await self.journal.write_snapshot(view.strategy_id, to_plain(view))
            except JournalError as exc:
                self.residency.stats.snapshot_failures += 1
                log.debug("strategy %s: summary not stored (%s)", view.strategy_id, exc)

        task = asyncio.ensure_future(write())
        self._summary_writes.add(task)
        task.add_done_callback(self._summary_writes.discard)

    async def _expire_leases(self) -> None:
        """Abandon pending trials whose lease ran out (their points are handed out again)."""
        while True:
            now = time.time()
            self._evict_due()
            for strategy in list(self._registry.by_id.values()):
                expiry = strategy.next_lease_expiry()
                if expiry is None or expiry > now:
                    continue
                async with strategy.lock:
                    events = [
                        Event(strategy.strategy_id, "abandon", {"failed": False, "reason": "lease expired", "reissue": True}, trial_id=t.trial_id)
                        for t in strategy.expired_leases(time.time())
                    ]
                    if not events:
                        continue
                    try:
                        await self._append(events)
                    except ServiceError:  # logged once per episode; retried on the next round
                        continue
                    for event in events:
                        strategy.apply(event)
                    self._mark_changed(events)
                    if self.models is not None and strategy.has_model_phase:
                        self.models.data_changed(strategy)
            await asyncio.sleep(self.lease_check_seconds)

    def _build(self, event: Event) -> Strategy:
        """A new strategy from its configure event (no registration: also used by replay threads)."""
        p = event.payload
        strategy: Strategy
        if "sweep" in p:
            strategy = SweepStrategy(
                strategy_id=event.strategy_id,
                name=p.get("name") or "",
                sweep=SweepSpec.from_json(p["sweep"]),
                config_ini=p.get("config_ini") or "",
                metadata=dict(p.get("metadata") or {}),
                created_at=event.created_at,
                sections=p.get("sections") or {},
            )
        else:
            spec = parse_config(p["config_ini"], default_seed=p["seed"])
            strategy = Strategy(
                strategy_id=event.strategy_id,
                name=p.get("name") or "",
                spec=spec,
                config_ini=p["config_ini"],
                metadata=dict(p.get("metadata") or {}),
                created_at=event.created_at,
                seed=p["seed"],
            )
        return strategy

    def _create_from_event(self, event: Event) -> Strategy:
        """A strategy just configured: built, indexed and resident."""
        strategy = self._build(event)
        p = event.payload
        reg = self._registry
        reg.by_id[strategy.strategy_id] = strategy
        self.residency.touch(strategy.strategy_id)
        if strategy.name:
            reg.by_name[strategy.name] = strategy.strategy_id
        if p.get("request_id"):
            reg.configure_requests[p["request_id"]] = strategy.strategy_id
        reg.next_id = max(reg.next_id, strategy.strategy_id + 1)
        return strategy

    # ------------------------------------------------------------------ helpers
    def get(self, strategy_id: int) -> Strategy:
        """A resident strategy (offline readers, which hold every strategy); a serving service's
        callers use `await strategy(id)`, which also brings an evicted one back."""
        strategy = self._registry.by_id.get(strategy_id)
        if strategy is None:
            if strategy_id in self._registry.cold:
                raise FailedPrecondition(f"strategy_id {strategy_id} is not in memory (use ExperimentService.strategy)", "strategy_id")
            raise NotFound(f"strategy_id {strategy_id} not found", "strategy_id")
        return strategy

    def _summary(self, strategy_id: int) -> StrategyView:
        """A strategy's view without bringing it into memory: live if resident, else its last summary."""
        strategy = self._registry.by_id.get(strategy_id)
        if strategy is not None:
            return self.view(strategy)
        view = self._registry.cold.get(strategy_id)
        if view is None:
            raise NotFound(f"strategy_id {strategy_id} not found", "strategy_id")
        return view

    def _mark_changed(self, events: list[Event]) -> None:
        changes = self._registry.changes
        for event in events:
            changes[event.strategy_id] = changes.get(event.strategy_id, 0) + 1

    async def _append(self, events: list[Event], model_state: ModelStateWrite | None = None) -> None:
        """Journal events; a journal failure becomes a service error (RESOURCE_EXHAUSTED for a full
        disk, UNAVAILABLE otherwise), logged once per episode rather than once per request."""
        try:
            await self.journal.append(events, model_state)
        except JournalError as exc:
            full = isinstance(exc, JournalFull)
            kind = "full" if full else "unavailable"
            if self._journal_failure != kind:
                self._journal_failure = kind
                log.error("journal %s: %s; requests that change state are refused until it recovers", kind, exc)
            if full:
                raise ResourceExhausted(f"the journal's disk is full: nothing was recorded ({exc})") from exc
            raise Unavailable(f"journal unavailable: nothing was recorded ({exc})") from exc
        if self._journal_failure is not None:
            log.warning("journal writable again after a %s episode", self._journal_failure)
            self._journal_failure = None

    async def _commit(
        self,
        events: list[Event],
        strategy: Strategy | None,
        on_commit: Callable[[], object] | None = None,
        model_state: ModelStateWrite | None = None,
    ) -> None:
        """Journal events, then apply them to the strategy, as one step a cancelled caller cannot
        split: if the RPC is cancelled mid-commit, the commit and the state change still finish
        before the strategy lock is released (so memory never lags the journal)."""

        async def append_and_apply() -> None:
            await self._append(events, model_state)
            if strategy is not None:
                for event in events:
                    strategy.apply(event)
            self._mark_changed(events)
            if on_commit is not None:
                on_commit()

        task = asyncio.ensure_future(append_and_apply())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    def _check_metadata(self, metadata: Mapping[str, Any], field_name: str) -> dict[str, Any]:
        if len(metadata) > self.limits.max_metadata_entries:
            raise InvalidArgument(f"{field_name}: at most {self.limits.max_metadata_entries} entries", field_name)
        size = sum(len(str(k)) + len(str(v)) for k, v in metadata.items())
        if size > self.limits.max_metadata_bytes:
            raise InvalidArgument(f"{field_name}: at most {self.limits.max_metadata_bytes} bytes", field_name)
        out: dict[str, Any] = {}
        for key, value in metadata.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            out[str(key)] = value
        return out

    def view(self, strategy: Strategy) -> StrategyView:
        phases = [
            PhaseView(
                index=i,
                name=ph.name,
                generator=ph.generator,
                model=ph.model or "",
                acqf=ph.acqf or "",
                asks=strategy.phase_asks[i],
                finished=strategy.phase_finished(i),
            )
            for i, ph in enumerate(strategy.spec.phases)
        ]
        trials = strategy.trials.values()
        asks, precomputed = self._registry.model_asks.get(strategy.strategy_id, (0, 0))
        return StrategyView(
            strategy_id=strategy.strategy_id,
            name=strategy.name,
            metadata=dict(strategy.metadata),
            phases=phases,
            current_phase_index=strategy.phase_index,
            is_finished=strategy.is_finished,
            trials_asked=sum(1 for t in trials if t.asked),
            trials_completed=strategy.completed,
            trials_pending=sum(1 for t in trials if t.state == PENDING),
            model_data_points=strategy.model_data_points,
            created_at=strategy.created_at,
            shape=ExperimentShape.of(strategy.spec),
            can_fit=strategy.can_fit(),
            model_asks=asks,
            precomputed_asks=precomputed,
            last_activity=max((max(t.asked_at, t.told_at or 0.0) for t in trials), default=strategy.created_at),
            sweep=strategy.view() if isinstance(strategy, SweepStrategy) else None,
            seed=strategy.spec.seed or 0,
            seed_from_config="seed" in strategy.spec.sections.get("common", {}),
            optimization=OptimizationView.of(strategy.spec),
        )

    # ------------------------------------------------------------------ Configure / Resume
    async def configure(
        self,
        config_ini: str,
        name: str = "",
        metadata: Mapping[str, Any] | None = None,
        request_id: str = "",
        sweep: SweepRequest | None = None,
        allow_sweep: bool = True,
        experiment: TypedExperiment | None = None,
    ) -> ConfigureResult:
        """Create a strategy from an AEPsych INI, a sweep INI (`[sweep]` section), a SweepRequest or a
        typed (Ax-style) experiment. `allow_sweep=False` (transports that cannot carry sweep trials)
        refuses the sweep forms."""
        if experiment is not None:
            if config_ini.strip() or sweep is not None:
                raise InvalidArgument("give one of config_ini, sweep and experiment", "experiment")
            try:
                config_ini = typed_to_ini(experiment)
            except OptimizationConfigError as exc:
                raise InvalidArgument(str(exc), exc.field) from None
        if sweep is not None and config_ini.strip():
            raise InvalidArgument("give config_ini or sweep, not both", "sweep")
        if sweep is None and not config_ini.strip():
            raise InvalidArgument("config_ini is empty", "config_ini")
        if len(name) > self.limits.max_name_length:
            raise InvalidArgument(f"name: at most {self.limits.max_name_length} characters", "name")
        extra = self._check_metadata(metadata or {}, "metadata")
        seed = random.SystemRandom().randrange(2**31)
        if sweep is not None or sweep_section(config_ini) is not None:
            if not allow_sweep:
                raise InvalidArgument("config_ini: parameter sweeps are served over the gRPC API only (trials are told by trial id)", "config_ini")
            return await self._configure_sweep(config_ini, name, extra, request_id, sweep, seed)
        try:
            spec = parse_config(config_ini, default_seed=seed)
        except ConfigError as exc:
            raise InvalidArgument(str(exc), exc.field) from None
        async with self._configure_lock:
            reg = self._registry
            if request_id and request_id in reg.configure_requests:
                return ConfigureResult(self._summary(reg.configure_requests[request_id]), list(spec.warnings))
            if name and name in reg.by_name:
                raise AlreadyExists(f"name {name!r} is already used by strategy {reg.by_name[name]}; use Resume", "name")
            if reg.count >= self.limits.max_strategies:
                raise ResourceExhausted(f"this server holds its maximum of {self.limits.max_strategies} strategies", "config_ini")
            merged = {**spec.metadata, **{k: str(v) for k, v in extra.items()}}
            event = Event(
                strategy_id=reg.next_id,
                kind="configure",
                payload={
                    "name": name,
                    "config_ini": config_ini,
                    "metadata": merged,
                    "seed": spec.seed if spec.seed is not None else seed,
                    "request_id": request_id,
                },
            )
            created: list[StrategyView] = []  # the view as committed (the strategy may leave memory at the next await)
            await self._commit([event], None, lambda: created.append(self.view(self._create_from_event(event))))
        self._evict_due()
        return ConfigureResult(created[0], list(spec.warnings))

    async def _configure_sweep(
        self, config_ini: str, name: str, extra: dict[str, Any], request_id: str, sweep: SweepRequest | None, seed: int
    ) -> ConfigureResult:
        """A parameter sweep from a SweepRequest (JSON description) or an INI `[sweep]` section."""
        try:
            if sweep is not None:
                spec = parse_sweep_json(sweep.description_json, sweep.runs, sweep.order, sweep.seed if sweep.seed is not None else seed)
                config_metadata: dict[str, str] = {}
                sections: dict[str, dict[str, str]] = {}
                warnings: list[str] = []
            else:
                spec, config_metadata, sections, warnings = parse_sweep_ini(config_ini, seed)
        except SweepConfigError as exc:
            raise InvalidArgument(str(exc), exc.field) from None
        async with self._configure_lock:
            reg = self._registry
            if request_id and request_id in reg.configure_requests:
                return ConfigureResult(self._summary(reg.configure_requests[request_id]), warnings)
            if name and name in reg.by_name:
                raise AlreadyExists(f"name {name!r} is already used by strategy {reg.by_name[name]}; use Resume", "name")
            if reg.count >= self.limits.max_strategies:
                raise ResourceExhausted(f"this server holds its maximum of {self.limits.max_strategies} strategies", "sweep")
            event = Event(
                strategy_id=reg.next_id,
                kind="configure",
                payload={
                    "name": name,
                    "config_ini": config_ini,
                    "metadata": {**config_metadata, **{k: str(v) for k, v in extra.items()}},
                    "seed": spec.seed,
                    "request_id": request_id,
                    "sweep": spec.to_json(),
                    "sections": sections,
                },
            )
            created: list[StrategyView] = []  # the view as committed (the strategy may leave memory at the next await)
            await self._commit([event], None, lambda: created.append(self.view(self._create_from_event(event))))
        self._evict_due()
        return ConfigureResult(created[0], warnings)

    async def _sweep(self, strategy_id: int) -> SweepStrategy:
        strategy = await self.strategy(strategy_id)
        if not isinstance(strategy, SweepStrategy):
            raise FailedPrecondition(f"strategy_id {strategy_id} is not a parameter sweep", "strategy_id")
        return strategy

    async def list_missing(self, strategy_id: int, runs: int = 0) -> MissingResults:
        """Indices below runs x permutations without a result (PyExpUtils' listMissingResults)."""
        strategy = await self._sweep(strategy_id)
        if runs < 0:
            raise InvalidArgument(f"runs must be 0 (the sweep's runs) or positive, got {runs}", "runs")
        runs = runs or strategy.runs
        if runs * strategy.p > MAX_INDICES:
            raise InvalidArgument(f"runs: {runs} runs x {strategy.p} permutations is too many indices to list", "runs")
        return strategy.missing(runs)

    async def extend_sweep(self, strategy_id: int, runs: int) -> StrategyView:
        """Raise the number of runs; the new indices are handed out after the old ones."""
        strategy = await self._sweep(strategy_id)
        async with strategy.lock:
            if runs < strategy.runs:
                raise InvalidArgument(f"runs: a sweep's runs can only grow (now {strategy.runs}, asked {runs})", "runs")
            if runs * strategy.p > MAX_INDICES:
                raise InvalidArgument(f"runs: {runs} runs x {strategy.p} permutations exceeds {MAX_INDICES} indices", "runs")
            if runs > strategy.runs:
                await self._commit([Event(strategy_id, "sweep_runs", {"runs": runs})], strategy)
            return self.view(strategy)

    async def sweep_results(
        self,
        strategy_id: int,
        last_n: int | None = None,
        last_percent: float | None = None,
        best_metric: str = "",
        best_mode: str = "max",
        include_runs: bool = False,
    ) -> SweepResults:
        strategy = await self._sweep(strategy_id)
        if last_n is not None and last_n < 1:
            raise InvalidArgument(f"last_n must be at least 1, got {last_n}", "last_n")
        if last_percent is not None and not (math.isfinite(last_percent) and 0 < last_percent <= 100):
            raise InvalidArgument(f"last_percent must be in (0, 100], got {last_percent}", "last_percent")
        if best_mode not in ("max", "min"):
            raise InvalidArgument(f"best_mode must be max or min, got {best_mode!r}", "best_mode")
        return strategy.results(last_n, last_percent, best_metric, best_mode, include_runs)

    def _check_sweep_metrics(self, outcomes: Sequence[OutcomeValue], prefix: str) -> list[OutcomeValue]:
        """A sweep's tell: named finite metrics, each optionally with a finite series."""
        where = f"{prefix}." if prefix else ""
        if not outcomes:
            raise InvalidArgument(f"{where}outcomes: at least one metric is required", f"{where}outcomes")
        if len(outcomes) > self.limits.max_sweep_metrics:
            raise InvalidArgument(f"{where}outcomes: at most {self.limits.max_sweep_metrics} metrics", f"{where}outcomes")
        points = sum(len(o.series or ()) for o in outcomes)
        if points > self.limits.max_series_points:
            raise InvalidArgument(f"{where}outcomes: at most {self.limits.max_series_points} series values per tell, got {points}", f"{where}outcomes")
        seen: set[str] = set()
        out = []
        for i, o in enumerate(outcomes):
            f = f"{where}outcomes[{i}]"
            if not o.name:
                raise InvalidArgument(f"{f}.name: a sweep's metrics need names", f"{f}.name")
            if o.name in seen:
                raise InvalidArgument(f"{f}.name: metric {o.name!r} given twice", f"{f}.name")
            seen.add(o.name)
            if not math.isfinite(o.value):
                raise InvalidArgument(f"{f}.value: metric {o.name!r} must be a finite number, got {o.value!r}", f"{f}.value")
            if o.sem is not None and (not math.isfinite(o.sem) or o.sem < 0):
                raise InvalidArgument(f"{f}.sem must be a finite non-negative number, got {o.sem!r}", f"{f}.sem")
            series = tuple(float(v) for v in o.series) if o.series else None
            if series is not None and not all(math.isfinite(v) for v in series):
                raise InvalidArgument(f"{f}.series: metric {o.name!r} has a non-finite value", f"{f}.series")
            out.append(OutcomeValue(o.name, float(o.value), o.sem, series))
        return out

    async def _commit_reserved(self, strategy: SweepStrategy, events: list[Event], release: Callable[[], None]) -> None:
        """Journal a sweep's events outside its lock, then apply them and drop the reservations that
        kept concurrent decisions apart: many workers' asks and tells share one group commit. The
        state still changes only after the commit; a cancelled caller cannot split the two."""

        async def append_and_apply() -> None:
            try:
                await self._append(events)
                for event in events:
                    strategy.apply(event)
                self._mark_changed(events)
            finally:
                release()

        task = asyncio.ensure_future(append_and_apply())
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def _ask_sweep(self, strategy: SweepStrategy, num_points: int, fixed: Mapping[str, Any] | None, request_id: str, ttl_seconds: float) -> AskResult:
        if fixed:
            raise InvalidArgument("fixed_parameters: a sweep hands out whole permutations; fixed parameters are not supported", "fixed_parameters")
        phase_name = strategy.spec.phases[0].name
        async with strategy.lock:  # decide and reserve under the lock; commit below, unlocked
            if request_id and request_id in strategy.ask_requests:
                trials = [TrialView.of(strategy.trials[i], strategy.spec) for i in strategy.ask_requests[request_id]]
                return AskResult(trials, strategy.is_finished, 0, phase_name)
            earlier: asyncio.Future[AskResult] | None = strategy.in_flight_requests.get(request_id) if request_id else None
            if earlier is None:
                indices = strategy.take_indices(num_points)
                if not indices:
                    retry = 0.0
                    if not strategy.is_finished:
                        expiry = strategy.next_lease_expiry()
                        retry = max(0.0, expiry - time.time()) if expiry is not None else 0.0
                    return AskResult([], strategy.is_finished, 0, phase_name, retry_after_seconds=retry)
                first_id = strategy.reserve_trial_ids(len(indices))
                strategy.in_flight_indices.update(indices)
                waiting: asyncio.Future[AskResult] = asyncio.get_running_loop().create_future()
                if request_id:
                    strategy.in_flight_requests[request_id] = waiting
        if earlier is not None:
            return await asyncio.shield(earlier)  # a retry of an ask still being committed
        now = time.time()
        events = []
        for k, index in enumerate(indices):
            payload: dict[str, Any] = {"sweep_index": index}
            if request_id:
                payload["request_id"] = request_id
            if ttl_seconds:
                payload["lease_expires_at"] = now + ttl_seconds
            events.append(Event(strategy.strategy_id, "ask", payload, trial_id=first_id + k, created_at=now))

        def release() -> None:
            strategy.in_flight_indices.difference_update(indices)
            strategy.in_flight_requests.pop(request_id, None)
            strategy.give_back(indices)  # after a failed commit the indices go back; leased ones stay leased

        try:
            await self._commit_reserved(strategy, events, release)
        except BaseException as exc:
            if not waiting.done():
                waiting.set_exception(exc)
                waiting.exception()  # retrieved: a failure nobody retried is not logged as unhandled
            raise
        result = AskResult(
            [TrialView.of(strategy.trials[e.trial_id], strategy.spec) for e in events if e.trial_id is not None], strategy.is_finished, 0, phase_name
        )
        waiting.set_result(result)
        return result

    async def _tell_sweep(self, strategy: SweepStrategy, items: Sequence[TellItem]) -> list[TellResult]:
        """Record sweep results by trial id. An index keeps its first result: a tell for an index that
        already has one (a late worker, after its lease expired and the index was re-run) is answered
        as a duplicate and its still-pending trial is abandoned, so nothing is counted twice."""
        prepared = []
        for i, item in enumerate(items):
            prefix = f"tells[{i}]" if len(items) > 1 else ""
            if item.trial_id is None:
                raise InvalidArgument("trial_id: a sweep is told by trial id", f"{prefix}.trial_id" if prefix else "trial_id")
            prepared.append((self._check_sweep_metrics(item.outcomes, prefix), self._check_metadata(item.metadata or {}, "metadata")))
        async with strategy.lock:  # decide and reserve under the lock; commit below, unlocked
            events: list[Event] = []
            plan: list[tuple[int, bool]] = []
            claimed_trials: set[int] = set()
            claimed_indices: dict[int, int] = {}
            for (checked, extra), item in zip(prepared, items, strict=True):
                trial_id = item.trial_id
                assert trial_id is not None
                trial = strategy.trials.get(trial_id)
                if trial is None:
                    raise NotFound(f"trial_id {trial_id} not found in strategy {strategy.strategy_id}", "trial_id")
                if trial.state == COMPLETED or trial_id in claimed_trials or trial_id in strategy.in_flight_trials:
                    plan.append((trial_id, True))  # a retry (possibly of a tell still being committed)
                    continue
                if trial.state == FAILED:
                    raise FailedPrecondition(f"trial_id {trial_id} was marked failed and cannot be told", "trial_id")
                index = trial.sweep_index
                assert index is not None
                holder = strategy.result_of.get(index, claimed_indices.get(index, strategy.in_flight_results.get(index)))
                if holder is not None:
                    if trial.state == PENDING:
                        reason = f"index {index} already has a result (trial {holder})"
                        events.append(Event(strategy.strategy_id, "abandon", {"failed": False, "reason": reason}, trial_id=trial_id))
                    claimed_trials.add(trial_id)
                    plan.append((trial_id, True))
                    continue
                payload: dict[str, Any] = {"outcomes": [o.to_json() for o in checked], "metadata": extra}
                if item.request_id:
                    payload["request_id"] = item.request_id
                events.append(Event(strategy.strategy_id, "tell", payload, trial_id=trial_id))
                claimed_trials.add(trial_id)
                claimed_indices[index] = trial_id
                plan.append((trial_id, False))
            strategy.in_flight_trials.update(claimed_trials)
            strategy.in_flight_results.update(claimed_indices)

        def release() -> None:
            strategy.in_flight_trials.difference_update(claimed_trials)
            for index in claimed_indices:
                strategy.in_flight_results.pop(index, None)

        if events:
            await self._commit_reserved(strategy, events, release)
        else:
            release()
        return [self._tell_result(strategy, tid, duplicate=dup, model_data=False) for tid, dup in plan]

    def resume(self, strategy_id: int | None = None, name: str | None = None) -> StrategyView:
        if name:
            found = self._registry.by_name.get(name)
            if found is None:
                raise NotFound(f"no strategy named {name!r}", "name")
            return self._summary(found)
        if strategy_id is None:
            raise InvalidArgument("give strategy_id or name", "strategy_id")
        return self._summary(strategy_id)

    def info(self, strategy_id: int) -> tuple[InfoView, StrategyView]:
        view = self._summary(strategy_id)
        phase = view.phases[view.current_phase_index]
        info = InfoView(
            strategy_id=view.strategy_id,
            db_name=self.db_name,
            strat_count=len(view.phases),
            all_strat_names=[p.name for p in view.phases],
            current_strat_index=view.current_phase_index,
            current_strat_name=phase.name,
            current_strat_data_pts=view.model_data_points,
            current_strat_model=phase.model,
            current_strat_acqf=phase.acqf,
            current_strat_finished=phase.finished,
            current_strat_can_fit=view.can_fit,
        )
        return info, view

    def strategies(self) -> list[Strategy]:
        """The resident strategies (all of them for an offline reader: recover(load_all=True)), for
        in-process readers above the service (export, replay); never a transport's."""
        return list(self._registry.by_id.values())

    def list_strategies(self) -> list[StrategyView]:
        """Every strategy by id: resident ones as they are now, evicted ones by their last summary
        (nothing is brought back into memory)."""
        reg = self._registry
        return [self.view(reg.by_id[i]) if i in reg.by_id else reg.cold[i] for i in sorted([*reg.by_id, *reg.cold])]

    # ------------------------------------------------------------------ Ask
    async def ask(
        self,
        strategy_id: int,
        num_points: int = 1,
        fixed: Mapping[str, Any] | None = None,
        request_id: str = "",
        ttl_seconds: float = 0.0,
    ) -> AskResult:
        strategy = await self.strategy(strategy_id)
        if num_points == 0:
            num_points = 1
        if num_points < 0 or num_points > self.limits.max_points_per_ask:
            raise InvalidArgument(f"num_points must be in 1..{self.limits.max_points_per_ask}, got {num_points}", "num_points")
        if not math.isfinite(ttl_seconds) or ttl_seconds < 0:
            raise InvalidArgument(f"ttl_seconds must be a non-negative number, got {ttl_seconds}", "ttl_seconds")
        if isinstance(strategy, SweepStrategy):
            return await self._ask_sweep(strategy, num_points, fixed, request_id, ttl_seconds)
        space = strategy.spec.space
        try:
            fixed_raw = space.validate_partial(fixed or {}, "fixed_parameters")
        except ParameterValueError as exc:
            raise InvalidArgument(str(exc), exc.field) from None
        async with strategy.lock:
            if request_id and request_id in strategy.ask_requests:
                trials = [TrialView.of(strategy.trials[i], strategy.spec) for i in strategy.ask_requests[request_id]]
                return AskResult(
                    trials, strategy.is_finished, trials[0].phase_index, strategy.spec.phases[trials[0].phase_index].name
                )
            limit = strategy.spec.optimization.max_parallelism if strategy.spec.optimization is not None else 0
            if limit and len(strategy.pending) + num_points > limit:
                raise FailedPrecondition(
                    f"num_points: {len(strategy.pending)} trial(s) pending and {num_points} asked exceed max_parallelism {limit}; "
                    "complete, fail or abandon pending trials first",
                    "num_points",
                )
            phase_index = strategy.phase_for_next_ask()
            phase = strategy.spec.phases[phase_index]
            generated = Generated(points=np.empty(0))
            # points of trials whose lease expired come first (not when parameters are pinned)
            reissued = [] if fixed_raw or phase.is_model_based else [t for t, (ph, _) in strategy.reissue.items() if ph == phase_index]
            reissued = reissued[:num_points]
            stimuli = [[dict(s) for s in strategy.reissue[t][1]] for t in reissued]
            fresh = num_points - len(reissued)
            if fresh and phase.generator == "ManualGenerator":
                stimuli += strategy.manual_stimuli(phase_index, fresh)
            elif fresh:
                if phase.is_model_based:
                    if self.models is None:
                        raise FailedPrecondition("this server runs without a model engine", "strategy_id")
                    generated = await self.models.generate(strategy, phase_index, fresh, space.fixed_unit(fixed_raw))
                    unit = generated.points
                    asks, precomputed = self._registry.model_asks.get(strategy_id, (0, 0))
                    self._registry.model_asks[strategy_id] = (asks + 1, precomputed + generated.precomputed)
                else:
                    unit = strategy.generate_unit(phase_index, fresh)
                stimuli += [[space.from_unit(u) for u in trial] for trial in unit]
            for trial_stimuli in stimuli:
                for stimulus in trial_stimuli:
                    stimulus.update(fixed_raw)
            now = time.time()
            events = []
            for i, trial_stimuli in enumerate(stimuli):
                payload: dict[str, Any] = {"phase_index": phase_index, "stimuli": trial_stimuli}
                if request_id:
                    payload["request_id"] = request_id
                if ttl_seconds:
                    payload["lease_expires_at"] = now + ttl_seconds
                if i < len(reissued):
                    payload["reissue_of"] = reissued[i]
                events.append(Event(strategy_id, "ask", payload, trial_id=strategy.next_trial_id + i, created_at=now))
            model_state = None
            if generated.checkpoint is not None and events[-1].trial_id is not None:
                model_state = ModelStateWrite(strategy_id, events[-1].trial_id, generated.checkpoint)
            await self._commit(events, strategy, on_commit=generated.served, model_state=model_state)
            trials = [TrialView.of(strategy.trials[e.trial_id], strategy.spec) for e in events if e.trial_id is not None]
            if self.models is not None and strategy.has_model_phase:
                self.models.data_changed(strategy)  # e.g. the last Sobol trial: prepare the first model trial
            return AskResult(
                trials=trials,
                is_finished=strategy.is_finished,
                phase_index=phase_index,
                phase_name=phase.name,
                precomputed=generated.precomputed,
                fit_seconds=generated.fit_seconds,
                generate_seconds=generated.generate_seconds,
                wait_seconds=generated.wait_seconds,
            )

    # ------------------------------------------------------------------ Tell
    def _check_metrics(self, strategy: Strategy, outcomes: Sequence[OutcomeValue]) -> list[OutcomeValue]:
        """Ax-style outcomes: every objective and constrained metric, tracking metrics optional."""
        opt = strategy.spec.optimization
        assert opt is not None
        needed = opt.modelled_metrics
        by_name: dict[str, OutcomeValue] = {}
        for i, outcome in enumerate(outcomes):
            name = outcome.name or (needed[0] if len(outcomes) == 1 and len(needed) == 1 else "")
            if name not in opt.metrics:
                raise InvalidArgument(
                    f"outcomes[{i}].name: unknown metric {outcome.name!r} (known: {list(opt.metrics)})", f"outcomes[{i}].name"
                )
            if name in by_name:
                raise InvalidArgument(f"outcomes[{i}].name: metric {name!r} given twice", f"outcomes[{i}].name")
            if isinstance(outcome.value, bool) or not isinstance(outcome.value, (int, float)) or not math.isfinite(outcome.value):
                raise InvalidArgument(f"outcomes[{i}].value: metric {name!r} must be a finite number, got {outcome.value!r}", f"outcomes[{i}].value")
            sem = outcome.sem
            if sem is not None and (not math.isfinite(sem) or sem < 0):
                raise InvalidArgument(f"outcomes[{i}].sem must be a finite non-negative number, got {sem!r}", f"outcomes[{i}].sem")
            by_name[name] = OutcomeValue(name=name, value=float(outcome.value), sem=sem)
        missing = [m for m in needed if m not in by_name]
        if missing:
            raise InvalidArgument(
                f"outcomes: missing metric(s) {missing}: every objective and constrained metric {list(needed)} must be reported", "outcomes"
            )
        return [by_name[n] for n in opt.metrics if n in by_name]

    def _check_outcomes(self, strategy: Strategy, outcomes: Sequence[OutcomeValue]) -> list[OutcomeValue]:
        spec = strategy.spec
        if not outcomes:
            raise InvalidArgument("outcomes: at least one outcome is required", "outcomes")
        if spec.optimization is not None:
            return self._check_metrics(strategy, outcomes)
        if len(outcomes) < len(spec.outcome_names) and all(o.name for o in outcomes):
            missing = [n for n in spec.outcome_names if n not in {o.name for o in outcomes}]
            if missing:
                raise InvalidArgument(
                    f"outcomes: missing outcome {missing[0]!r}: this experiment's every tell reports {list(spec.outcome_names)}",
                    "outcomes",
                )
        if len(outcomes) != len(spec.outcome_names):
            missing_text = f" (missing {list(spec.outcome_names[len(outcomes):])})" if len(outcomes) < len(spec.outcome_names) else ""
            raise InvalidArgument(
                f"outcomes: expected {len(spec.outcome_names)} outcome(s) {list(spec.outcome_names)}, got {len(outcomes)}{missing_text}",
                "outcomes",
            )
        by_name: dict[str, OutcomeValue] = {}
        for i, outcome in enumerate(outcomes):
            name = outcome.name or (spec.outcome_names[i] if len(outcomes) == len(spec.outcome_names) else "")
            if name not in spec.outcome_names:
                raise InvalidArgument(
                    f"outcomes[{i}].name: unknown outcome {outcome.name!r} (known: {list(spec.outcome_names)})",
                    f"outcomes[{i}].name",
                )
            if name in by_name:
                raise InvalidArgument(f"outcomes[{i}].name: outcome {name!r} given twice", f"outcomes[{i}].name")
            value = outcome.value
            if isinstance(value, bool):
                value = float(value)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidArgument(
                    f"outcomes[{i}].value: outcome {name!r} must be a finite number, got {value!r}", f"outcomes[{i}].value"
                )
            kind = spec.outcome_types[spec.outcome_names.index(name)]
            if kind == "binary" and value not in (0, 1):
                raise InvalidArgument(
                    f"outcomes[{i}].value: outcome {name!r} is binary: expected 0 or 1, got {value!r}", f"outcomes[{i}].value"
                )
            if kind == "ordinal" and (value < 0 or value != int(value)):
                raise InvalidArgument(
                    f"outcomes[{i}].value: outcome {name!r} is ordinal: expected a non-negative integer, got {value!r}",
                    f"outcomes[{i}].value",
                )
            if kind == "ordinal" and spec.n_levels is not None and value > spec.n_levels - 1:
                raise InvalidArgument(
                    f"outcomes[{i}].value: outcome {name!r} is ordinal with n_levels = {spec.n_levels}: "
                    f"expected a level in 0..{spec.n_levels - 1}, got {value!r}",
                    f"outcomes[{i}].value",
                )
            sem = outcome.sem
            if sem is not None and (not math.isfinite(sem) or sem < 0):
                raise InvalidArgument(
                    f"outcomes[{i}].sem must be a finite non-negative number, got {sem!r}", f"outcomes[{i}].sem"
                )
            by_name[name] = OutcomeValue(name=name, value=float(value), sem=sem)
        return [by_name[n] for n in spec.outcome_names]

    async def tell(
        self,
        strategy_id: int,
        outcomes: Sequence[OutcomeValue],
        trial_id: int | None = None,
        stimuli: Sequence[Mapping[str, Any]] | None = None,
        model_data: bool = True,
        metadata: Mapping[str, Any] | None = None,
        request_id: str = "",
        sample_size: int | None = None,
    ) -> TellResult:
        if sample_size is not None and sample_size < 0:
            raise InvalidArgument(f"sample_size must be >= 0, got {sample_size}", "sample_size")
        item = TellItem(outcomes, trial_id, stimuli, model_data, metadata, request_id, sample_size)
        return (await self.tell_many(strategy_id, [item]))[0]

    def _prepare_tell(self, strategy: Strategy, item: TellItem, prefix: str) -> tuple[list[OutcomeValue], dict[str, Any], list[Stimulus] | None]:
        """Validate one tell (no state is read): outcomes, metadata, stimuli. Fields get `prefix`."""
        spec = strategy.spec
        try:
            checked = self._check_outcomes(strategy, item.outcomes)
            extra = self._check_metadata(item.metadata or {}, "metadata")
            if (item.trial_id is None) == (item.stimuli is None):
                raise InvalidArgument("give exactly one of trial_id and stimuli", "trial_id")
            validated: list[Stimulus] | None = None
            if item.stimuli is not None:
                if len(item.stimuli) != spec.stimuli_per_trial:
                    raise InvalidArgument(
                        f"stimuli: expected {spec.stimuli_per_trial} stimulus/stimuli per trial, got {len(item.stimuli)}", "stimuli"
                    )
                try:
                    validated = [spec.space.validate_stimulus(s, f"stimuli[{i}]") for i, s in enumerate(item.stimuli)]
                except ParameterValueError as exc:
                    raise InvalidArgument(str(exc), exc.field) from None
        except ServiceError as exc:
            if prefix:
                exc.message, exc.field = f"{prefix}: {exc.message}", f"{prefix}.{exc.field}" if exc.field else prefix
            raise
        return checked, extra, validated

    async def tell_many(self, strategy_id: int, items: Sequence[TellItem]) -> list[TellResult]:
        """Record several trials' outcomes atomically: all are journaled in one commit, or none."""
        strategy = await self.strategy(strategy_id)
        space = strategy.spec.space
        if not items:
            raise InvalidArgument("no outcomes to record", "outcomes")
        if isinstance(strategy, SweepStrategy):
            return await self._tell_sweep(strategy, items)
        prepared = [self._prepare_tell(strategy, item, f"tells[{i}]" if len(items) > 1 else "") for i, item in enumerate(items)]
        async with strategy.lock:
            events: list[Event] = []
            plan: list[tuple[int, bool, bool]] = []  # (trial id, duplicate, model data)
            claimed: set[int] = set()
            next_id = strategy.next_trial_id
            for (checked, extra, validated), item in zip(prepared, items, strict=True):
                existing_id = item.trial_id
                if existing_id is None and item.request_id:
                    existing_id = strategy.tell_requests.get(item.request_id)
                if existing_id is None and validated is not None:
                    # A stimulus equal to a pending asked trial completes that trial (AEPsych
                    # clients tell by config, not by trial id).
                    existing_id = next(
                        (
                            t.trial_id
                            for t in strategy.pending
                            if t.trial_id not in claimed
                            and len(t.stimuli) == len(validated)
                            and all(space.same(a, b) for a, b in zip(t.stimuli, validated, strict=True))
                        ),
                        None,
                    )
                if existing_id is not None:
                    trial = strategy.trials.get(existing_id)
                    if trial is None:
                        raise NotFound(f"trial_id {existing_id} not found in strategy {strategy_id}", "trial_id")
                    if trial.state == COMPLETED or existing_id in claimed:
                        plan.append((existing_id, True, False))
                        continue
                    if trial.state == FAILED:
                        raise FailedPrecondition(f"trial_id {existing_id} was marked failed and cannot be told", "trial_id")
                payload: dict[str, Any] = {"outcomes": [o.to_json() for o in checked], "model_data": bool(item.model_data), "metadata": extra}
                if item.request_id:
                    payload["request_id"] = item.request_id
                if item.sample_size is not None:
                    payload["sample_size"] = int(item.sample_size)
                if existing_id is None:
                    assert validated is not None
                    existing_id, next_id = next_id, next_id + 1
                    payload["stimuli"] = validated
                    payload["phase_index"] = strategy.phase_index
                claimed.add(existing_id)
                events.append(Event(strategy_id, "tell", payload, trial_id=existing_id))
                plan.append((existing_id, False, bool(item.model_data)))
            if events:
                await self._commit(events, strategy)
                if self.models is not None and strategy.has_model_phase:
                    self.models.data_changed(strategy)
            return [self._tell_result(strategy, tid, duplicate=dup, model_data=md) for tid, dup, md in plan]

    def _tell_result(self, strategy: Strategy, trial_id: int, duplicate: bool, model_data: bool) -> TellResult:
        return TellResult(
            trial_id=trial_id,
            trials_recorded=0 if duplicate else 1,
            model_data_added=1 if model_data and not duplicate else 0,
            duplicate=duplicate,
            trials_completed=strategy.completed,
            is_finished=strategy.is_finished,
        )

    # ------------------------------------------------------------------ Ax-style trials and read-outs
    async def attach_trial(
        self, strategy_id: int, parameters: Mapping[str, Any], ttl_seconds: float = 0.0, request_id: str = ""
    ) -> TrialView:
        """A pending trial at given parameters (Ax's attach_trial): not drawn from the phase, told later."""
        strategy = await self.strategy(strategy_id)
        spec = strategy.spec
        if spec.stimuli_per_trial != 1:
            raise FailedPrecondition("attach_trial takes experiments with one stimulus per trial", "strategy_id")
        if not math.isfinite(ttl_seconds) or ttl_seconds < 0:
            raise InvalidArgument(f"ttl_seconds must be a non-negative number, got {ttl_seconds}", "ttl_seconds")
        try:
            stimulus = spec.space.validate_stimulus(parameters, "parameters")
        except ParameterValueError as exc:
            raise InvalidArgument(str(exc), exc.field) from None
        if spec.optimization is not None and not spec.optimization.feasible(stimulus):
            broken = [c.text for c in spec.optimization.parameter_constraints if not c.satisfied(stimulus)]
            raise InvalidArgument(f"parameters: break the parameter constraint(s) {broken}", "parameters")
        async with strategy.lock:
            if request_id and request_id in strategy.ask_requests:
                return TrialView.of(strategy.trials[strategy.ask_requests[request_id][0]], spec)
            now = time.time()
            payload: dict[str, Any] = {"phase_index": strategy.phase_index, "stimuli": [stimulus], "attached": True}
            if request_id:
                payload["request_id"] = request_id
            if ttl_seconds:
                payload["lease_expires_at"] = now + ttl_seconds
            event = Event(strategy_id, "ask", payload, trial_id=strategy.next_trial_id, created_at=now)
            await self._commit([event], strategy)
            return TrialView.of(strategy.trials[event.trial_id or 0], spec)

    async def _optimization_strategy(self, strategy_id: int) -> Strategy:
        strategy = await self.strategy(strategy_id)
        if strategy.spec.optimization is None:
            raise FailedPrecondition("this strategy is not an optimisation experiment (no objectives)", "strategy_id")
        if self.models is None:
            raise FailedPrecondition("this server runs without a model engine", "strategy_id")
        return strategy

    def _arms(self, strategy: Strategy, readout: Readout) -> list[ArmEstimate]:
        opt = strategy.spec.optimization
        assert opt is not None
        metrics = opt.modelled_metrics
        return [
            ArmEstimate(
                trial_id=tid,
                parameters=dict(strategy.trials[tid].stimuli[0]),
                means={m: float(readout.means[i, j]) for j, m in enumerate(metrics)},
                sems={m: float(readout.sems[i, j]) for j, m in enumerate(metrics)},
            )
            for i, tid in enumerate(readout.trial_ids)
        ]

    async def _readout(self, strategy: Strategy, kind: str, use_model: bool, x: np.ndarray | None = None) -> Readout:
        assert self.models is not None
        if strategy.completed == 0 and kind != "predict":
            return Readout([], np.zeros((0, 0)), np.zeros((0, 0)), np.zeros(0))
        try:
            return await self.models.optimization_readout(strategy, kind, use_model, x)
        except ValueError as exc:
            raise FailedPrecondition(str(exc), "strategy_id") from None

    async def best_parameters(self, strategy_id: int, use_model: bool = True) -> ArmEstimate | None:
        """The best feasible completed trial (single objective), by model prediction or observation."""
        strategy = await self._optimization_strategy(strategy_id)
        opt = strategy.spec.optimization
        assert opt is not None
        if opt.multi_objective:
            raise FailedPrecondition(
                f"{len(opt.objectives)} objectives have no single best point: ask for the Pareto front", "strategy_id"
            )
        arms = self._arms(strategy, await self._readout(strategy, "best", use_model))
        return arms[0] if arms else None

    async def pareto_front(self, strategy_id: int, use_model: bool = True) -> list[ArmEstimate]:
        strategy = await self._optimization_strategy(strategy_id)
        return self._arms(strategy, await self._readout(strategy, "pareto", use_model))

    async def predict_metrics(
        self, strategy_id: int, parameters: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ()
    ) -> list[ArmEstimate]:
        strategy = await self._optimization_strategy(strategy_id)
        opt = strategy.spec.optimization
        assert opt is not None
        for i, m in enumerate(metrics):
            if m not in opt.modelled_metrics:
                raise InvalidArgument(f"metrics[{i}]: {m!r} is not a modelled metric {list(opt.modelled_metrics)}", f"metrics[{i}]")
        if not parameters:
            raise InvalidArgument("parameters: give at least one parameterisation", "parameters")
        if len(parameters) > self.limits.max_points_per_ask * 10:
            raise InvalidArgument(f"parameters: at most {self.limits.max_points_per_ask * 10}", "parameters")
        space = strategy.spec.space
        try:
            stimuli = [space.validate_stimulus(p, f"parameters[{i}]") for i, p in enumerate(parameters)]
        except ParameterValueError as exc:
            raise InvalidArgument(str(exc), exc.field) from None
        if strategy.completed == 0:
            raise FailedPrecondition("no model yet: no trial is complete", "strategy_id")
        readout = await self._readout(strategy, "predict", True, np.array([space.to_unit(s) for s in stimuli]))
        wanted = list(metrics) or list(opt.modelled_metrics)
        out = []
        for i, stimulus in enumerate(stimuli):
            means = {m: float(readout.means[i, j]) for j, m in enumerate(opt.modelled_metrics) if m in wanted}
            sems = {m: float(readout.sems[i, j]) for j, m in enumerate(opt.modelled_metrics) if m in wanted}
            out.append(ArmEstimate(0, dict(stimulus), means, sems))
        return out

    async def optimization_trace(self, strategy_id: int) -> list[tuple[int, float]]:
        """Best feasible observed objective (hypervolume for several) after each completed trial."""
        strategy = await self._optimization_strategy(strategy_id)
        readout = await self._readout(strategy, "trace", False)
        return [(tid, float(v)) for tid, v in zip(readout.trial_ids, readout.trace, strict=True)]

    # ------------------------------------------------------------------ trial bookkeeping
    async def abandon_trial(self, strategy_id: int, trial_id: int, failed: bool = False, reason: str = "") -> TrialView:
        strategy = await self.strategy(strategy_id)
        async with strategy.lock:
            trial = strategy.trials.get(trial_id)
            if trial is None:
                raise NotFound(f"trial_id {trial_id} not found in strategy {strategy_id}", "trial_id")
            if trial.state != PENDING:
                raise FailedPrecondition(f"trial_id {trial_id} is {trial.state}, not pending", "trial_id")
            if isinstance(strategy, SweepStrategy) and trial_id in strategy.in_flight_trials:
                raise FailedPrecondition(f"trial_id {trial_id} is being told", "trial_id")
            event = Event(strategy_id, "abandon", {"failed": failed, "reason": reason[:1000]}, trial_id=trial_id)
            await self._commit([event], strategy)
            return TrialView.of(trial, strategy.spec)

    async def list_trials(self, strategy_id: int, state: str | None = None, since: int = 0) -> list[TrialView]:
        """The strategy's trials (in one state, if given; with trial_id >= since, if given)."""
        strategy = await self.strategy(strategy_id)
        if state is not None and state not in (PENDING, COMPLETED, FAILED, ABANDONED):
            raise InvalidArgument(f"state: unknown trial state {state!r}", "state")
        return [
            TrialView.of(t, strategy.spec)
            for t in strategy.trials.values()
            if (state is None or t.state == state) and t.trial_id >= since
        ]

    async def export_trials(self, strategy_id: int = 0) -> list[ExportedTrial]:
        """Every trial (of one strategy when strategy_id is given), by strategy id. Each strategy's
        trials are one consistent snapshot (copied without an await, so no request changes it
        meanwhile); an evicted strategy is read from the journal without being kept in memory."""
        reg = self._registry
        ids = [strategy_id] if strategy_id else sorted([*reg.by_id, *reg.cold])
        out: list[ExportedTrial] = []
        for sid in ids:
            s = reg.by_id.get(sid)
            if s is None and sid in reg.cold and sid not in reg.loading:
                s = await self._read_detached(sid)
            if s is None:
                s = await self.strategy(sid)
            out.extend(ExportedTrial(s.strategy_id, s.name, TrialView.of(t, s.spec)) for t in list(s.trials.values()))
        return out

    async def _read_detached(self, strategy_id: int) -> Strategy:
        """An evicted strategy rebuilt for reading only: not made resident (a read of everything must
        not push the live strategies out of memory), and dropped once the reader is done."""
        try:
            rows = await self.journal.load_rows(strategy_id)
        except Exception as exc:
            raise Unavailable(f"strategy_id {strategy_id}: its journal could not be read ({exc})") from exc
        resident = self._registry.by_id.get(strategy_id)
        if resident is not None:  # brought back meanwhile: it is the current state
            return resident
        return await asyncio.to_thread(self._rebuild, rows)

    async def finish_strategy(self, strategy_id: int) -> FinishResult:
        strategy = await self.strategy(strategy_id)
        async with strategy.lock:
            index = strategy.phase_index
            event = Event(strategy_id, "finish_phase", {"phase_index": index})
            await self._commit([event], strategy)
            return FinishResult(strategy.spec.phases[index].name, index, strategy.is_finished)

    # ------------------------------------------------------------------ read-only
    def parameters(self, strategy_id: int) -> ExperimentShape:
        return self._summary(strategy_id).shape

    async def get_config(self, strategy_id: int, section: str = "", prop: str = "") -> dict[str, dict[str, str]]:
        sections = (await self.strategy(strategy_id)).spec.sections
        if not section:
            if prop:
                raise InvalidArgument("property needs a section", "section")
            return {s: dict(v) for s, v in sections.items()}
        if section not in sections:
            raise NotFound(f"section: config has no section [{section}]", "section")
        if not prop:
            return {section: dict(sections[section])}
        if prop not in sections[section]:
            raise NotFound(f"property: section [{section}] has no property {prop!r}", "property")
        return {section: {prop: sections[section][prop]}}

    async def query(
        self,
        strategy_id: int,
        query_type: str,
        probability_space: bool = False,
        x: Sequence[Mapping[str, Any]] | None = None,
        y: float | None = None,
        constraints: Mapping[str, Any] | None = None,
        background: bool = False,
        outcome: str = "",
    ) -> QueryAnswer:
        """A model query. `background`: computed only when no ask's computation waits (for
        observers such as the dashboard, so that looking never slows an experiment down).
        `outcome`: which outcome's model answers (several outcomes: IndependentGPsModel); "" the first."""
        strategy = await self.strategy(strategy_id)
        space = strategy.spec.space
        if strategy.spec.optimization is not None:
            raise FailedPrecondition(
                "Query models one outcome; optimisation experiments answer PredictMetrics, GetBestParameters and GetParetoFront",
                "strategy_id",
            )
        if query_type not in QUERY_TYPES:
            raise InvalidArgument(f"query_type must be one of {list(QUERY_TYPES)}, got {query_type!r}", "query_type")
        outcome_names = strategy.spec.outcome_names
        if outcome and outcome not in outcome_names:
            raise InvalidArgument(f"outcome: unknown outcome {outcome!r} (known: {list(outcome_names)})", "outcome")
        outcome_index = outcome_names.index(outcome) if outcome else 0
        named: dict[str, Any] = {}
        for key, value in (constraints or {}).items():
            name = str(key)
            if name not in space.by_name and name.lstrip("-").isdigit():  # AEPsych gives parameter indices
                index = int(name)
                if not 0 <= index < len(space.names):
                    raise InvalidArgument(
                        f"constraints: parameter index {index} is not in 0..{len(space.names) - 1} {space.names}", f"constraints.{name}"
                    )
                name = space.names[index]
            named[name] = value
        try:
            fixed_raw = space.validate_partial(named, "constraints")
        except ParameterValueError as exc:
            raise InvalidArgument(str(exc), exc.field) from None
        points: np.ndarray | None = None
        stimuli: list[Stimulus] = []
        if query_type == "prediction":
            if not x:
                raise InvalidArgument("x: prediction needs at least one point", "x")
            if len(x) > self.limits.max_points_per_ask * 10:
                raise InvalidArgument(f"x: at most {self.limits.max_points_per_ask * 10} points", "x")
            unit_rows: list[np.ndarray] = []
            for start in range(0, len(x), _POINTS_PER_STEP):  # a big query (a plot's grid) lets asks in between
                if start:
                    await asyncio.sleep(0)
                try:
                    chunk = [space.validate_stimulus({**s, **fixed_raw}, f"x[{i}]") for i, s in enumerate(x[start : start + _POINTS_PER_STEP], start)]
                except ParameterValueError as exc:
                    raise InvalidArgument(str(exc), exc.field) from None
                stimuli += chunk
                unit_rows += [space.to_unit(s) for s in chunk]
            points = np.array(unit_rows)
        if query_type == "inverse":
            if y is None or not math.isfinite(y):
                raise InvalidArgument("y: inverse needs a finite target y", "y")
            ordinal = strategy.spec.outcome_types[outcome_index] == "ordinal"
            if probability_space and ordinal and strategy.spec.n_levels and not 0 <= y <= strategy.spec.n_levels - 1:
                raise InvalidArgument(f"y: an expected level must lie in [0, {strategy.spec.n_levels - 1}], got {y}", "y")
            if probability_space and not ordinal and not 0 <= y <= 1:
                raise InvalidArgument(f"y: a probability-space target must lie in [0, 1], got {y}", "y")
        if not any(p.is_model_based for p in strategy.spec.phases):
            raise FailedPrecondition("no model: this strategy has no model-based phase", "strategy_id")
        if self.models is None:
            raise FailedPrecondition("no model: this server runs without a model engine", "strategy_id")
        if not strategy.can_fit():
            raise FailedPrecondition("no model yet: the strategy has too little data to fit one", "strategy_id")
        unit_x, values, fit_seconds = await self.models.query(
            strategy, query_type, probability_space, points, y, space.fixed_unit(fixed_raw), background=background, outcome_index=outcome_index
        )
        levels = values.get("level_probabilities")
        results = []
        for i, u in enumerate(unit_x):
            if i and not i % _POINTS_PER_STEP:
                await asyncio.sleep(0)
            if query_type == "prediction":
                stimulus = dict(stimuli[i])  # answer at the points asked about, as given
            else:
                stimulus = space.from_unit(u)
                stimulus.update(fixed_raw)
            results.append(
                QueryPoint(
                    x=stimulus,
                    mean=float(values["mean"][i]),
                    variance=float(values["variance"][i]),
                    probability=float(values["probability"][i]),
                    lower=float(values["lower"][i]),
                    upper=float(values["upper"][i]),
                    level_probabilities=() if levels is None else tuple(float(v) for v in levels[i]),
                )
            )
        return QueryAnswer(query_type, probability_space, results, fit_seconds, outcome_names[outcome_index])

    async def close(self) -> None:
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lease_task
        if self._evicting:  # summaries of the strategies left in memory: the next start need not replay them
            for strategy in list(self._registry.by_id.values()):
                if not self._busy(strategy):
                    self._write_summary(dataclasses.replace(self.view(strategy), resident=False))
        if self._summary_writes:
            await asyncio.gather(*self._summary_writes, return_exceptions=True)
        if self.models is not None:
            await self.models.close()
        await self.journal.close()
