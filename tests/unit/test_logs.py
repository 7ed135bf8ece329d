"""Log settings from the environment, JSON records with the trace ids of the current span."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from dedup_server.config import ConfigError
from dedup_server.logs import LogConfig, log_handler
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, LogConfig(level="INFO", format="text"), id="defaults"),
        pytest.param(
            {"DEDUP_LOG_FORMAT": " JSON ", "DEDUP_LOG_LEVEL": "debug"}, LogConfig(level="DEBUG", format="json"),
            id="any-case",
        ),
        pytest.param({"DEDUP_LOG_FORMAT": ""}, LogConfig(), id="empty-is-unset"),
    ],
)
def test_log_config_from_env(env: dict[str, str], expected: LogConfig) -> None:
    assert LogConfig.from_env(env) == expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        pytest.param({"DEDUP_LOG_FORMAT": "xml"}, "DEDUP_LOG_FORMAT", id="format"),
        pytest.param({"DEDUP_LOG_LEVEL": "LOUD"}, "DEDUP_LOG_LEVEL", id="level"),
    ],
)
def test_log_config_rejects(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        LogConfig.from_env(env)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    logger = logging.getLogger("test_logs.json")
    handler = log_handler(LogConfig(format="json"), stream)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def test_json_records_carry_the_current_span_ids(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    tracer = TracerProvider().get_tracer(__name__)  # a provider of its own: the global one is set once per process
    logger.info("before %s", "any span")
    with tracer.start_as_current_span("work") as span:
        logger.warning("inside", extra={"item": "photo.jpg"})
    outside, inside = (json.loads(line) for line in stream.getvalue().splitlines())

    assert outside["message"] == "before any span" and "trace_id" not in outside and "span_id" not in outside
    context = span.get_span_context()
    assert inside["trace_id"] == trace.format_trace_id(context.trace_id) and len(inside["trace_id"]) == 32
    assert inside["span_id"] == trace.format_span_id(context.span_id)
    assert (inside["level"], inside["logger"], inside["message"], inside["item"]) == (
        "WARNING", "test_logs.json", "inside", "photo.jpg",
    )
    assert inside["time"].endswith("+00:00")


def test_text_format_stays_one_plain_line() -> None:
    stream = io.StringIO()
    handler = log_handler(LogConfig(), stream)
    handler.handle(logging.makeLogRecord({"name": "x", "levelname": "INFO", "levelno": 20, "msg": "hello %s",
                                          "args": ("world",)}))
    assert stream.getvalue().rstrip("\n").endswith("INFO x: hello world")
