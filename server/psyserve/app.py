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
    limits: Limits = field(default_factory=Limits)
    grace_seconds: float = 10.0


@dataclass
class RunningServer:
    server: grpc.aio.Server
    service: ExperimentService
    health: Any
    port: int
    extra: list[Any] = field(default_factory=list)

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
    return PoolModelEngine(workers=options.workers)


async def start_server(options: ServerOptions) -> RunningServer:
    """Start a server; returns once it is serving on `options.port` (0 picks a free port)."""
    journal = await Journal.open(options.db)
    models = _make_models(options)
    if models is not None and hasattr(models, "start"):
        await models.start()  # warm the spawn pool before gRPC starts (grpc/grpc#19793)
    service = ExperimentService(journal, models, options.limits)
    replayed = await service.recover()
    log.info("recovered %d strategies from %d journal events in %s", len(service.list_strategies()), replayed, options.db)

    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ]
    )
    service_pb2_grpc.add_ExperimentServiceServicer_to_server(ExperimentServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"[{options.host}]:{options.port}" if ":" in options.host else f"{options.host}:{options.port}"
    port = server.add_insecure_port(address)
    if port == 0:
        await service.close()
        raise OSError(f"could not bind {address}")
    await server.start()
    running = RunningServer(server=server, service=service, health=health_servicer, port=port)
    if options.aepsych_port is not None:
        from .transports.aepsych_tcp import start_aepsych_server

        running.extra.append(await start_aepsych_server(service, options.host, options.aepsych_port))
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    log.info("psyserve serving gRPC on %s:%d (database %s)", options.host, port, options.db)
    return running


async def serve(options: ServerOptions) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    running = await start_server(options)
    print(f"psyserve listening on {options.host}:{running.port} (database {options.db})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await running.stop(options.grace_seconds)
