"""`python -m dedup_server`: the gRPC front, configured from DEDUP_* environment variables."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from .app import serve
from .config import ConfigError, ServerConfig


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("DEDUP_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = ServerConfig.from_env()
    except ConfigError as exc:
        logging.getLogger("dedup_server").error("configuration error: %s", exc)
        return 2
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
