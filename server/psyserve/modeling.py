"""Model-based generation for strategies: the compute process pool, its scheduler and speculation.

Owns which compute job runs when (real requests first, speculative branches on idle workers),
crash recovery of the pool, and the per-strategy cache of precomputed results. Builds jobs from a
strategy's data; never mutates a strategy, never touches the journal or a transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .compute import (
    GenerateJob,
    GenerateResult,
    GeneratorSpec,
    ModelSpec,
    QueryJob,
    QueryJobResult,
    TrainingData,
    query,
    worker_init,
)
from .compute.checkpoint import decode_state, encoded_job, pack_checkpoint, unpack_checkpoint
from .compute.contract import part_state
from .compute.optimization import OptimizationGenerateJob, OptimizationGenerateResult, OptimizationReadoutResult
from .compute.optimization_jobs import optimization_readout
from .config import PhaseSpec
from .errors import Unavailable
from .modeling_optimization import generate_job as optimization_job
from .modeling_optimization import readout_job
from .service import Generated, Readout
from .strategy import COMPLETED, PENDING, Strategy

log = logging.getLogger(__name__)

REAL, SPECULATIVE, UNLIKELY, BACKGROUND = 0, 1, 2, 3  # job priorities: lower runs first (BACKGROUND: observers' queries)
DataKey = tuple[tuple[int, float], ...]


def _warmup() -> int:
    return os.getpid()


def _exit_with_parent(parent: int) -> None:
    """Watch the server process: a SIGKILLed server must not leave its workers running."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def _init_worker(server_pid: int) -> None:
    """Workers run at a lower CPU priority than the event loop (on a machine with as many workers
    as cores, RPCs keep their latency while fits run) and exit when the server process dies
    (`server_pid` is passed in: by the time this runs the server may already be gone)."""
    if os.getppid() != server_pid:
        os._exit(0)
    with contextlib.suppress(OSError):
        os.nice(5)
    threading.Thread(target=_exit_with_parent, args=(server_pid,), name="parent-watch", daemon=True).start()
    worker_init()


@dataclass(order=True)
class QueuedJob:
    """A compute job waiting in an executor's local priority queue (lower priority value runs first)."""

    priority: int
    seq: int
    fn: Callable[[Any], Any] = field(compare=False)
    arg: Any = field(compare=False)
    future: asyncio.Future[Any] = field(compare=False)
    attempts: int = field(default=0, compare=False)
    started: float = field(default=0.0, compare=False)
    remote: Any = field(default=None, compare=False)  # an executor's own handle once started (Dask's future)


PRIORITY_NAMES = {REAL: "real", SPECULATIVE: "speculative", UNLIKELY: "unlikely", BACKGROUND: "background"}


def promote_queued(queue: list[QueuedJob], future: asyncio.Future[Any]) -> None:
    """A real request now waits on this (speculative) job: if it is still queued, it runs next."""
    for job in queue:
        if job.future is future and job.priority != REAL:
            job.priority = REAL
            heapq.heapify(queue)
            break


class ComputePool:
    """A spawn ProcessPoolExecutor behind a priority queue: a job starts only on a free worker,
    real jobs before speculative ones. A worker that dies is replaced and its job retried once."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._executor: ProcessPoolExecutor | None = None
        self._queue: list[QueuedJob] = []
        self._seq = itertools.count()
        self._busy = 0
        self._closed = False
        self._warm: asyncio.Future[list[int]] | None = None
        self._busy_background = 0
        self.restarts = 0
        # Observer hook (metrics): called with (priority name, seconds) when a job's run ends.
        self.on_job_done: Callable[[str, float], None] | None = None

    @property
    def queue_length(self) -> int:
        """Jobs waiting for a worker (cancelled speculations not yet popped included)."""
        return len(self._queue)

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(os.getpid(),))

    async def start(self, wait: bool = True) -> None:
        """Spawn and warm every worker (imports torch/botorch). With wait=False the warm-up goes on
        while the server already answers (jobs submitted meanwhile queue in the executor)."""
        self._executor = self._new_executor()
        loop = asyncio.get_running_loop()
        self._warm = asyncio.gather(*(loop.run_in_executor(self._executor, _warmup) for _ in range(self.workers)))
        if wait:
            await self.wait_ready()

    async def wait_ready(self) -> None:
        """Return once every worker has started and imported torch."""
        if self._warm is not None:
            await asyncio.shield(self._warm)

    def worker_pids(self) -> list[int]:
        processes = getattr(self._executor, "_processes", None) or {}
        return list(processes)

    def submit(self, fn: Callable[[Any], Any], arg: Any, priority: int = REAL) -> asyncio.Future[Any]:
        if self._closed:
            raise Unavailable("the compute pool is shut down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, QueuedJob(priority, next(self._seq), fn, arg, future))
        self._pump()
        return future

    def promote(self, future: asyncio.Future[Any]) -> None:
        """A real request now waits on this (speculative) job: if it has not started, run it next."""
        promote_queued(self._queue, future)

    @property
    def idle(self) -> bool:
        return self._busy < self.workers and not self._queue

    def _pump(self) -> None:
        while self._busy < self.workers and self._queue:
            item = self._queue[0]
            if item.priority == BACKGROUND and not item.future.done() and (self._busy_background or (self._busy and self.workers > 1)):
                # An observer's query runs only on an otherwise idle pool, one at a time, so that
                # an ask arriving meanwhile always finds a free worker.
                return
            heapq.heappop(self._queue)
            if item.future.done():  # cancelled while queued (a stale speculation)
                continue
            self._start(item)

    def _start(self, item: QueuedJob) -> None:
        if self._executor is None:
            self._executor = self._new_executor()
        self._busy += 1
        self._busy_background += item.priority == BACKGROUND
        item.attempts += 1
        item.started = time.perf_counter()
        try:
            running = asyncio.wrap_future(self._executor.submit(item.fn, item.arg))
        except BrokenProcessPool as exc:
            self._busy -= 1
            self._busy_background -= item.priority == BACKGROUND
            self._recover(item, exc)
            return
        running.add_done_callback(lambda done: self._finished(item, done))

    def _finished(self, item: QueuedJob, done: asyncio.Future[Any]) -> None:
        self._busy -= 1
        self._busy_background -= item.priority == BACKGROUND
        if self.on_job_done is not None:
            self.on_job_done(PRIORITY_NAMES.get(item.priority, str(item.priority)), time.perf_counter() - item.started)
        exc = done.exception() if not done.cancelled() else None
        if isinstance(exc, BrokenProcessPool):
            self._recover(item, exc)
        elif not item.future.done():
            if exc is not None:
                item.future.set_exception(exc)
            else:
                item.future.set_result(done.result())
        self._pump()

    def _recover(self, item: QueuedJob, exc: BaseException) -> None:
        """A worker died: replace the pool (once per breakage) and retry the job once."""
        broken = self._executor
        if broken is not None and getattr(broken, "_broken", False):
            log.warning("compute worker died (%s); restarting the pool", exc)
            broken.shutdown(wait=False, cancel_futures=False)
            self._executor = None
            self.restarts += 1
        if item.future.done():
            return
        if item.attempts >= 2 or self._closed:
            item.future.set_exception(Unavailable("model computation failed twice: a compute worker died"))
            return
        heapq.heappush(self._queue, item)
        self._pump()

    async def close(self) -> None:
        self._closed = True
        for item in self._queue:
            if not item.future.done():
                item.future.set_exception(Unavailable("server is shutting down"))
        self._queue.clear()
        if self._executor is not None:
            executor = self._executor
            await asyncio.get_running_loop().run_in_executor(None, lambda: executor.shutdown(wait=True, cancel_futures=True))


@dataclass
class _Runtime:
    """Per-strategy model state kept between asks. The next fit warm-starts from `refit_state`: it changes
    only when an ask is committed (never by a speculation), journaled with it, restored on rebuild."""

    refit_state: Any = None  # hyper-parameters of the last full fit (ModelState, OptimizationState)
    last_state: Any = None  # the model behind the last served point
    refit_blob: bytes = b""  # the same two states as bytes (what the journal keeps)
    last_blob: bytes = b""
    cache: dict[tuple[Any, ...], asyncio.Future[tuple[GenerateResult | OptimizationGenerateResult, bytes]]] = field(default_factory=dict)
    started: dict[tuple[Any, ...], float] = field(default_factory=dict)
    # ordinal outcomes: the last served points (unit cube) and the model's level probabilities there
    level_points: np.ndarray | None = None
    level_probabilities: np.ndarray | None = None


def training_rows(strategy: Strategy, extra: tuple[int, float] | None = None) -> tuple[TrainingData, DataKey]:
    """The model's data in trial order, optionally with one pending trial given a hypothetical outcome.

    Returns (TrainingData with X n x d, or n x 2 x d for pairwise; the data key: (trial id, y) pairs).
    """
    space, k = strategy.spec.space, strategy.spec.stimuli_per_trial
    several = len(strategy.spec.outcome_names) > 1  # one model per outcome: y is n x m, outcomes in config order
    xs, ys, key = [], [], []
    for trial in strategy.trials.values():
        y: Any
        if trial.state == COMPLETED and trial.model_data:
            y = tuple(o.value for o in trial.outcomes) if several else trial.outcomes[0].value
        elif extra is not None and trial.trial_id == extra[0]:
            y = extra[1]
        else:
            continue
        xs.append([space.to_unit(s) for s in trial.stimuli])
        ys.append(y)
        key.append((trial.trial_id, y))
    X = np.array(xs, dtype=float).reshape(len(xs), k, space.dim)
    if k == 1:
        X = X[:, 0, :]
    return TrainingData(X=X, y=np.array(ys, dtype=float)), tuple(key)


def job_seed(strategy: Strategy, phase_index: int, ask_index: int) -> int:
    digest = hashlib.sha256(f"{strategy.seed}:{strategy.spec.phases[phase_index].seed}:{phase_index}:{ask_index}".encode())
    return int.from_bytes(digest.digest()[:4], "little") & 0x7FFFFFFF


def model_spec(strategy: Strategy, phase: PhaseSpec) -> ModelSpec:
    assert phase.model is not None
    dim = strategy.spec.space.dim
    parts = tuple(ModelSpec(kind=p.model, dim=dim, options=dict(p.model_options)) for p in phase.parts)
    return ModelSpec(kind=phase.model, dim=dim, options=dict(phase.model_options), parts=parts)


def generator_spec(phase: PhaseSpec, ask_index: int = 0) -> GeneratorSpec:
    parts = tuple(GeneratorSpec(acqf=p.acqf, options=dict(p.generator_options)) for p in phase.parts)
    options = dict(phase.generator_options)
    if parts:  # IndependentOptimizeAcqfGenerator: the parts take turns, one per asked point, across asks
        options["turn"] = ask_index
    return GeneratorSpec(acqf=phase.acqf or "", options=options, parts=parts)


class PoolModelEngine:
    """The ModelEngine the service calls: generate/query in the pool, speculate between ask and tell."""

    def __init__(self, workers: int | None = None, speculate: bool | None = None, pool: Any = None) -> None:
        # the local spawn pool, or any executor with its interface (dask_pool.DaskComputePool)
        self.pool = pool if pool is not None else ComputePool(workers)
        if speculate is None:  # PSYSERVE_SPECULATE=0 turns speculation off (for comparisons)
            speculate = os.environ.get("PSYSERVE_SPECULATE", "1") not in ("0", "false", "no")
        self.speculate = speculate
        self._runtimes: dict[int, _Runtime] = {}

    def _runtime(self, strategy: Strategy) -> _Runtime:
        runtime = self._runtimes.get(strategy.strategy_id)
        if runtime is None:
            runtime = self._runtimes[strategy.strategy_id] = _Runtime()
        return runtime

    async def start(self, wait: bool = True) -> None:
        await self.pool.start(wait)

    # -------------------------------------------------------------- job construction
    def _job(
        self, strategy: Strategy, phase_index: int, n: int, fixed: dict[int, float], extra: tuple[int, float] | None
    ) -> tuple[tuple[Any, ...], GenerateJob | OptimizationGenerateJob]:
        phase = strategy.spec.phases[phase_index]
        runtime = self._runtime(strategy)
        data, data_key = training_rows(strategy, extra)
        ask_index = strategy.phase_asks[phase_index]
        if strategy.spec.optimization is not None:  # one GP per metric; pending points matter too
            seed = job_seed(strategy, phase_index, ask_index)
            extra_key, opt_job = optimization_job(strategy, phase_index, n, fixed, seed, runtime.refit_state)
            return (phase_index, ask_index, n, tuple(sorted(fixed.items())), *extra_key, data_key), opt_job
        refit = runtime.refit_state is None or ask_index % phase.refit_every == 0
        job = GenerateJob(
            model=model_spec(strategy, phase),
            generator=generator_spec(phase, ask_index),
            data=data,
            num_points=n,
            seed=job_seed(strategy, phase_index, ask_index),
            warm_state=runtime.refit_state,  # a full refit starts from it (deterministic: the last served fit)
            refit=refit,
            fixed=dict(fixed),
        )
        key = (phase_index, ask_index, n, tuple(sorted(fixed.items())), refit, data_key)
        return key, job

    # -------------------------------------------------------------- ModelEngine API
    async def generate(self, strategy: Strategy, phase_index: int, n: int, fixed: dict[int, float]) -> Generated:
        runtime = self._runtime(strategy)
        key, job = self._job(strategy, phase_index, n, fixed, None)
        arrived = time.perf_counter()
        future = runtime.cache.pop(key, None)
        speculative = runtime.started.pop(key, None) is not None
        precomputed = future is not None and future.done() and not future.cancelled() and future.exception() is None
        if future is None or future.cancelled():
            future, speculative = self.pool.submit(encoded_job(job), job, REAL), False
        else:
            self.pool.promote(future)
        try:
            result, blob = await asyncio.shield(future)
        except asyncio.CancelledError:
            runtime.cache[key] = future  # the caller gave up; keep the work for its retry
            raise
        except Unavailable:
            raise
        except Exception as exc:
            if not speculative:
                raise Unavailable(f"model computation failed: {type(exc).__name__}: {exc}") from exc
            result, blob = await self.pool.submit(encoded_job(job), job, REAL)  # retry a failed speculation for real
        refit = isinstance(job, OptimizationGenerateJob) or job.refit
        refit_state, refit_blob = (result.state, blob) if refit else (runtime.refit_state, runtime.refit_blob)

        def served() -> None:
            """The ask is committed: the next asks start from its fit (a failed commit changes nothing)."""
            runtime.last_state, runtime.last_blob = result.state, blob
            runtime.refit_state, runtime.refit_blob = refit_state, refit_blob
            level_probabilities = getattr(result, "level_probabilities", None)  # an optimisation job's result has none
            if level_probabilities is not None:
                runtime.level_points = result.points.reshape(n, -1)
                runtime.level_probabilities = level_probabilities

        self._drop_stale(strategy)
        return Generated(
            points=result.points.reshape(n, strategy.spec.stimuli_per_trial, strategy.spec.space.dim),
            precomputed=precomputed,
            fit_seconds=result.fit_seconds,
            generate_seconds=result.generate_seconds,
            wait_seconds=time.perf_counter() - arrived,
            checkpoint=pack_checkpoint(refit_blob, blob),
            served=served,
        )

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
    ) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
        phase = next(p for p in strategy.spec.phases if p.is_model_based)
        current = strategy.phase
        if current.is_model_based:
            phase = current
        data, _ = training_rows(strategy)
        runtime = self._runtime(strategy)
        spec = model_spec(strategy, phase)
        state = runtime.last_state if runtime.last_state is not None and runtime.last_state.kind == phase.model else None
        if spec.parts:  # one model per outcome: ask the outcome's own model, on its own column
            spec, state = spec.parts[outcome_index], part_state(state, outcome_index, spec.parts[outcome_index].kind)
            data = TrainingData(X=data.X, y=np.asarray(data.y, dtype=float).reshape(len(data.X), -1)[:, outcome_index])
        job = QueryJob(
            model=spec,
            data=data,
            state=state,
            query_type=query_type,
            probability_space=probability_space,
            x=x,
            y=y,
            fixed=dict(fixed),
            seed=strategy.seed & 0x7FFFFFFF,
        )
        try:
            result: QueryJobResult = await self.pool.submit(query, job, BACKGROUND if background else REAL)
        except Unavailable:
            raise
        except Exception as exc:
            raise Unavailable(f"model query failed: {type(exc).__name__}: {exc}") from exc
        values = {
            "mean": result.mean,
            "variance": result.variance,
            "probability": result.probability,
            "lower": result.lower,
            "upper": result.upper,
        }
        if result.level_probabilities is not None:
            values["level_probabilities"] = result.level_probabilities
        return result.x, values, result.fit_seconds

    async def optimization_readout(self, strategy: Strategy, kind: str, use_model: bool, x: np.ndarray | None) -> Readout:
        """Best point, Pareto front, predictions or trace of an optimisation strategy, in the pool."""
        job, trial_ids = readout_job(strategy, kind, use_model, x, self._runtime(strategy).refit_state)
        try:
            result: OptimizationReadoutResult = await self.pool.submit(optimization_readout, job, REAL)
        except (Unavailable, ValueError):
            raise
        except Exception as exc:
            raise Unavailable(f"model read-out failed: {type(exc).__name__}: {exc}") from exc
        if kind == "predict":
            return Readout([], result.mean, result.sem, result.trace)
        if kind == "trace":
            return Readout(trial_ids, result.mean, result.sem, result.trace)
        return Readout([trial_ids[r] for r in result.rows], result.mean, result.sem, result.trace)

    def data_changed(self, strategy: Strategy) -> None:
        """Called after every ask and tell: start the computations the next ask will probably need."""
        if not self.speculate:
            return
        self._drop_stale(strategy)
        pending = [t for t in strategy.trials.values() if t.state == PENDING]
        if not pending:
            self._prefetch(strategy, None)
        elif len(pending) == 1 and strategy.spec.outcome_types == ("ordinal",) and strategy.spec.n_levels:
            # n_levels possible answers: only the two likeliest are computed ahead (as many jobs as a
            # binary tell's), by the model's level probabilities at the pending point
            levels = self._likely_levels(strategy, pending[0])
            self._prefetch(strategy, (pending[0].trial_id, levels[0]), SPECULATIVE)
            if len(levels) > 1:
                self._prefetch(strategy, (pending[0].trial_id, levels[1]), UNLIKELY)
        elif len(pending) == 1 and strategy.spec.outcome_types == ("binary",):
            # The likelier answer first: at a level-set target t the next point sits where
            # P(yes) is about t. Under load the unlikely branch waits and is usually dropped.
            target = float(strategy.phase.generator_options.get("target", 0.75))
            likely = 1.0 if target >= 0.5 else 0.0
            self._prefetch(strategy, (pending[0].trial_id, likely), SPECULATIVE)
            self._prefetch(strategy, (pending[0].trial_id, 1.0 - likely), UNLIKELY)

    def _likely_levels(self, strategy: Strategy, trial: Any) -> list[float]:
        """Ordinal levels, likeliest first: the served model's probabilities at the trial's point when
        it is one the model proposed (within rounding), else the levels told so far by frequency."""
        levels = int(strategy.spec.n_levels or 2)
        runtime = self._runtime(strategy)
        weights = np.array([strategy.outcome_counts[float(k)] for k in range(levels)], dtype=float)
        weights += 1e-3 * (1.0 - np.abs(np.arange(levels) - (levels - 1) / 2) / levels)  # ties: middle levels first
        if runtime.level_points is not None and runtime.level_probabilities is not None and len(trial.stimuli) == 1:
            unit = np.asarray(strategy.spec.space.to_unit(trial.stimuli[0]), dtype=float)
            distance = np.linalg.norm(runtime.level_points - unit, axis=1)
            nearest = int(np.argmin(distance))
            if distance[nearest] < 0.05 and runtime.level_probabilities.shape[1] == levels:
                weights = runtime.level_probabilities[nearest]
        return [float(k) for k in np.argsort(-weights, kind="stable")]

    def _prefetch(self, strategy: Strategy, extra: tuple[int, float] | None, priority: int = SPECULATIVE) -> None:
        phase_index = strategy.phase_for_next_ask(extra_outcome=None if extra is None else extra[1])
        phase = strategy.spec.phases[phase_index]
        if not phase.is_model_based:
            return
        key, job = self._job(strategy, phase_index, 1, {}, extra)
        runtime = self._runtime(strategy)
        if key in runtime.cache:
            return
        runtime.cache[key] = self.pool.submit(encoded_job(job), job, priority)
        runtime.started[key] = time.perf_counter()

    def _drop_stale(self, strategy: Strategy) -> None:
        """Forget cached results that can no longer match (older data); cancel those not started."""
        runtime = self._runtime(strategy)
        _, current = training_rows(strategy)
        have = set(current)
        for key in list(runtime.cache):
            data_key: DataKey = key[-1]
            if len(data_key) - len(current) in (0, 1) and have.issubset(data_key):
                continue
            future = runtime.cache.pop(key)
            runtime.started.pop(key, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved, so asyncio does not log it

    def restore(self, strategy_id: int, checkpoint: bytes) -> None:
        """The strategy was rebuilt from the journal (restart, eviction): its fits continue from the
        states journaled with its last model ask (unreadable ones: the next fit starts cold)."""
        try:
            refit_blob, last_blob = unpack_checkpoint(checkpoint)
            refit_state, last_state = decode_state(refit_blob), decode_state(last_blob)
        except ValueError as exc:
            log.warning("strategy %s: journaled model state unreadable (%s); its next fit starts cold", strategy_id, exc)
            return
        self._runtimes[strategy_id] = _Runtime(refit_state, last_state, refit_blob, last_blob)

    def forget(self, strategy_id: int) -> None:
        """The strategy left memory: drop its model state and cancel its speculations not yet
        started (a running one finishes and is dropped). When it comes back, restore() gives it
        the journaled states again."""
        runtime = self._runtimes.pop(strategy_id, None)
        if runtime is None:
            return
        for future in runtime.cache.values():
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved, so asyncio does not log it

    async def close(self) -> None:
        for runtime in self._runtimes.values():
            for future in runtime.cache.values():
                if not future.done():
                    future.cancel()
            runtime.cache.clear()
        await self.pool.close()
