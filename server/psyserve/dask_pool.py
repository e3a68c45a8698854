"""Model computations on a Dask distributed cluster: the executor behind `--compute dask://HOST:PORT`.

Owns the connection to the scheduler, a local priority queue in front of it (real jobs before
speculative ones, promotion, cancelling stale speculations) and the mapping of cluster failures to
UNAVAILABLE. Runs the same pure compute jobs as the local spawn pool (modeling.ComputePool); knows
nothing of strategies, the journal or transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from .errors import Unavailable
from .modeling import REAL, QueuedJob, promote_queued

log = logging.getLogger(__name__)


def scheduler_address(url: str) -> str:
    """`dask://HOST:PORT` (or `tcp://`, `tls://`) -> the scheduler address Dask's Client takes."""
    parsed = urlparse(url)
    if parsed.scheme not in ("dask", "tcp", "tls") or not parsed.hostname or not parsed.port:
        raise ValueError(f"--compute: expected dask://HOST:PORT (or tcp:// / tls://), got {url!r}")
    scheme = "tls" if parsed.scheme == "tls" else "tcp"
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{scheme}://{host}:{parsed.port}"


class DaskComputePool:
    """The compute pool's interface (submit / promote / start / wait_ready / close) on a Dask cluster.

    At most as many jobs as the cluster has worker threads are handed to the scheduler at once; the
    rest wait here, where an ask can promote a queued speculation and a stale one is dropped before
    it costs anything. Jobs carry Dask priorities too, so that several servers sharing one cluster
    still run real requests first. A worker that dies mid-job: Dask reruns the job elsewhere (up to
    its `allowed-failures`), then UNAVAILABLE. The scheduler gone: queued and running jobs answer
    UNAVAILABLE at once, and the next job reconnects, so model asks work again as soon as it is back.
    """

    def __init__(self, url: str, security: Any = None, connect_timeout: float = 5.0) -> None:
        self.address = scheduler_address(url)
        self.security = security
        self.connect_timeout = connect_timeout
        self.workers = 1  # job slots: the cluster's worker threads, refreshed on every connect
        self._client: Any = None
        self._connecting: asyncio.Task[Any] | None = None
        self._queue: list[QueuedJob] = []
        self._seq = itertools.count()
        self._running = 0
        self._pump_task: asyncio.Task[None] | None = None
        self._closed = False
        self._tasks: set[asyncio.Future[Any]] = set()  # result collectors (kept referenced while they run)
        self.submitted = 0
        self.overhead_seconds: list[float] = []  # submit -> result minus the job's own compute time

    # ------------------------------------------------------------------ connection
    async def _connect(self) -> Any:
        client = self._client
        if client is not None and client.status == "running":
            return client
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
        return await asyncio.shield(self._connecting)

    async def _open(self) -> Any:
        from distributed import Client

        old, self._client = self._client, None
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.close(timeout=1), 2)
        try:
            client = await asyncio.wait_for(
                Client(
                    self.address, asynchronous=True, timeout=self.connect_timeout, set_as_default=False, security=self.security
                ),
                self.connect_timeout + 1,
            )
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"the Dask scheduler at {self.address} cannot be reached ({type(exc).__name__}: {exc})") from None
        self._client = client
        self._refresh_slots()
        log.info("connected to the Dask scheduler at %s (%d worker threads)", self.address, self.workers)
        return client

    def _refresh_slots(self) -> None:
        client = self._client
        if client is None:
            return
        workers = client.scheduler_info().get("workers", {})
        self.workers = max(1, sum(int(w.get("nthreads", 1)) for w in workers.values()))

    async def start(self, wait: bool = True) -> None:
        """Connect to the scheduler. A cluster that is not there yet is not fatal: the server serves
        Sobol and bookkeeping RPCs, model asks answer UNAVAILABLE until it can be reached."""
        try:
            await self._connect()
        except Unavailable as exc:
            log.warning("%s; model asks will answer UNAVAILABLE until it is reachable", exc)
            return
        if wait:
            await self.wait_ready()

    async def wait_ready(self, workers: int = 1, timeout: float = 120) -> None:
        """Return once the cluster has at least `workers` workers."""
        client = await self._connect()
        await client.wait_for_workers(workers, timeout=timeout)
        self._refresh_slots()

    def worker_pids(self) -> list[int]:
        return []  # workers are other machines' processes

    # ------------------------------------------------------------------ jobs
    def submit(self, fn: Callable[[Any], Any], arg: Any, priority: int = REAL) -> asyncio.Future[Any]:
        if self._closed:
            raise Unavailable("the compute pool is shut down")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        job = QueuedJob(priority, next(self._seq), fn, arg, future)
        future.add_done_callback(lambda f: self._cancelled(job) if f.cancelled() else None)
        heapq.heappush(self._queue, job)
        self._kick()
        return future

    def promote(self, future: asyncio.Future[Any]) -> None:
        """A real request now waits on this (speculative) job: if it is still queued here, it goes next."""
        promote_queued(self._queue, future)

    @property
    def idle(self) -> bool:
        return self._running < self.workers and not self._queue

    def _kick(self) -> None:
        if self._pump_task is None or self._pump_task.done():
            self._pump_task = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        while self._queue and self._running < self.workers and not self._closed:
            try:
                client = await self._connect()
            except Unavailable as exc:
                self._fail_queued(exc)
                return
            job = heapq.heappop(self._queue)
            if job.future.done():  # cancelled while queued (a stale speculation)
                continue
            job.remote = client.submit(
                job.fn,
                job.arg,
                key=f"psyserve-{getattr(job.fn, '__name__', 'job')}-{uuid.uuid4().hex}",
                priority=-job.priority,  # Dask runs higher priorities first
                pure=False,
            )
            self._running += 1
            self.submitted += 1
            task = asyncio.ensure_future(self._collect(job, time.perf_counter()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _collect(self, job: QueuedJob, submitted_at: float) -> None:
        from distributed import KilledWorker
        from distributed.client import FutureCancelledError

        try:
            result = await job.remote
        except KilledWorker as exc:
            self._settle(job, exc=Unavailable(f"model computation failed: Dask workers died running it ({exc})"))
        except FutureCancelledError as exc:
            if not job.future.done():
                self._settle(job, exc=Unavailable(f"the Dask cluster at {self.address} was lost during the computation ({exc})"))
        except (OSError, TimeoutError) as exc:
            self._settle(job, exc=Unavailable(f"the Dask cluster at {self.address} is unreachable ({type(exc).__name__}: {exc})"))
        except Exception as exc:  # the job's own error, raised in the worker
            self._settle(job, exc=exc)
        else:
            timed = result[0] if isinstance(result, tuple) else result  # generate jobs: (result, state bytes)
            compute = float(getattr(timed, "fit_seconds", 0.0) or 0.0) + float(getattr(timed, "generate_seconds", 0.0) or 0.0)
            if compute:
                self.overhead_seconds.append(max(0.0, time.perf_counter() - submitted_at - compute))
                del self.overhead_seconds[:-1000]
            self._settle(job, result=result)
        finally:
            self._running -= 1
            job.remote = None
            self._kick()

    @staticmethod
    def _settle(job: QueuedJob, result: Any = None, exc: BaseException | None = None) -> None:
        if job.future.done():
            return
        if exc is not None:
            job.future.set_exception(exc)
        else:
            job.future.set_result(result)

    def _cancelled(self, job: QueuedJob) -> None:
        """The engine dropped a stale speculation: cancel it on the cluster too if it was sent."""
        remote = job.remote
        if remote is not None:
            with contextlib.suppress(Exception):
                cancelling = remote.cancel()
                if asyncio.iscoroutine(cancelling) or isinstance(cancelling, asyncio.Future):
                    task = asyncio.ensure_future(cancelling)
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    def _fail_queued(self, exc: Unavailable) -> None:
        queued, self._queue = self._queue, []
        for job in queued:
            self._settle(job, exc=exc)

    async def close(self) -> None:
        self._closed = True
        self._fail_queued(Unavailable("server is shutting down"))
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(timeout=2), 5)
