"""Security configuration, the bearer-token interceptor and TLS / mutual TLS, against a real aio gRPC
server on port 0 (health, reflection and the Deduplication service's unimplemented base), no backends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from dedup.v1 import dedup_pb2, dedup_pb2_grpc
from dedup_client.cli import main as cli_main
from dedup_server.auth import BearerTokenInterceptor
from dedup_server.config import ConfigError, SecurityConfig, ServerConfig, is_loopback
from dedup_server.tls import server_credentials
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from tests.pki import Pki, make_pki

TOKEN = "t0ken-for-tests-0123456789"
OTHER_TOKEN = "an0ther-token-0123456789"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("127.0.0.1", True, id="ipv4-loopback"),
        pytest.param("127.1.2.3", True, id="ipv4-loopback-net"),
        pytest.param("localhost", True, id="localhost"),
        pytest.param("::1", True, id="ipv6-loopback"),
        pytest.param("[::1]", True, id="ipv6-loopback-bracketed"),
        pytest.param("0.0.0.0", False, id="ipv4-any"),
        pytest.param("::", False, id="ipv6-any"),
        pytest.param("10.0.0.5", False, id="private-address"),
        pytest.param("dedup.internal", False, id="hostname"),
        pytest.param("localhost.evil.example", False, id="localhost-lookalike"),
    ],
)
def test_loopback_hosts(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def _env(pki: Pki, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """Environment of a fully secured front on all interfaces, with overrides ("" removes a variable)."""
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# rotated 2024-01\n{OTHER_TOKEN}\n\n")
    env = {
        "DEDUP_HOST": "0.0.0.0",
        "DEDUP_TLS_CERT": str(pki.server_cert),
        "DEDUP_TLS_KEY": str(pki.server_key),
        "DEDUP_TLS_CLIENT_CA": str(pki.ca_cert),
        "DEDUP_AUTH_TOKEN": TOKEN,
        "DEDUP_AUTH_TOKEN_FILE": str(token_file),
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v}


def test_secured_front_reads_tls_and_tokens_from_env(pki: Pki, tmp_path: Path) -> None:
    security = ServerConfig.from_env(_env(pki, tmp_path)).security
    assert security.tls and security.mutual_tls and security.token_required
    assert security.accepted_tokens() == (TOKEN, OTHER_TOKEN)  # the file's comment and blank line skipped


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {"DEDUP_TLS_CERT": "", "DEDUP_TLS_KEY": "", "DEDUP_TLS_CLIENT_CA": "", "DEDUP_AUTH_TOKEN": "",
             "DEDUP_AUTH_TOKEN_FILE": ""},
            r"DEDUP_HOST=0.0.0.0 .* TLS .* and a bearer token .* are not configured.*DEDUP_ALLOW_INSECURE=1",
            id="public-without-tls-or-token",
        ),
        pytest.param(
            {"DEDUP_TLS_CERT": "", "DEDUP_TLS_KEY": "", "DEDUP_TLS_CLIENT_CA": ""}, r"but TLS .* is not configured",
            id="public-token-without-tls",
        ),
        pytest.param(
            {"DEDUP_AUTH_TOKEN": "", "DEDUP_AUTH_TOKEN_FILE": ""}, "but a bearer token .* is not configured",
            id="public-tls-without-token",
        ),
        pytest.param({"DEDUP_HOST": "::", "DEDUP_AUTH_TOKEN": "", "DEDUP_AUTH_TOKEN_FILE": ""}, "DEDUP_HOST=::",
                     id="ipv6-any-without-token"),
        pytest.param({"DEDUP_TLS_KEY": ""}, "DEDUP_TLS_CERT and DEDUP_TLS_KEY go together", id="cert-without-key"),
        pytest.param({"DEDUP_TLS_CERT": "", "DEDUP_TLS_KEY": ""}, "DEDUP_TLS_CLIENT_CA .* needs DEDUP_TLS_CERT",
                     id="client-ca-without-server-cert"),
        pytest.param({"DEDUP_TLS_CERT": "/nonexistent/server.crt"},
                     "DEDUP_TLS_CERT=/nonexistent/server.crt is not a file", id="cert-missing"),
        pytest.param({"DEDUP_TLS_KEY": "{cert}"}, "DEDUP_TLS_KEY=.* is not PEM.*PRIVATE KEY", id="key-is-a-cert"),
        pytest.param({"DEDUP_TLS_CLIENT_CA": "{tokens}"}, "DEDUP_TLS_CLIENT_CA=.* is not PEM", id="client-ca-not-pem"),
        pytest.param({"DEDUP_AUTH_TOKEN": "short"}, "fewer than 16", id="token-too-short"),
        pytest.param({"DEDUP_AUTH_TOKEN": "has space in the token"}, "printable ASCII", id="token-with-space"),
        pytest.param({"DEDUP_AUTH_TOKEN": "t\u00f6ken-with-umlaut-0123"}, "printable ASCII", id="token-non-ascii"),
        pytest.param({"DEDUP_AUTH_TOKEN_FILE": "{empty}"}, "holds no token", id="token-file-empty"),
        pytest.param({"DEDUP_AUTH_TOKEN_FILE": "/nonexistent/tokens"}, "is not a file", id="token-file-missing"),
        pytest.param({"DEDUP_ALLOW_INSECURE": "maybe"}, "not a flag", id="allow-insecure-not-a-flag"),
        pytest.param({"DEDUP_MAX_STREAM_ITEMS": "0"}, "max_stream_items must be at least 1", id="stream-items-zero"),
    ],
)
def test_unsafe_or_broken_security_config_is_refused(
    pki: Pki, tmp_path: Path, overrides: dict[str, str], message: str
) -> None:
    (tmp_path / "empty").write_text("# nothing here\n\n")
    paths = {"cert": str(pki.server_cert), "tokens": str(tmp_path / "tokens"), "empty": str(tmp_path / "empty")}
    env = _env(pki, tmp_path, **{k: v.format(**paths) for k, v in overrides.items()})
    with pytest.raises(ConfigError, match=message) as caught:
        ServerConfig.from_env(env)
    assert env.get("DEDUP_AUTH_TOKEN", "never") not in str(caught.value)  # secrets never go into messages


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="loopback-default-plaintext"),
        pytest.param({"DEDUP_HOST": "::1"}, id="ipv6-loopback-plaintext"),
        pytest.param({"DEDUP_HOST": "0.0.0.0", "DEDUP_ALLOW_INSECURE": "1"}, id="public-insecure-on-purpose"),
        pytest.param({"DEDUP_HOST": "0.0.0.0", "DEDUP_ALLOW_INSECURE": "true", "DEDUP_AUTH_TOKEN": TOKEN},
                     id="public-token-behind-a-tls-proxy"),
    ],
)
def test_allowed_exposures(env: dict[str, str]) -> None:
    ServerConfig.from_env(env)


# -- token checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        pytest.param((), "missing bearer token", id="no-metadata"),
        pytest.param((("x-api-key", TOKEN),), "missing bearer token", id="other-header"),
        pytest.param((("authorization", f"Bearer {TOKEN}"),), None, id="right-token"),
        pytest.param((("authorization", f"bearer {OTHER_TOKEN}"),), None, id="scheme-any-case-second-token"),
        pytest.param((("authorization", f"Bearer  {TOKEN} "),), None, id="extra-spaces"),
        pytest.param((("authorization", f"Basic {TOKEN}"),), "malformed", id="basic-scheme"),
        pytest.param((("authorization", TOKEN),), "malformed", id="no-scheme"),
        pytest.param((("authorization", "Bearer "),), "malformed", id="empty-token"),
        pytest.param((("authorization", "Bearer wrong-token-0123456789"),), "invalid bearer token", id="wrong"),
        pytest.param((("authorization", f"Bearer {TOKEN[:-1]}"),), "invalid bearer token", id="prefix-of-token"),
        pytest.param((("authorization", f"Bearer {TOKEN}x"),), "invalid bearer token", id="token-plus-one"),
        pytest.param((("authorization", "Bearer t\u00f6ken"),), "invalid bearer token", id="non-ascii"),
    ],
)
def test_token_problems(metadata: tuple[tuple[str, str], ...], problem: str | None) -> None:
    found = BearerTokenInterceptor([TOKEN, OTHER_TOKEN]).problem(metadata)
    assert found == problem if problem is None else problem in (found or "")


def test_interceptor_needs_a_token() -> None:
    with pytest.raises(ValueError, match="at least one"):
        BearerTokenInterceptor([])


# -- a real server -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _server(security: SecurityConfig) -> AsyncIterator[int]:
    """Health, reflection and the (unimplemented) Deduplication service, wired as app.py wires them."""
    interceptors: list[grpc.aio.ServerInterceptor] = [aio_server_interceptor()]
    if security.token_required:
        interceptors.append(BearerTokenInterceptor(security.accepted_tokens()))
    server = grpc.aio.server(interceptors=interceptors)
    dedup_pb2_grpc.add_DeduplicationServicer_to_server(dedup_pb2_grpc.DeduplicationServicer(), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(("dedup.v1.Deduplication", reflection.SERVICE_NAME), server)
    credentials = server_credentials(security)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


def _channel(port: int, pki: Pki | None = None, client: str | None = None) -> grpc.aio.Channel:
    if pki is None:
        return grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.read("ca_cert"),
        private_key=pki.read(f"{client}_key") if client else None,
        certificate_chain=pki.read(f"{client}_cert") if client else None,
    )
    return grpc.aio.secure_channel(f"localhost:{port}", credentials)


def _bearer(token: str | None) -> tuple[tuple[str, str], ...] | None:
    return None if token is None else (("authorization", f"Bearer {token}"),)


async def _health(channel: grpc.aio.Channel, token: str | None = None) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5, metadata=_bearer(token))
    return int(reply.status)


async def _reflection_services(channel: grpc.aio.Channel, token: str | None) -> set[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(timeout=5, metadata=_bearer(token))
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    await call.done_writing()
    reply = await call.read()
    return {service.name for service in reply.list_services_response.service}


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_token_guards_every_rpc_but_health() -> None:
    async with _server(SecurityConfig(auth_tokens=(TOKEN,))) as port, _channel(port) as channel:
        assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING  # probes need no token
        stub = dedup_pb2_grpc.DeduplicationStub(channel)
        refused, passed = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED  # passed: got past the check
        for token, code in ((None, refused), ("wrong-token-0123456789", refused), (TOKEN, passed)):
            unary = stub.GetStats(dedup_pb2.GetStatsRequest(), timeout=5, metadata=_bearer(token))
            assert await _code(unary) == code, token
            stream = stub.IndexStream(iter([dedup_pb2.IndexRequest(id="a", image=b"x")]), timeout=5,
                                      metadata=_bearer(token))
            assert await _code(stream.read()) == code, token
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.CheckDuplicate(dedup_pb2.CheckDuplicateRequest(image=b"x"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing bearer token" in (caught.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _reflection_services(channel, None)  # reflection describes the API: token needed
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "dedup.v1.Deduplication" in await _reflection_services(channel, TOKEN)


async def test_tls_serves_verified_clients_and_refuses_plaintext(pki: Pki) -> None:
    security = SecurityConfig(tls_cert=pki.server_cert, tls_key=pki.server_key)
    async with _server(security) as port:
        async with _channel(port, pki) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        async with _channel(port) as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _health(plaintext)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        stranger_roots = grpc.ssl_channel_credentials(root_certificates=pki.read("stranger_cert"))
        async with grpc.aio.secure_channel(f"localhost:{port}", stranger_roots) as unverified:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _health(unverified)  # the server's certificate is not signed by what this client trusts
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("client", "serves"),
    [
        pytest.param(None, False, id="no-client-certificate"),
        pytest.param("stranger", False, id="certificate-from-another-ca"),
        pytest.param("client", True, id="certificate-from-the-client-ca"),
    ],
)
async def test_mutual_tls_requires_a_client_certificate_from_the_ca(pki: Pki, client: str | None, serves: bool) -> None:
    security = SecurityConfig(tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca_cert)
    async with _server(security) as port, _channel(port, pki, client) as channel:
        if serves:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        else:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _health(channel)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_cli_client_certificate_needs_its_key(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli_main(["--client-cert", str(pki.client_cert), "stats"])
    assert caught.value.code == 2 and "--client-cert and --client-key go together" in capsys.readouterr().err
