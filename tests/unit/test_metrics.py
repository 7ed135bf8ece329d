"""Request metrics through a real aio server on port 0, the metrics port setting, the /metrics endpoint."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from dedup_server.config import ConfigError, ServerConfig
from dedup_server.metrics import RequestMetricsInterceptor, start_metrics_server
from prometheus_client import REGISTRY

SERVICE = "test.Metered"


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    if request == b"missing":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    if request == b"crash":
        raise ValueError("a bug")
    if request == b"slow":
        await asyncio.sleep(5)
    if request == b"set-code":
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
    return request


async def _stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for _ in range(3):
        yield request
    if request == b"crash":
        raise ValueError("a bug after three answers")


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server(interceptors=[RequestMetricsInterceptor()])
    server.add_generic_rpc_handlers((
        grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "Stream": grpc.unary_stream_rpc_method_handler(_stream),
        }),
    ))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


def _handled(method: str, code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


def _timed(method: str, code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handling_seconds_count", labels) or 0.0


@pytest.mark.parametrize(
    ("request_bytes", "timeout", "code"),
    [
        pytest.param(b"fine", None, "OK", id="ok"),
        pytest.param(b"missing", None, "NOT_FOUND", id="abort"),
        pytest.param(b"crash", None, "UNKNOWN", id="unhandled-exception"),
        pytest.param(b"set-code", None, "ALREADY_EXISTS", id="set-code"),
        pytest.param(b"slow", 0.2, "DEADLINE_EXCEEDED", id="deadline"),
    ],
)
async def test_unary_rpcs_are_counted_by_the_code_the_client_gets(
    channel: grpc.aio.Channel, request_bytes: bytes, timeout: float | None, code: str
) -> None:
    before = _handled("Unary", code), _timed("Unary", code)
    call = channel.unary_unary(f"/{SERVICE}/Unary")
    try:
        await call(request_bytes, timeout=timeout)
        received = "OK"
    except grpc.aio.AioRpcError as exc:
        received = exc.code().name
    assert received == code
    # The server side may finish a moment after the client has its answer (a deadline, say).
    for _ in range(50):
        if _handled("Unary", code) > before[0]:
            break
        await asyncio.sleep(0.02)
    assert (_handled("Unary", code), _timed("Unary", code)) == (before[0] + 1, before[1] + 1)


async def test_streams_are_counted_once_when_they_end(channel: grpc.aio.Channel) -> None:
    ok, unknown = _handled("Stream", "OK"), _handled("Stream", "UNKNOWN")
    stream = channel.unary_stream(f"/{SERVICE}/Stream")
    assert [answer async for answer in stream(b"fine")] == [b"fine"] * 3
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        async for _ in stream(b"crash"):
            pass
    assert failed.value.code() == grpc.StatusCode.UNKNOWN
    assert (_handled("Stream", "OK"), _handled("Stream", "UNKNOWN")) == (ok + 1, unknown + 1)


@pytest.mark.parametrize(
    ("value", "port"),
    [
        pytest.param(None, 9464, id="default"),
        pytest.param("0", 0, id="free-port"),
        pytest.param("9100", 9100, id="explicit"),
        pytest.param("off", None, id="off"),
        pytest.param("OFF", None, id="off-any-case"),
    ],
)
def test_metrics_port_setting(value: str | None, port: int | None) -> None:
    env = {} if value is None else {"DEDUP_METRICS_PORT": value}
    assert ServerConfig.from_env(env).metrics_port == port


@pytest.mark.parametrize("value", ["none", "-1", "65536", "9464.5"])
def test_metrics_port_setting_rejects(value: str) -> None:
    with pytest.raises(ConfigError, match="DEDUP_METRICS_PORT"):
        ServerConfig.from_env({"DEDUP_METRICS_PORT": value})


def test_metrics_endpoint_serves_the_registry_and_closes() -> None:
    server = start_metrics_server("127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert "# TYPE grpc_server_handled_total counter" in text
        assert "# TYPE dedup_batch_size histogram" in text
        with pytest.raises(OSError, match="DEDUP_METRICS_PORT=off"):
            start_metrics_server("127.0.0.1", server.port)  # taken
    finally:
        server.close()


def test_metrics_listen_on_loopback_even_when_the_front_serves_every_address() -> None:
    """/metrics has no token or TLS: only DEDUP_METRICS_HOST opens it beyond this machine (e.g. 0.0.0.0 in a pod)."""
    exposed = {"DEDUP_HOST": "0.0.0.0", "DEDUP_ALLOW_INSECURE": "1"}
    assert ServerConfig.from_env(exposed).metrics_host == "127.0.0.1"
    assert ServerConfig.from_env({**exposed, "DEDUP_METRICS_HOST": "0.0.0.0"}).metrics_host == "0.0.0.0"
