"""Tracing set up from OTEL_* variables, in a child process (the global provider can be set once per process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

# A stand-in Triton: answers ModelInfer and ServerReady with raw bytes; the client calls both.
SCRIPT = textwrap.dedent(
    """
    import asyncio, grpc
    from opentelemetry import trace
    from dedup_server.config import ConfigError
    from dedup_server.telemetry import configure_tracing

    async def answer(request, context):
        return request

    async def main():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(answer),
            "ServerReady": grpc.unary_unary_rpc_method_handler(answer),
        }),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:  # created after configure_tracing
            for method in ("ModelInfer", "ServerReady"):
                await channel.unary_unary(f"/inference.GRPCInferenceService/{method}")(b"x")
        await server.stop(None)

    try:
        configure_tracing()
    except ConfigError as exc:
        raise SystemExit(f"ConfigError: {exc}")
    asyncio.run(main())
    trace.get_tracer_provider().shutdown()  # flushes the batch processor
    """
)


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    child_env.update(env, PYTHONPATH=os.pathsep.join([str(REPO / "server"), str(REPO / "clients" / "python")]))
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=child_env, capture_output=True, text=True, timeout=120, check=False
    )


def _console_spans(stdout: str) -> list[dict[str, object]]:
    decoder, spans, position = json.JSONDecoder(), [], 0
    while (start := stdout.find("{", position)) != -1:
        span, position = decoder.raw_decode(stdout, start)
        spans.append(span)
    return spans


def test_console_exporter_shows_triton_inference_only_under_the_default_service_name() -> None:
    result = _run(OTEL_TRACES_EXPORTER="console")
    assert result.returncode == 0, result.stderr
    spans = _console_spans(result.stdout)
    assert [span["name"] for span in spans] == ["/inference.GRPCInferenceService/ModelInfer"]
    assert spans[0]["kind"] == "SpanKind.CLIENT"
    assert spans[0]["resource"]["attributes"]["service.name"] == "dedup-front"  # type: ignore[index]


def test_service_name_from_the_environment_wins() -> None:
    result = _run(OTEL_TRACES_EXPORTER="console", OTEL_SERVICE_NAME="dedup-eu-1")
    assert result.returncode == 0, result.stderr
    [span] = _console_spans(result.stdout)
    assert span["resource"]["attributes"]["service.name"] == "dedup-eu-1"  # type: ignore[index]


def test_unset_exporter_exports_nothing() -> None:
    result = _run()
    assert result.returncode == 0, result.stderr
    assert _console_spans(result.stdout) == []


def test_unknown_exporter_is_a_configuration_error() -> None:
    result = _run(OTEL_TRACES_EXPORTER="zipkin")
    assert result.returncode == 1
    assert "ConfigError: OpenTelemetry configuration (OTEL_* variables)" in result.stderr and "zipkin" in result.stderr
