"""Access control: bearer-token auth (health and reflection open) and TLS, in-process and via the CLI."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import psyserve_client as pc
from conftest import CONFIGS, ServerThread, free_port
from psyserve.app import ServerOptions
from psyserve.auth import AuthConfigError, BearerTokenInterceptor

TOKEN = "s3cret-token_for.tests"
CONFIG = (CONFIGS / "sobol_manual.ini").read_text()


# ---------------------------------------------------------------------- certificates
def _self_signed_with_cryptography(cert: Path, key: Path) -> bool:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        return False
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return True


def _self_signed_with_openssl(cert: Path, key: Path) -> bool:
    openssl = shutil.which("openssl")
    if openssl is None:
        return False
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return True


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key (PEM files)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    if not (_self_signed_with_cryptography(cert, key) or _self_signed_with_openssl(cert, key)):
        pytest.skip("neither the cryptography package nor openssl is available to make a certificate")
    return cert, key


# ---------------------------------------------------------------------- servers
@pytest.fixture
def auth_server(db_path: str) -> Iterator[ServerThread]:
    srv = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=db_path, models=False, auth_token=TOKEN))
    yield srv
    srv.stop()


@pytest.fixture
def tls_server(db_path: str, tls_files: tuple[Path, Path]) -> Iterator[ServerThread]:
    cert, key = tls_files
    options = ServerOptions(
        host="127.0.0.1", port=0, db=db_path, models=False, auth_token=TOKEN, tls_cert=str(cert), tls_key=str(key)
    )
    srv = ServerThread(options)
    yield srv
    srv.stop()


def health_check(channel: grpc.Channel) -> int:
    return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)


# ---------------------------------------------------------------------- token
def test_no_token_is_unauthenticated(auth_server: ServerThread) -> None:
    with pc.Client(auth_server.address, timeout=5) as client:
        with pytest.raises(pc.UnauthenticatedError):
            client.configure(config_str=CONFIG)
        with pytest.raises(pc.UnauthenticatedError):
            client.list_strategies()
        with pytest.raises(pc.UnauthenticatedError):  # a streaming RPC is refused too
            list(client.export_data())
    assert auth_server.running.service.list_strategies() == []


@pytest.mark.parametrize("token", ["wrong", TOKEN + "x", TOKEN[:-1], TOKEN.upper()])
def test_wrong_token_is_unauthenticated(auth_server: ServerThread, token: str) -> None:
    with pc.Client(auth_server.address, timeout=5, token=token) as client:
        with pytest.raises(pc.UnauthenticatedError) as err:
            client.configure(config_str=CONFIG)
    assert "Bearer" in err.value.message
    assert auth_server.running.service.list_strategies() == []


def test_other_schemes_and_headers_are_refused(auth_server: ServerThread) -> None:
    with grpc.insecure_channel(auth_server.address) as channel:
        stub = channel.unary_unary("/psyserve.v1.ExperimentService/ListStrategies")
        for metadata in [
            (("authorization", TOKEN),),
            (("authorization", f"Basic {TOKEN}"),),
            (("x-auth-token", TOKEN),),
            (("authorization", f"Bearer{TOKEN}"),),
        ]:
            with pytest.raises(grpc.RpcError) as err:
                stub(b"", metadata=metadata, timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        # an unknown method is UNAUTHENTICATED too, not UNIMPLEMENTED (nothing to probe without a token)
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/psyserve.v1.ExperimentService/NoSuchMethod")(b"", timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_right_token_works(auth_server: ServerThread) -> None:
    with pc.Client(auth_server.address, timeout=5, token=TOKEN) as client:
        sid = client.configure(config_str=CONFIG).strategy_id
        trial = client.ask().trials[0]
        assert client.tell(trial_id=trial.trial_id, outcome=1).trials_recorded == 1
        assert [s.strategy_id for s in client.list_strategies()] == [sid]
        assert [t.trial_id for _, t in client.export_data()] == [trial.trial_id]


def test_scheme_is_case_insensitive() -> None:
    interceptor = BearerTokenInterceptor(TOKEN)
    method = "/psyserve.v1.ExperimentService/Ask"
    assert interceptor.allows(method, [("authorization", f"bearer {TOKEN}")])
    assert interceptor.allows(method, [("authorization", f"BEARER  {TOKEN} ")])
    assert interceptor.allows(method, [("other", "x"), ("authorization", "Bearer nope"), ("authorization", f"Bearer {TOKEN}")])
    assert not interceptor.allows(method, [])
    assert not interceptor.allows(method, None)
    assert interceptor.allows("/grpc.health.v1.Health/Check", None)


async def test_async_client_token(auth_server: ServerThread) -> None:
    async with pc.AsyncClient(auth_server.address, timeout=5) as anonymous:
        with pytest.raises(pc.UnauthenticatedError):
            await anonymous.list_strategies()
    async with pc.AsyncClient(auth_server.address, timeout=5, token=TOKEN) as client:
        await client.configure(config_str=CONFIG)
        assert len(await client.list_strategies()) == 1


def test_health_and_reflection_need_no_token(auth_server: ServerThread) -> None:
    with grpc.insecure_channel(auth_server.address) as channel:
        assert health_check(channel) == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    services = {s.name for s in replies[0].list_services_response.service}
    assert "psyserve.v1.ExperimentService" in services


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "x.db")
    with pytest.raises(AuthConfigError, match="empty"):
        ServerOptions(db=db, auth_token="").check_security()
    with pytest.raises(AuthConfigError, match="printable"):
        ServerOptions(db=db, auth_token="has space").check_security()
    with pytest.raises(AuthConfigError, match="both"):
        ServerOptions(db=db, tls_cert=str(tmp_path / "cert.pem")).check_security()
    with pytest.raises(AuthConfigError, match="aepsych"):
        ServerOptions(db=db, host="0.0.0.0", aepsych_port=5555, auth_token=TOKEN).check_security()
    (tmp_path / "cert.pem").write_text("not a certificate")
    (tmp_path / "key.pem").write_text("not a key")
    with pytest.raises(AuthConfigError, match="PEM"):
        ServerOptions(db=db, tls_cert=str(tmp_path / "cert.pem"), tls_key=str(tmp_path / "key.pem")).check_security()
    with pytest.raises(AuthConfigError):
        ServerOptions(db=db, tls_cert=str(tmp_path / "none.pem"), tls_key=str(tmp_path / "key.pem")).check_security()
    assert ServerOptions(db=db, aepsych_port=5555, auth_token=TOKEN).check_security() is None  # loopback: allowed
    assert not (tmp_path / "x.db").exists()  # nothing was opened


# ---------------------------------------------------------------------- TLS
def test_tls_with_token(tls_server: ServerThread, tls_files: tuple[Path, Path]) -> None:
    cert = tls_files[0].read_bytes()
    address = f"localhost:{tls_server.running.port}"
    with pc.Client(address=address, root_certificates=cert, token=TOKEN, timeout=10) as client:
        sid = client.configure(config_str=CONFIG).strategy_id
        trial = client.ask().trials[0]
        assert client.tell(trial_id=trial.trial_id, outcome=0).trials_recorded == 1
        assert client.info().strategy_id == sid
    with pc.Client(
        address=f"127.0.0.1:{tls_server.running.port}", root_certificates=cert.decode(), token=TOKEN, timeout=10
    ) as client:
        assert len(client.list_strategies()) == 1  # the certificate names the IP address too
    with pc.Client(address=address, root_certificates=cert, timeout=10) as client:
        with pytest.raises(pc.UnauthenticatedError):
            client.list_strategies()
    with grpc.secure_channel(address, grpc.ssl_channel_credentials(cert)) as channel:
        assert health_check(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_tls_async_client(tls_server: ServerThread, tls_files: tuple[Path, Path]) -> None:
    address = f"localhost:{tls_server.running.port}"
    async with pc.AsyncClient(address, root_certificates=tls_files[0].read_bytes(), token=TOKEN, timeout=10) as client:
        await client.configure(config_str=CONFIG)
        assert len((await client.ask(num_points=2)).trials) == 2


def test_tls_refuses_plaintext_and_untrusted_clients(tls_server: ServerThread) -> None:
    address = f"localhost:{tls_server.running.port}"
    with pc.Client(address, token=TOKEN, timeout=3) as plaintext:
        with pytest.raises(pc.UnavailableError):
            plaintext.list_strategies()
    with pc.Client(address, token=TOKEN, tls=True, timeout=3) as untrusted:  # system roots do not know the test CA
        with pytest.raises(pc.UnavailableError):
            untrusted.list_strategies()


# ---------------------------------------------------------------------- command line
def _wait_tls_ready(proc: subprocess.Popen[bytes], address: str, cert: bytes, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            with grpc.secure_channel(address, grpc.ssl_channel_credentials(cert)) as channel:
                if health_check(channel) == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            time.sleep(0.1)
    raise AssertionError("TLS server did not start")


@pytest.mark.parametrize("source", ["file", "env"])
def test_cli_serves_tls_with_token(tmp_path: Path, tls_files: tuple[Path, Path], source: str) -> None:
    cert, key = tls_files
    port = free_port()
    log = tmp_path / "server.log"
    args = ["--host", "127.0.0.1", "--port", str(port), "--db", str(tmp_path / "j.db"), "--no-models"]
    args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    env = {k: v for k, v in os.environ.items() if k != "PSYSERVE_AUTH_TOKEN"}
    if source == "file":
        (tmp_path / "token").write_text(TOKEN + "\n")
        args += ["--auth-token-file", str(tmp_path / "token")]
    else:
        env["PSYSERVE_AUTH_TOKEN"] = TOKEN
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "psyserve", "serve", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        address = f"localhost:{port}"
        _wait_tls_ready(proc, address, cert.read_bytes(), log)
        with pc.Client(address, root_certificates=cert.read_bytes(), timeout=10) as anonymous:
            with pytest.raises(pc.UnauthenticatedError):
                anonymous.configure(config_str=CONFIG)
        with pc.Client(address, root_certificates=cert.read_bytes(), token=TOKEN, timeout=10) as client:
            client.configure(config_str=CONFIG)
            assert client.ask().trials[0].trial_id == 1
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    assert "over TLS" in log.read_text() and "auth token required" in log.read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tls-cert", "cert.pem"], "both --tls-cert and --tls-key"),
        (["--auth-token-file", "missing-token"], "missing-token"),
        (["--auth-token", ""], "empty"),
        (["--auth-token", "a", "--auth-token-file", "t"], "not allowed with"),
    ],
)
def test_cli_rejects_bad_auth_settings(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "psyserve", "serve", "--port", "0", "--db", "j.db", "--no-models", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "j.db").exists()
