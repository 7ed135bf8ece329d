"""deploy/grpc_health_check.py (the container HEALTHCHECK and the TLS overlay's readiness probe) against a real
grpc.health.v1 server on port 0: plaintext, TLS, mutual TLS, bearer token."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from deploy import grpc_health_check

TOKEN = "probe-token-0123456789abcdef0123456789"


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("dedup-front"), x509.DNSName("localhost")]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a front certificate it signed (server and client auth, as cert-manager would issue)."""
    directory = tmp_path_factory.mktemp("pki")
    ca_key, front_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    paths = Pki(directory / "ca.crt", directory / "tls.crt", directory / "tls.key", directory / "other-ca.crt")
    paths.ca.write_bytes(_pem(_certificate("dedup test CA", ca_key, "dedup test CA", ca_key, ca=True)))
    paths.other_ca.write_bytes(_pem(_certificate("other CA", other_key, "other CA", other_key, ca=True)))
    paths.cert.write_bytes(_pem(_certificate("dedup-front", front_key, "dedup test CA", ca_key, ca=False)))
    paths.key.write_bytes(
        front_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class RequireToken(grpc.ServerInterceptor):
    """Refuses calls without `authorization: Bearer TOKEN`, as a front with DEDUP_AUTH_TOKEN_FILE may."""

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        if (("authorization", f"Bearer {TOKEN}")) in tuple(details.invocation_metadata or ()):
            return continuation(details)

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing token")

        return grpc.unary_unary_rpc_method_handler(deny)


@dataclass
class Front:
    port: int
    health: health.HealthServicer


def _serve(
    credentials: grpc.ServerCredentials | None, interceptors: tuple[grpc.ServerInterceptor, ...] = ()
) -> Iterator[Front]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=interceptors)
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    address = "127.0.0.1:0"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    server.start()
    try:
        yield Front(port, servicer)
    finally:
        server.stop(None).wait()


@pytest.fixture
def plain_front() -> Iterator[Front]:
    yield from _serve(None)


@pytest.fixture(params=[False, True], ids=["tls", "mutual-tls"])
def tls_front(request: pytest.FixtureRequest, pki: Pki) -> Iterator[tuple[Front, bool]]:
    mutual: bool = request.param
    credentials = grpc.ssl_server_credentials(
        [(pki.key.read_bytes(), pki.cert.read_bytes())],
        root_certificates=pki.ca.read_bytes() if mutual else None,
        require_client_auth=mutual,
    )
    for front in _serve(credentials):
        yield front, mutual


def _set(front: Front, status: int) -> None:
    front.health.set("", status)


def test_serving_front_passes(plain_front: Front) -> None:
    _set(plain_front, health_pb2.HealthCheckResponse.SERVING)
    assert grpc_health_check.main({"DEDUP_PORT": str(plain_front.port)}) == 0


def test_not_serving_front_fails(plain_front: Front, capsys: pytest.CaptureFixture[str]) -> None:
    _set(plain_front, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert grpc_health_check.main({"DEDUP_PORT": str(plain_front.port)}) == 1
    assert "NOT_SERVING" in capsys.readouterr().err


def test_nothing_listening_fails(capsys: pytest.CaptureFixture[str]) -> None:
    fronts = _serve(None)
    closed_port = next(fronts).port
    fronts.close()  # stops the server: its port now refuses connections
    assert grpc_health_check.main({"DEDUP_PORT": str(closed_port)}) == 1
    assert "health check failed" in capsys.readouterr().err


def test_tls_front_passes_with_its_own_files(tls_front: tuple[Front, bool], pki: Pki) -> None:
    front, mutual = tls_front
    _set(front, health_pb2.HealthCheckResponse.SERVING)
    env = {
        "DEDUP_PORT": str(front.port),
        "DEDUP_TLS_CERT": str(pki.cert),
        "DEDUP_TLS_KEY": str(pki.key),
        "DEDUP_HEALTHCHECK_CA": str(pki.ca),
        "DEDUP_HEALTHCHECK_TLS_NAME": "dedup-front",
    }
    if mutual:
        env["DEDUP_TLS_CLIENT_CA"] = str(pki.ca)
    assert grpc_health_check.main(env) == 0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"DEDUP_HEALTHCHECK_CA": "other_ca"}, id="untrusted-server-certificate"),
        pytest.param({"DEDUP_HEALTHCHECK_TLS_NAME": "elsewhere.example"}, id="name-not-in-certificate"),
        pytest.param({"DEDUP_TLS_CERT": None}, id="plaintext-to-tls-port"),
    ],
)
def test_tls_mismatch_fails(tls_front: tuple[Front, bool], pki: Pki, change: dict[str, str | None]) -> None:
    front, mutual = tls_front
    _set(front, health_pb2.HealthCheckResponse.SERVING)
    env: dict[str, str | None] = {
        "DEDUP_PORT": str(front.port),
        "DEDUP_TLS_CERT": str(pki.cert),
        "DEDUP_TLS_KEY": str(pki.key),
        "DEDUP_HEALTHCHECK_CA": str(pki.ca),
        "DEDUP_HEALTHCHECK_TLS_NAME": "dedup-front",
        "DEDUP_TLS_CLIENT_CA": str(pki.ca) if mutual else None,
    }
    env |= {k: str(pki.other_ca) if v == "other_ca" else v for k, v in change.items()}
    assert grpc_health_check.main({k: v for k, v in env.items() if v is not None}) == 1


def test_token_from_the_fronts_token_file_is_sent(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text(f"# rotated 2026-11\n\n  {TOKEN}\nsecond-token-aaaaaaaaaaaaaaaaaaaaaaaa\n")
    for front in _serve(None, (RequireToken(),)):
        _set(front, health_pb2.HealthCheckResponse.SERVING)
        assert grpc_health_check.main({"DEDUP_PORT": str(front.port)}) == 1
        assert grpc_health_check.main({"DEDUP_PORT": str(front.port), "DEDUP_AUTH_TOKEN_FILE": str(token_file)}) == 0


def test_make_run_readiness_probe_speaks_the_fronts_tls(tls_front: tuple[Front, bool], pki: Pki) -> None:
    """`make run` waits for SERVING with the same rules: a plaintext probe of a TLS front would wait forever."""
    from dedup_stack.front import _HealthProbe

    front, mutual = tls_front
    _set(front, health_pb2.HealthCheckResponse.SERVING)
    env = {
        "DEDUP_TLS_CERT": str(pki.cert), "DEDUP_TLS_KEY": str(pki.key), "DEDUP_HEALTHCHECK_CA": str(pki.ca),
        "DEDUP_HEALTHCHECK_TLS_NAME": "dedup-front", **({"DEDUP_TLS_CLIENT_CA": str(pki.ca)} if mutual else {}),
    }
    with _HealthProbe(f"127.0.0.1:{front.port}", env) as probe:
        assert probe()
    with _HealthProbe(f"127.0.0.1:{front.port}", {}) as plaintext:
        assert not plaintext()
