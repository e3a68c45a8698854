"""Server life cycle: open the journal, recover strategies, start transports, stop gracefully.

Wires the parts together and owns start/stop order; holds no experiment logic.
"""

from __future__ import annotations

import asyncio
import logging
import signal
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
class RunningServer:
    server: grpc.aio.Server
    service: ExperimentService
    health: Any
    port: int
    extra: list[Any] = field(default_factory=list)
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

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
        interceptors=[BearerTokenInterceptor(options.auth_token)] if options.auth_token else None,
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
    running = RunningServer(server=server, service=service, health=health_servicer, port=port)
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


async def serve(options: ServerOptions) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    running = await start_server(options)
    http = f", HTTP on {options.host}:{running.http.port}" if running.http is not None else ""
    print(f"psyserve listening on {options.host}:{running.port}{http} (database {options.db})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await running.stop(options.grace_seconds)
