"""HTTP transport: ExperimentService over the Connect protocol (JSON and binary protobuf) and gRPC-Web
(binary and text), as one ASGI app that uvicorn serves inside the server's event loop.

Owns the HTTP wire only. Protocol handling (framing, codecs, Connect error bodies) is connectrpc's;
message conversion and error statuses are the gRPC servicer's (transports/grpc_api.py), called with a
context whose `abort` raises the matching ConnectError with the same google.rpc details. Holds no
experiment logic and must not touch strategies, the journal or the model engine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
import uvicorn
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.compat._codec import ProtoJSONCodec
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.request import RequestContext
from google.protobuf import descriptor_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from protobuf.wkt import Any as AnyPb
from protobuf.wkt import FileDescriptorSet
from starlette.middleware.cors import CORSMiddleware

from psyserve_client._proto.psyserve.v1 import service_pb2
from psyserve_client._proto.psyserve.v1.service_connect import ExperimentServiceASGIApplication

from ..service import ExperimentService
from .grpc_api import ExperimentServicer

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message_ = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message_]]
Send = Callable[[Message_], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SERVICE_DESCRIPTOR = service_pb2.DESCRIPTOR.services_by_name["ExperimentService"]
SERVICE_PATH = "/" + SERVICE_DESCRIPTOR.full_name
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the gRPC port's limit (app.MAX_MESSAGE_BYTES)
BODY_TIMEOUT_SECONDS = 60.0  # a request body may pause this long (the AEPsych port's request timeout)
_UNAUTHENTICATED = "missing or invalid credentials: send header 'authorization: Bearer <token>'"

#: Request headers a browser may send cross-origin (Connect, gRPC-Web, auth), and response headers it may read.
CORS_ALLOW_HEADERS = [
    "authorization",
    "content-type",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-content-encoding",
    "connect-accept-encoding",
    "grpc-timeout",
    "x-grpc-web",
    "x-user-agent",
]
CORS_EXPOSE_HEADERS = ["grpc-status", "grpc-message", "grpc-status-details-bin", "content-encoding", "connect-content-encoding"]
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


# ---------------------------------------------------------------------- errors: gRPC status → Connect error
def _detail_registry() -> Any:
    """protobuf-py descriptors of google.rpc's error details, so Connect error bodies carry a readable "debug"."""
    files = descriptor_pb2.FileDescriptorSet()
    for module in (duration_pb2, error_details_pb2):
        module.DESCRIPTOR.CopyToProto(files.file.add())
    for file in files.file:  # CopyToProto leaves json_name empty; protoc fills it, and protobuf-py's JSON needs it
        for message in file.message_type:
            for nested in [message, *message.nested_type]:
                for f in nested.field:
                    f.json_name = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f.name)
    return FileDescriptorSet.from_binary(files.SerializeToString()).to_registry()


_DETAILS = _detail_registry()


def _connect_detail(detail: Any) -> ErrorDetail:
    """One google.protobuf.Any of a gRPC status as a Connect error detail (decoded when its type is known)."""
    any_msg = AnyPb(type_url=detail.type_url, value=detail.value)
    desc = _DETAILS.message(detail.type_url.rpartition("/")[2])
    decoded = any_msg.unpack(desc) if desc is not None else None
    return ErrorDetail(decoded if decoded is not None else any_msg)


def connect_error(code: grpc.StatusCode, message: str, trailing_metadata: Iterable[tuple[str, Any]] = ()) -> ConnectError:
    """The Connect error that says what the gRPC status (with its rich details, if any) says."""
    details: list[ErrorDetail] = []
    for key, value in trailing_metadata or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            details.extend(_connect_detail(d) for d in status.details)
    name = {"CANCELLED": "CANCELED", "OK": "UNKNOWN"}.get(code.name, code.name)
    return ConnectError(Code[name], message, details)


class _ServicerContext:
    """The part of grpc.aio.ServicerContext the servicer uses, over a Connect request."""

    def __init__(self, ctx: RequestContext[Any, Any]) -> None:
        self._ctx = ctx
        self._deadline = time.monotonic() + ctx.timeout_ms / 1000 if ctx.timeout_ms is not None else None

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise connect_error(code, details, trailing_metadata)

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return tuple(self._ctx.request_headers.allitems())

    def peer(self) -> str:
        return self._ctx.client_address or ""


# ---------------------------------------------------------------------- the service, as connectrpc sees it
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _delegate(name: str, server_streaming: bool) -> Callable[..., Any]:
    if server_streaming:

        async def stream(
            self: ConnectExperimentService, request: Message, ctx: RequestContext[Any, Any]
        ) -> AsyncIterator[Message]:
            async for item in getattr(self.servicer, name)(request, _ServicerContext(ctx)):
                yield item

        stream.__name__ = _snake(name)
        return stream

    async def unary(self: ConnectExperimentService, request: Message, ctx: RequestContext[Any, Any]) -> Message:
        return await getattr(self.servicer, name)(request, _ServicerContext(ctx))  # type: ignore[no-any-return]

    unary.__name__ = _snake(name)
    return unary


class ConnectExperimentService:
    """The generated connectrpc ExperimentService protocol (snake_case methods), every method delegating to
    the gRPC servicer's; built from the service descriptor, so an RPC added to the proto is served here too."""

    def __init__(self, service: ExperimentService) -> None:
        self.servicer = ExperimentServicer(service)


for _method in SERVICE_DESCRIPTOR.methods:
    setattr(ConnectExperimentService, _snake(_method.name), _delegate(_method.name, _method.server_streaming))


#: allows(method, metadata) -> bool: the gRPC port's token check (auth.BearerTokenInterceptor.allows), handed in by the app
Authorize = Callable[[str, Sequence[tuple[str, str]]], bool]


class BearerAuth:
    """connectrpc metadata interceptor: refuses a request without the token before its body is read."""

    def __init__(self, allows: Authorize) -> None:
        self._allows = allows

    async def on_start(self, ctx: RequestContext[Any, Any]) -> None:
        method = f"/{ctx.method.service_name}/{ctx.method.name}"
        offered = [("authorization", v) for v in ctx.request_headers.getall("authorization")]
        if not self._allows(method, offered):
            raise ConnectError(Code.UNAUTHENTICATED, _UNAUTHENTICATED)

    async def on_end(self, token: None, ctx: RequestContext[Any, Any], error: Exception | None, /) -> None:
        return None


class _JSONCodec(ProtoJSONCodec):
    """Proto3 JSON, compact; unknown fields refused (a misspelt field is an error, not silently ignored);
    an empty body is the empty message, as in binary protobuf."""

    def __init__(self) -> None:
        super().__init__(ignore_unknown_fields=False)

    def encode(self, message: Message) -> bytes:
        from google.protobuf.json_format import MessageToJson

        return MessageToJson(message, indent=None).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        if not data.strip():
            return message_class()
        try:
            return super().decode(data, message_class)
        except Exception as exc:  # json_format.ParseError, UnicodeDecodeError, RecursionError
            raise ConnectError(Code.INVALID_ARGUMENT, f"malformed JSON request body: {exc}") from None


class _BinaryCodec:
    """google.protobuf binary, with a parse failure as INVALID_ARGUMENT naming the message type."""

    _inner = google_protobuf_binary_codec()

    def name(self) -> str:
        return "proto"

    def encode(self, message: Message) -> bytes:
        return self._inner.encode(message)  # type: ignore[no-any-return]

    def decode(self, data: bytes | bytearray, message_class: type[Any]) -> Any:
        try:
            return message_class.FromString(bytes(data))
        except Exception as exc:  # google.protobuf.message.DecodeError
            raise ConnectError(
                Code.INVALID_ARGUMENT, f"malformed protobuf request body for {message_class.__name__}: {exc}"
            ) from None


# ---------------------------------------------------------------------- gRPC-Web text (base64) ↔ binary
class GrpcWebText:
    """ASGI middleware: `application/grpc-web-text` requests are base64-decoded and handed on as binary
    gRPC-Web; the response is base64-encoded back (connectrpc speaks only the binary form)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers", ()))
        ctype = next((v for k, v in headers if k == b"content-type"), b"")
        if not ctype.startswith(b"application/grpc-web-text"):
            await self.app(scope, receive, send)
            return
        binary_type = b"application/grpc-web" + ctype[len(b"application/grpc-web-text") :]
        scope = dict(scope)
        scope["headers"] = [(k, binary_type if k == b"content-type" else v) for k, v in headers]
        text_type = ctype
        received = bytearray()

        async def receive_decoded() -> Message_:
            # Requests are single messages (unary or server streaming): decode once the body is complete.
            message = await receive()
            if message["type"] != "http.request":
                return message
            received.extend(message.get("body", b""))
            if message.get("more_body", False):
                return {**message, "body": b""}
            return {**message, "body": _b64decode_stream(bytes(received))}

        carry = bytearray()

        async def send_encoded(message: Message_) -> None:
            if message["type"] == "http.response.start":
                out = [
                    (k, text_type if k == b"content-type" and v.startswith(b"application/grpc-web") else v)
                    for k, v in message.get("headers", ())
                ]
                message = {**message, "headers": out}
            elif message["type"] == "http.response.body":
                carry.extend(message.get("body", b""))
                more = message.get("more_body", False)
                usable = len(carry) - len(carry) % 3 if more else len(carry)
                body = base64.b64encode(bytes(carry[:usable]))
                del carry[:usable]
                message = {**message, "body": body}
            await send(message)

        await self.app(scope, receive_decoded, send_encoded)


def _b64decode_stream(text: bytes) -> bytes:
    """Decode gRPC-Web text: base64, possibly several padded pieces back to back (one per message).
    Undecodable input comes back as a truncated frame, which the protocol layer refuses as malformed."""
    text = bytes(c for c in text if c not in b" \t\r\n")
    out = []
    try:
        for piece in re.findall(rb"[^=]*=*", text):
            if piece:
                out.append(base64.b64decode(piece, validate=True))
    except ValueError:
        return b"\x00\x00\x00\x00\x05"  # a frame header promising 5 bytes that never come
    return b"".join(out)


class BodyTimeout:
    """ASGI middleware: a request body that stops arriving for `seconds` ends the request with
    `deadline_exceeded`, so a client that sends headers and then stalls cannot hold a handler forever
    (the AEPsych port's request timeout, for HTTP)."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_done = False

        async def bounded() -> Message_:
            nonlocal body_done
            if body_done:  # after the body only a disconnect can come: wait for it as long as it takes
                return await receive()
            try:
                async with asyncio.timeout(self.seconds):
                    message = await receive()
            except TimeoutError:
                log.warning("HTTP request body from %s stalled for %g s: dropped", scope.get("client"), self.seconds)
                raise ConnectError(Code.DEADLINE_EXCEEDED, f"request body stalled: no bytes for {self.seconds:g} s") from None
            body_done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, bounded, send)


# ---------------------------------------------------------------------- the app
class HttpApp:
    """Routes by path prefix: the ExperimentService under /psyserve.v1.ExperimentService/, plus whatever
    else is mounted (a dashboard, /metrics). Mounted apps get no token check from here: one that shows
    data must check the `authorization` header itself with `self.authorize` (None: no token configured)."""

    def __init__(self, service_app: ASGIApp, authorize: Authorize | None = None) -> None:
        self._routes: list[tuple[str, ASGIApp]] = [(SERVICE_PATH + "/", service_app)]
        self.authorize = authorize

    def mount(self, prefix: str, app: ASGIApp) -> None:
        """Serve `app` for every path equal to `prefix` or under `prefix/` (longest prefix wins)."""
        if not prefix.startswith("/"):
            raise ValueError(f"mount prefix must start with '/': {prefix!r}")
        self._routes.append((prefix, app))
        self._routes.sort(key=lambda r: -len(r[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # uvicorn runs with lifespan off; answer politely if another server does not
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope.get("path", "")
        for prefix, app in self._routes:
            if path == prefix.rstrip("/") or path.startswith(prefix.rstrip("/") + "/"):
                await app(scope, receive, send)
                return
        await _plain(send, 404, f"no such path: {path}; the API is under {SERVICE_PATH}/<Method>\n")


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def check_cors_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """Validate --cors-origin values: 'scheme://host[:port]' exactly as browsers send Origin, or '*'."""
    checked = []
    for origin in origins:
        if origin != "*" and not _ORIGIN.match(origin):
            raise ValueError(f"--cors-origin {origin!r}: expected scheme://host[:port] (no path, no trailing slash) or '*'")
        checked.append(origin)
    return tuple(checked)


def build_http_app(
    service: ExperimentService,
    *,
    authorize: Authorize | None = None,
    cors_origins: Sequence[str] = (),
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    routes: Mapping[str, ASGIApp] | None = None,
) -> tuple[ASGIApp, HttpApp]:
    """The HTTP app: (outermost ASGI app to serve, the router to `mount` more routes on).

    Layers, outside in: CORS (preflight answered for `cors_origins`, nothing allowed when empty),
    gRPC-Web text → binary, the router; the service under it speaks Connect (application/json,
    application/proto) and gRPC-Web, checks the bearer token and refuses bodies over `max_message_bytes`.
    """
    service_app = ExperimentServiceASGIApplication(
        ConnectExperimentService(service),  # type: ignore[arg-type]
        interceptors=[BearerAuth(authorize)] if authorize is not None else (),
        read_max_bytes=max_message_bytes,
        codecs=[_BinaryCodec(), _JSONCodec()],  # type: ignore[list-item]
    )
    router = HttpApp(service_app, authorize)
    for prefix, route in (routes or {}).items():
        router.mount(prefix, route)
    app = CORSMiddleware(
        BodyTimeout(GrpcWebText(router), body_timeout),
        allow_origins=list(check_cors_origins(cors_origins)),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=CORS_ALLOW_HEADERS,
        expose_headers=CORS_EXPOSE_HEADERS,
        allow_credentials=False,
        max_age=600,
    )
    return app, router  # type: ignore[return-value]


# ---------------------------------------------------------------------- serving it (uvicorn in this event loop)
class _Server(uvicorn.Server):
    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()  # the psyserve app owns SIGINT/SIGTERM


@dataclass
class HttpServer:
    """A running uvicorn server for the HTTP app; `close()` stops it (in-flight requests finish first)."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int
    router: HttpApp
    tls: bool = False
    sockets: list[socket.socket] = field(default_factory=list)

    async def close(self, grace: float = 5.0) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), grace)
        except TimeoutError:
            self.server.force_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 2.0)
        for sock in self.sockets:
            sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it Nagle holds a response's last chunk for the client's delayed ACK (~40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(f"could not bind HTTP port {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def start_http_server(
    service: ExperimentService,
    host: str,
    port: int,
    *,
    authorize: Authorize | None = None,
    cors_origins: Sequence[str] = (),
    tls_cert: str | None = None,
    tls_key: str | None = None,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    routes: Mapping[str, ASGIApp] | None = None,
) -> HttpServer:
    """Serve the HTTP app on host:port (0 picks a free port) as a task of the running event loop."""
    app, router = build_http_app(
        service,
        authorize=authorize,
        cors_origins=cors_origins,
        max_message_bytes=max_message_bytes,
        body_timeout=body_timeout,
        routes=routes,
    )
    sock = _bind(host, port)
    config = uvicorn.Config(
        app,
        lifespan="off",
        http="httptools",  # C parser: about half the server CPU per request of the pure-Python h11
        log_config=None,  # leave the process's logging as the app set it; uvicorn's loggers propagate to it
        log_level=logging.WARNING,
        access_log=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        ssl_cert_reqs=ssl.CERT_NONE,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=60,  # a participant's response takes seconds: keep the stimulus program's connection
        server_header=False,
        h11_max_incomplete_event_size=64 * 1024,
    )
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="psyserve-http")
    while not server.started:
        if task.done():
            sock.close()
            exc = task.exception()
            raise OSError(f"HTTP server on {host}:{port} did not start: {exc!r}")
        await asyncio.sleep(0.005)
    actual = sock.getsockname()[1]
    log.info("psyserve serving Connect/gRPC-Web HTTP%s on %s:%d", "S" if tls_cert else "", host, actual)
    return HttpServer(server=server, task=task, port=actual, router=router, tls=tls_cert is not None, sockets=[sock])
