"""`python -m dedup_server`: the gRPC front, configured from DEDUP_* (and OTEL_* for tracing) environment variables.

DEDUP_WORKERS=1: this process is the front. More: it supervises that many workers on its port (workers/).
"""

from __future__ import annotations

import asyncio
import logging
import sys

from .app import serve
from .config import ConfigError, ServerConfig
from .logs import LogConfig, configure_logging
from .telemetry import configure_tracing
from .workers import Supervisor


def main() -> int:
    logger = logging.getLogger("dedup_server")
    try:
        configure_logging(LogConfig.from_env())
    except ConfigError as exc:
        configure_logging(LogConfig())  # plain text, to say what is wrong
        logger.error("configuration error: %s", exc)
        return 2
    try:
        config = ServerConfig.from_env()
        if config.workers == 1:  # (each worker sets up its own)
            configure_tracing()  # before the server is built: the Triton channel is instrumented when created
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return 2
    if config.workers > 1:
        return Supervisor(config).run()
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
