"""Server life cycle: open the journal, recover strategies, start transports, stop gracefully.

Wires the parts together and owns start/stop order; holds no experiment logic.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from psyserve_client._proto.psyserve.v1 import service_pb2, service_pb2_grpc

from .auth import AuthConfigError, BearerTokenInterceptor, check_token, is_loopback, server_credentials
from .journal import Journal
from .service import ExperimentService, Limits, ModelEngine
from .transports.grpc_api import ExperimentServicer

log = logging.getLogger(__name__)

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["ExperimentService"].full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 50051
    db: str = "psyserve.db"
    workers: int | None = None
    models: bool = True
    aepsych_port: int | None = None
    compute: str | None = None  # "dask://HOST:PORT": model jobs on a Dask cluster instead of the local pool
    dask_tls: tuple[str, str | None, str | None] | None = None  # (CA, client cert, client key) for a tls:// scheduler
    limits: Limits = field(default_factory=Limits)
    grace_seconds: float = 10.0
    auth_token: str | None = None  # when set, every RPC but health and reflection needs "authorization: Bearer <token>"
    tls_cert: str | None = None  # PEM certificate chain file; with tls_key, serve TLS instead of plaintext
    tls_key: str | None = None  # PEM private key file
    dashboard: bool = False  # serve the web dashboard and /metrics (psyserve.dashboard)
    dashboard_host: str | None = None  # default: `host`
    dashboard_port: int | None = None  # own port for the dashboard (0: a free one); default 8081, or none
    # when --http-port is given (the dashboard is then mounted on the HTTP port)
    request_log: bool = False  # one `psyserve.rpc` log line per RPC (on with log_format "json")
    log_format: str = "text"  # text | json (the logging setup itself is the CLI's)
    http_port: int | None = None  # also serve Connect (HTTP/JSON) and gRPC-Web on this port (0 picks a free one)
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call the HTTP port (none by default)

    def check_security(self) -> grpc.ServerCredentials | None:
        """Validate the auth/TLS settings; return TLS server credentials (None: plaintext).
        Raises AuthConfigError for a setting that cannot be served safely."""
        if self.auth_token is not None:
            check_token(self.auth_token, "auth token")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise AuthConfigError("TLS needs both --tls-cert and --tls-key")
        if self.aepsych_port is not None and (self.auth_token or self.tls_cert) and not is_loopback(self.host):
            raise AuthConfigError(
                f"--aepsych-port has neither authentication nor encryption: with an auth token or TLS it is "
                f"only served on a loopback host, not {self.host!r}"
            )
        host = self.dashboard_host or self.host
        if self.dashboard and not is_loopback(host) and self.auth_token is None:
            log.warning("serving the dashboard on %s without --auth-token: anyone who can reach it sees every experiment", host)
        if self.cors_origins:
            if self.http_port is None:
                raise AuthConfigError("--cors-origin applies to the HTTP port: it needs --http-port")
            from .transports.http_api import check_cors_origins

            try:
                check_cors_origins(self.cors_origins)
            except ValueError as exc:
                raise AuthConfigError(str(exc)) from None
        if self.tls_cert is not None and self.tls_key is not None:
            return server_credentials(self.tls_cert, self.tls_key)
        return None


@dataclass
class _Closer:
    """Something RunningServer.stop closes that has a plain close() (the mounted dashboard)."""

    closer: Callable[[], None]

    async def close(self) -> None:
        self.closer()


@dataclass
class RunningServer:
    server: grpc.aio.Server
    service: ExperimentService
    health: Any
    port: int
    extra: list[Any] = field(default_factory=list)
    dashboard_port: int | None = None
    metrics: Any = None  # observability.Metrics when the dashboard (and so /metrics) is on
    http: Any = None  # transports.http_api.HttpServer when --http-port is given (.port, .router.mount)

    async def stop(self, grace: float = 10.0) -> None:
        """Refuse new work, let in-flight RPCs finish, then flush and close the journal."""
        await self.health.enter_graceful_shutdown()
        for closer in self.extra:
            await closer.close()
        await self.server.stop(grace)
        await self.service.close()


def _make_models(options: ServerOptions) -> ModelEngine | None:
    if not options.models:
        return None
    try:
        from .modeling import PoolModelEngine
    except ImportError:  # pragma: no cover - model support not installed
        log.warning("model support unavailable: model-based phases will answer FAILED_PRECONDITION")
        return None
    if options.compute:
        from .dask_pool import DaskComputePool

        security = None
        if options.dask_tls is not None:
            from distributed.security import Security

            ca, cert, key = options.dask_tls
            security = Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
        return PoolModelEngine(pool=DaskComputePool(options.compute, security=security))
    return PoolModelEngine(workers=options.workers)


async def start_server(options: ServerOptions) -> RunningServer:
    """Start a server; returns once it is serving on `options.port` (0 picks a free port)."""
    credentials = options.check_security()  # before anything is opened: a bad setting fails fast
    if options.auth_token is None and not is_loopback(options.host):
        log.warning("serving %s without --auth-token: anyone who can reach this address can use the server", options.host)
    journal = await Journal.open(options.db)
    models = _make_models(options)
    if models is not None and hasattr(models, "start"):
        # Workers are spawned (fork+exec, never a bare fork after gRPC started: grpc/grpc#19793)
        # and warm up (torch imports) while the server already answers: restart stays fast.
        await models.start(wait=False)
    service = ExperimentService(journal, models, options.limits)
    replayed = await service.recover()
    log.info("recovered %d strategies from %d journal events in %s", len(service.list_strategies()), replayed, options.db)

    interceptors: list[grpc.aio.ServerInterceptor] = []
    metrics = None
    if options.dashboard or options.request_log or options.log_format == "json":
        from .observability import Metrics, RequestObserver

        metrics = Metrics(service) if options.dashboard else None
        # first, so that it also times and counts the calls the token check turns away
        interceptors.append(RequestObserver(metrics, log_requests=options.request_log or options.log_format == "json"))
    if options.auth_token:
        interceptors.append(BearerTokenInterceptor(options.auth_token))
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        interceptors=interceptors or None,
    )
    service_pb2_grpc.add_ExperimentServiceServicer_to_server(ExperimentServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"[{options.host}]:{options.port}" if ":" in options.host else f"{options.host}:{options.port}"
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:  # grpc raises rather than returning 0 when it cannot bind
        port = 0
    if port == 0:
        await service.close()
        raise OSError(f"could not bind {address}")
    http = None
    if options.http_port is not None:  # before the gRPC port answers: a client that sees one sees both
        from .transports.http_api import start_http_server

        try:
            http = await start_http_server(
                service,
                options.host,
                options.http_port,
                authorize=BearerTokenInterceptor(options.auth_token).allows if options.auth_token else None,
                cors_origins=options.cors_origins,
                tls_cert=options.tls_cert,
                tls_key=options.tls_key,
            )
        except OSError:
            await service.close()
            raise
    await server.start()
    running = RunningServer(server=server, service=service, health=health_servicer, port=port, metrics=metrics)
    if options.dashboard:
        from .dashboard import DashboardApp, start_dashboard

        app = DashboardApp(service, token=options.auth_token, metrics=metrics, secure_cookie=credentials is not None)
        if http is not None:  # every path the API does not use: /, /s/<id>, /api/..., /metrics
            http.router.mount("/", app)
            log.info("dashboard and /metrics on the HTTP port %d", http.port)
        own_port = options.dashboard_port if options.dashboard_port is not None else (None if http is not None else 8081)
        if own_port is not None:
            try:
                dashboard = await start_dashboard(app, options.dashboard_host or options.host, own_port, options.tls_cert, options.tls_key)
            except BaseException:
                await server.stop(0)
                if http is not None:
                    await http.close()
                await service.close()
                raise
            running.extra.append(dashboard)
            running.dashboard_port = dashboard.port
            log.info("dashboard and /metrics on http%s://%s:%d/", "s" if credentials else "", options.dashboard_host or options.host, dashboard.port)
        elif http is not None:
            running.extra.append(_Closer(app.close))
    if options.aepsych_port is not None:
        from .transports.aepsych_tcp import start_aepsych_server

        running.extra.append(await start_aepsych_server(service, options.host, options.aepsych_port))
    if http is not None:
        running.http = http
        running.extra.append(http)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "psyserve serving gRPC%s on %s:%d (database %s%s)",
        " over TLS" if credentials else "",
        options.host,
        port,
        options.db,
        ", auth token required" if options.auth_token else "",
    )
    return running


def _freeze_startup_heap(options: ServerOptions) -> None:
    """Take what start-up imported out of the cyclic garbage collector's view (`gc.freeze`). A full
    collection otherwise walks those ~90k module objects every time it runs: a 0.1 s pause of the
    event loop, so of every participant's ask in flight (and more garbage made per second, as the
    dashboard's feeds make, brings more of them). Called before any strategy is loaded, so nothing
    frozen is data that could later become garbage. Also builds one scipy Sobol engine: the first in a
    process reads the direction numbers (a .npz file), 10–30 ms that would otherwise stop the event
    loop at the first participant's first Sobol ask."""
    import gc
    import importlib

    from scipy.stats import qmc

    qmc.Sobol(d=1, scramble=False).random(1)
    if options.dashboard:
        importlib.import_module(".dashboard", __package__)
    if options.models:
        importlib.import_module(".modeling", __package__)
    gc.collect()
    gc.freeze()


async def serve(options: ServerOptions) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    _freeze_startup_heap(options)
    running = await start_server(options)
    http = f", HTTP on {options.host}:{running.http.port}" if running.http is not None else ""
    print(f"psyserve listening on {options.host}:{running.port}{http} (database {options.db})", flush=True)
    scheme = "https" if options.tls_cert else "http"
    if running.dashboard_port is not None:
        print(f"dashboard: {scheme}://{options.dashboard_host or options.host}:{running.dashboard_port}/", flush=True)
    elif options.dashboard and running.http is not None:
        print(f"dashboard: {scheme}://{options.host}:{running.http.port}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await running.stop(options.grace_seconds)
