"""A front with mutual TLS and a bearer token, against real Triton and Milvus: only a client with a
certificate from the client CA *and* a token gets in; health answers without a token; a stranger
writes nothing."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from dedup_client import DedupClient, DedupConnectionError, DedupError, IndexItem, IndexStatus
from dedup_client.cli import main as cli_main
from dedup_server.config import SecurityConfig, ServerConfig
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.integration.conftest import FrontThread
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.integration

TOKEN = "integration-token-0123456789abcdef"
PHOTO = "base_images/ukbench09060.jpg"
COLLECTION = "secure_front"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure_front(front_config: ServerConfig, pki: Pki) -> Iterator[FrontThread]:
    security = SecurityConfig(
        tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca_cert, auth_tokens=(TOKEN,)
    )
    thread = FrontThread(dataclasses.replace(front_config, security=security))
    thread.start()
    yield thread
    thread.stop()


def _client(front: FrontThread, pki: Pki, *, token: str | None = TOKEN, certificate: str | None = "client",
            tls: bool = True) -> DedupClient:
    if not tls:
        return DedupClient(f"127.0.0.1:{front.port}", timeout=30, token=token)
    return DedupClient(
        f"localhost:{front.port}", timeout=30, token=token, root_certificates=pki.read("ca_cert"),
        client_cert=pki.read(f"{certificate}_cert") if certificate else None,
        client_key=pki.read(f"{certificate}_key") if certificate else None,
    )


def test_client_with_certificate_and_token_indexes_and_checks(
    secure_front: FrontThread, pki: Pki, eval_dir: Path
) -> None:
    image = (eval_dir / PHOTO).read_bytes()
    with _client(secure_front, pki) as client:
        [result] = client.index([IndexItem(id="photo", image=image, collection=COLLECTION)])
        assert result.status is IndexStatus.INDEXED
        assert client.check(image, collection=COLLECTION).matches[0].id == "photo"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        pytest.param({"token": None}, "UNAUTHENTICATED", id="no-token"),
        pytest.param({"token": "wrong-token-0123456789abcdef"}, "UNAUTHENTICATED", id="wrong-token"),
        pytest.param({"certificate": None}, "UNAVAILABLE", id="no-client-certificate"),
        pytest.param({"certificate": "stranger"}, "UNAVAILABLE", id="certificate-from-another-ca"),
        pytest.param({"tls": False}, "UNAVAILABLE", id="plaintext"),
    ],
)
def test_strangers_are_refused_and_write_nothing(
    secure_front: FrontThread, pki: Pki, eval_dir: Path, kwargs: dict, code: str
) -> None:
    image = (eval_dir / "base_images/ukbench09268.jpg").read_bytes()
    with _client(secure_front, pki, **kwargs) as stranger:
        for call in (
            lambda: stranger.check(image, collection=COLLECTION, insert_if_unique=True, id="intruder"),
            lambda: list(stranger.index([IndexItem(id="intruder", image=image, collection=COLLECTION)])),
            lambda: stranger.delete(["photo"], collection=COLLECTION),
        ):
            with pytest.raises(DedupError) as caught:
                call()
            assert caught.value.code == code, caught.value
            if code == "UNAUTHENTICATED":
                assert "bearer token" in caught.value.details
            else:  # the TLS handshake failed: no connection at all, and the client says so
                assert isinstance(caught.value, DedupConnectionError)
    with _client(secure_front, pki) as client:
        assert not client.check(image, collection=COLLECTION).is_duplicate  # no intruder was stored
        assert client.check((eval_dir / PHOTO).read_bytes(), collection=COLLECTION).matches[0].id == "photo"


def test_health_needs_a_certificate_but_no_token(secure_front: FrontThread, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(
        pki.read("ca_cert"), private_key=pki.read("client_key"), certificate_chain=pki.read("client_cert")
    )
    with grpc.secure_channel(f"localhost:{secure_front.port}", credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_cli_with_certificates_and_token(
    secure_front: FrontThread, pki: Pki, eval_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = ["--target", f"localhost:{secure_front.port}", "--ca-cert", str(pki.ca_cert),
           "--client-cert", str(pki.client_cert), "--client-key", str(pki.client_key), "--collection", COLLECTION]
    assert cli_main([*tls, "--token", TOKEN, "--json", "check", str(eval_dir / PHOTO)]) == 0
    assert json.loads(capsys.readouterr().out)["matches"][0]["id"] == "photo"
    assert cli_main([*tls, "stats"]) == 2  # no token
    assert "UNAUTHENTICATED" in capsys.readouterr().err
