"""Process logging: plain text for people, or one JSON object per line for log pipelines.

DEDUP_LOG_FORMAT=text (default) or json; DEDUP_LOG_LEVEL (default INFO). Records logged inside a
span carry its trace_id and span_id (hex, as trace backends show them), so a log line leads to its
trace; the JSON format has them as fields.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

from .config import ConfigError

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A worker of a supervisor (DEDUP_WORKERS > 1) says which one it is; in JSON the `worker` field.
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s [worker %(worker)s] %(name)s: %(message)s"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LogConfig:
    level: str = "INFO"
    format: str = "text"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"DEDUP_LOG_FORMAT must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if not isinstance(logging.getLevelName(self.level), int):
            raise ConfigError(f"DEDUP_LOG_LEVEL must be a logging level (DEBUG, INFO, ...), got {self.level!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LogConfig:
        env = os.environ if env is None else env
        return cls(
            level=env.get("DEDUP_LOG_LEVEL", "").strip().upper() or cls.level,
            format=env.get("DEDUP_LOG_FORMAT", "").strip().lower() or cls.format,
        )


class TraceContextFilter(logging.Filter):
    """Adds trace_id and span_id to records logged while a span is current."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        return True


def json_formatter() -> logging.Formatter:
    """One JSON object per record: time, level, logger, message, trace ids and any `extra` fields."""
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601 in UTC
    )


class WorkerFilter(logging.Filter):
    """Adds `worker` (its number under the supervisor) to every record."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def log_handler(config: LogConfig, stream: TextIO | None = None, *, worker: int | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    text_format = TEXT_FORMAT if worker is None else WORKER_TEXT_FORMAT
    handler.setFormatter(json_formatter() if config.format == "json" else logging.Formatter(text_format))
    handler.addFilter(TraceContextFilter())
    if worker is not None:
        handler.addFilter(WorkerFilter(worker))
    return handler


def configure_logging(config: LogConfig, *, worker: int | None = None) -> None:
    """Route the root logger to one stderr handler in the configured format (tagged with `worker` when given)."""
    logging.basicConfig(level=config.level, handlers=[log_handler(config, worker=worker)], force=True)
