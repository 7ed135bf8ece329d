"""One worker: the front of app.py on the supervisor's port (SO_REUSEPORT), saying on a pipe when it serves.

The supervisor gives it the environment of the front (DEDUP_PORT: the reserved port; DEDUP_METRICS_PORT=off:
/metrics is the supervisor's; PROMETHEUS_MULTIPROC_DIR: where its metrics go), its number and the write end of a
pipe. It writes READY there the first time its health says SERVING; the pipe closes when it exits, which is how the
supervisor learns of its death. It asks the kernel for SIGTERM when the supervisor dies (a worker never outlives
it: SIGTERM drains it as any stop does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal

from ..app import serve
from ..config import ConfigError, ServerConfig
from ..logs import LogConfig, configure_logging
from ..telemetry import configure_tracing
from .supervisor import EXIT_CONFIG, READY

logger = logging.getLogger("dedup_server")

_PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent: int) -> None:
    """SIGTERM to this process when the supervisor dies (Linux prctl; elsewhere nothing)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup_server.workers", description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=int, required=True, help="the worker's number (1..N), in its log lines")
    parser.add_argument("--ready-fd", type=int, required=True, help="pipe to the supervisor")
    parser.add_argument("--parent", type=int, required=True, help="the supervisor's pid")
    args = parser.parse_args(argv)
    _stop_with_parent(args.parent)
    os.set_inheritable(args.ready_fd, False)
    try:
        configure_logging(LogConfig.from_env(), worker=args.index)
    except ConfigError as exc:
        configure_logging(LogConfig(), worker=args.index)
        logger.error("configuration error: %s", exc)
        return EXIT_CONFIG
    try:
        config = ServerConfig.from_env()
        configure_tracing()  # per process, before the server is built (the Triton channel is instrumented then)
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return EXIT_CONFIG

    def serving() -> None:
        with contextlib.suppress(OSError):  # the supervisor is gone: it stops us anyway
            os.write(args.ready_fd, READY)

    asyncio.run(serve(config, reuse_port=True, on_serving=serving))
    return 0
