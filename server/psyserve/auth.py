"""Access control for the gRPC server: a bearer-token interceptor and the loading of tokens and TLS files.

Decides only whether a call may proceed; knows nothing of strategies, the journal or messages.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

#: Services a client may call without a token: load balancers and grpcurl need them before auth.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
TOKEN_ENV = "PSYSERVE_AUTH_TOKEN"
_MESSAGE = "missing or invalid credentials: send metadata 'authorization: Bearer <token>'"


class AuthConfigError(ValueError):
    """A token or TLS setting cannot be used (empty token, unreadable file, half a key pair)."""


def check_token(token: str, source: str) -> str:
    """A usable token: non-empty printable ASCII without spaces (it travels in an HTTP/2 header)."""
    if not token:
        raise AuthConfigError(f"{source}: the auth token is empty")
    if not all(0x21 <= ord(c) <= 0x7E for c in token):
        raise AuthConfigError(f"{source}: the auth token must be printable ASCII without spaces")
    return token


def read_token_file(path: str | Path) -> str:
    """The token in a file (surrounding whitespace and a trailing newline are ignored)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"--auth-token-file {path}: {exc}") from None
    return check_token(text.strip(), f"--auth-token-file {path}")


def server_credentials(cert_path: str | Path, key_path: str | Path) -> grpc.ServerCredentials:
    """TLS credentials from a PEM certificate chain and its PEM private key."""
    try:
        cert = Path(cert_path).read_bytes()
        key = Path(key_path).read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"TLS: {exc}") from None
    if b"-----BEGIN" not in cert:
        raise AuthConfigError(f"--tls-cert {cert_path}: not a PEM certificate")
    if b"PRIVATE KEY-----" not in key:
        raise AuthConfigError(f"--tls-key {key_path}: not a PEM private key")
    return grpc.ssl_server_credentials([(key, cert)])


def is_loopback(host: str) -> bool:
    """Whether `host` (a bind address) only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _offered_tokens(metadata: Iterable[tuple[str, Any]] | None) -> list[bytes]:
    """Every token offered as `authorization: Bearer <token>` (scheme case-insensitive, RFC 6750)."""
    tokens = []
    for key, value in metadata or ():
        if key != "authorization":
            continue
        raw = value.encode("latin-1", "replace") if isinstance(value, str) else bytes(value)
        scheme, _, token = raw.strip().partition(b" ")
        if scheme.lower() == b"bearer":
            tokens.append(token.strip())
    return tokens


async def _deny_unary(request: Any, context: grpc.aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, _MESSAGE)


# Requests of denied calls are never deserialized (no deserializer): an unauthenticated peer
# cannot make the server parse messages.
_DENY = {
    (False, False): grpc.unary_unary_rpc_method_handler(_deny_unary),
    (False, True): grpc.unary_stream_rpc_method_handler(_deny_unary),
    (True, False): grpc.stream_unary_rpc_method_handler(_deny_unary),
    (True, True): grpc.stream_stream_rpc_method_handler(_deny_unary),
}


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Every call must carry `authorization: Bearer <token>`, except calls to `open_services`;
    others are answered UNAUTHENTICATED. Tokens are compared in constant time."""

    def __init__(self, token: str, open_services: Iterable[str] = OPEN_SERVICES) -> None:
        self._token = check_token(token, "auth token").encode("ascii")
        self._open = frozenset(open_services)

    def allows(self, method: str, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        """Whether a call to `method` ("/package.Service/Method") with this metadata may proceed."""
        service = method.lstrip("/").partition("/")[0]
        if service in self._open:
            return True
        # Compare against every offered token so the time taken does not depend on which matched.
        matched = False
        for offered in _offered_tokens(metadata):
            matched |= hmac.compare_digest(offered, self._token)
        return matched

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        details: Any = handler_call_details  # the stubs omit the attributes every server fills in
        if self.allows(details.method, details.invocation_metadata):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: still UNAUTHENTICATED, not UNIMPLEMENTED
            return _DENY[(False, False)]
        return _DENY[(bool(handler.request_streaming), bool(handler.response_streaming))]
