"""`python -m dedup_stack` (`make run`): Milvus + Triton + the gRPC front in the foreground until Ctrl-C.

Configured from DEDUP_* environment variables (see dedup_stack.config). Exit codes: 0 stopped on request,
1 a child failed to start or died, 2 nothing was started (model not built, port taken, bad configuration).
"""

from __future__ import annotations

import logging
import os
import sys

from dedup_stack.config import StackConfig
from dedup_stack.stack import EXIT_PRECONDITION, Stack


def main() -> int:
    logging.basicConfig(
        level=os.environ.get("DEDUP_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = StackConfig.from_env()
    except ValueError as exc:
        logging.getLogger("dedup_stack").error("configuration error: %s", exc)
        return EXIT_PRECONDITION
    return Stack(config).run()


if __name__ == "__main__":
    sys.exit(main())
