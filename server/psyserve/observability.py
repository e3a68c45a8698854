"""Operators' view of a running server: Prometheus metrics, one log line per RPC, JSON logs.

Owns the metric definitions, the gRPC interceptor that times and counts every call (and writes the
request log), and the hooks that journal and compute pool call. Reads the service only through
its public views; never changes what an RPC does or answers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .service import ExperimentService

request_log = logging.getLogger("psyserve.rpc")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _ServiceCollector(Collector):
    """Values read from the service and the pool at scrape time (nothing to keep in step)."""

    def __init__(self, service: ExperimentService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        views = self.service.list_strategies()
        live = GaugeMetricFamily("psyserve_strategies_live", "Strategies held by the server, by whether they are finished", labels=["finished"])
        live.add_metric(["false"], sum(not v.is_finished for v in views))
        live.add_metric(["true"], sum(v.is_finished for v in views))
        yield live
        residency = self.service.residency
        resident = GaugeMetricFamily("psyserve_strategies_resident", "Strategies whose trials are held in memory (the others wait in the journal)")
        resident.add_metric([], float(sum(v.resident for v in views)))
        yield resident
        stats = residency.stats
        for name, text, value in (
            ("psyserve_strategy_loads", "Strategies rebuilt from the journal (at start, or on first use after eviction)", stats.loads),
            ("psyserve_strategy_evictions", "Strategies dropped from memory (idle, or beyond --resident-strategies)", stats.evictions),
            ("psyserve_strategy_events_replayed", "Journal events replayed to rebuild strategies", stats.events_replayed),
        ):
            counter = CounterMetricFamily(name, text)
            counter.add_metric([], float(value))
            yield counter
        asks = CounterMetricFamily(
            "psyserve_model_asks",
            "Model-based asks since the server started, by whether a speculative branch had already computed the answer",
            labels=["source"],
        )
        precomputed = sum(v.precomputed_asks for v in views)
        asks.add_metric(["precomputed"], precomputed)
        asks.add_metric(["computed"], sum(v.model_asks for v in views) - precomputed)
        yield asks
        pool = getattr(self.service.models, "pool", None)
        queue = GaugeMetricFamily("psyserve_compute_queue_length", "Compute jobs waiting for a worker")
        queue.add_metric([], float(getattr(pool, "queue_length", 0)))
        yield queue


class Metrics:
    """Every metric of one server, in its own registry (several servers may share a process)."""

    def __init__(self, service: ExperimentService) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rpcs = Counter("psyserve_rpc_requests", "RPCs answered, by method and status code", ["method", "code"], registry=r)
        self.rpc_seconds = Histogram(
            "psyserve_rpc_duration_seconds", "RPC latency in the server, by method and status code", ["method", "code"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.job_seconds = Histogram(
            "psyserve_compute_job_duration_seconds", "Compute job run time in a worker, by priority", ["priority"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.commit_seconds = Histogram("psyserve_journal_commit_seconds", "Journal group commit latency (one fsync)", buckets=_LATENCY_BUCKETS, registry=r)
        self.commit_events = Histogram("psyserve_journal_commit_group_events", "Events written per journal commit", buckets=_GROUP_BUCKETS, registry=r)
        r.register(_ServiceCollector(service))
        service.journal.on_commit = self._on_commit
        pool = getattr(service.models, "pool", None)
        if pool is not None and hasattr(pool, "on_job_done"):
            pool.on_job_done = self._on_job

    def _on_commit(self, seconds: float, events: int) -> None:
        self.commit_seconds.observe(seconds)
        self.commit_events.observe(events)

    def _on_job(self, priority: str, seconds: float) -> None:
        self.job_seconds.labels(priority).observe(seconds)

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpcs.labels(method, code).inc()
        self.rpc_seconds.labels(method, code).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# ---------------------------------------------------------------------- the gRPC interceptor
def _trial_of(method: str, request: Any, response: Any) -> int | None:
    trial = getattr(request, "trial_id", 0)
    if not trial and method == "Ask" and response is not None:
        trials = getattr(response, "trials", None)
        trial = trials[0].trial_id if trials else 0
    return int(trial) or None


def _strategy_of(request: Any, response: Any) -> int | None:
    sid = getattr(request, "strategy_id", 0) or getattr(response, "strategy_id", 0)
    return int(sid) or None


class RequestObserver(grpc.aio.ServerInterceptor):
    """Times every RPC: counts and latency into `metrics` (if given), one line into the
    `psyserve.rpc` log (if `log_requests`): method, strategy, trial, status, duration."""

    def __init__(self, metrics: Metrics | None, log_requests: bool) -> None:
        self.metrics = metrics
        self.log_requests = log_requests

    def _record(self, method: str, code: grpc.StatusCode | None, started: float, request: Any, response: Any) -> None:
        seconds = time.perf_counter() - started
        name = (code or grpc.StatusCode.OK).name
        if self.metrics is not None:
            self.metrics.observe_rpc(method, name, seconds)
        if self.log_requests and request_log.isEnabledFor(logging.INFO):
            strategy, trial = _strategy_of(request, response), _trial_of(method, request, response)
            request_log.info(
                "%s strategy=%s trial=%s status=%s duration_ms=%.2f",
                method,
                strategy,
                trial,
                name,
                seconds * 1000,
                extra={"rpc": {"method": method, "strategy": strategy, "trial": trial, "status": name, "duration_ms": round(seconds * 1000, 3)}},
            )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        full: str = getattr(handler_call_details, "method", "") or ""
        method = full.rsplit("/", 1)[-1]
        if full.startswith("/grpc.health") or full.startswith("/grpc.reflection"):
            return handler
        record = self._record
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                response = None
                try:
                    response = await inner(request, context)
                    return response
                except BaseException:
                    record(method, context.code() or grpc.StatusCode.UNKNOWN, started, request, None)
                    raise
                finally:
                    if response is not None:
                        record(method, context.code(), started, request, response)

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                started = time.perf_counter()
                try:
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException:
                    record(method, context.code() or grpc.StatusCode.UNKNOWN, started, request, None)
                    raise
                record(method, context.code(), started, request, None)

            return grpc.unary_stream_rpc_method_handler(stream, handler.request_deserializer, handler.response_serializer)
        return handler


# ---------------------------------------------------------------------- logging
class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the RPC fields of request logs."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rpc = getattr(record, "rpc", None)
        if isinstance(rpc, dict):
            out.update(rpc)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


JsonFormatter.converter = time.gmtime


def configure_logging(level: str, fmt: str) -> None:
    """Root logging: plain text lines, or JSON objects (`fmt` "json")."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
