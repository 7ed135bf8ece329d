"""A whole local stack on free ports, for tools that need a running service (`make eval`, `make bench`, load).

Unlike `make run` (fixed, documented ports, foreground), this picks free ports for every process so it can
run beside `make run` or a test session, and stops everything when the `with` block ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from dedup_stack.front import FrontConfig, FrontProcess, front_env
from dedup_stack.milvus import MilvusConfig, MilvusPorts, MilvusProcess
from dedup_stack.ports import pick_free_ports
from dedup_stack.stack import check_model_repository
from dedup_stack.triton import TritonConfig, TritonProcess

logger = logging.getLogger(__name__)

_REPO_DIR = Path(__file__).resolve().parents[2]
_FRONT_PYTHONPATH = [str(_REPO_DIR / "server"), str(_REPO_DIR / "clients" / "python")]


@dataclass(frozen=True, kw_only=True)
class StackEndpoints:
    target: str  # the gRPC front, host:port
    triton_url: str
    milvus_uri: str
    startup_s: float


@contextlib.contextmanager
def ephemeral_stack(
    data_dir: Path,
    *,
    model_repository: Path = _REPO_DIR / "triton_models",
    triton_model: str = "embedder",
    front_overrides: Mapping[str, str] | None = None,
    startup_timeout_s: float = 180.0,
) -> Iterator[StackEndpoints]:
    """Start Milvus standalone, Triton and the front (each on free ports, logs under data_dir); stop all on exit.

    ``front_overrides`` are extra DEDUP_* variables for the front (e.g. a threshold or batch settings).
    """
    check_model_repository(model_repository, triton_model)
    data_dir = data_dir.absolute()
    started = time.monotonic()
    milvus = MilvusProcess(
        MilvusConfig(
            base_dir=data_dir / "milvus",
            install_dir=_REPO_DIR / ".dedup-data" / "milvus-install",  # unpacked once per checkout
            ports=MilvusPorts.pick_free(),
            startup_timeout_s=startup_timeout_s,
        )
    )
    grpc_port, http_port, metrics_port, front_port = pick_free_ports(4)
    triton = TritonProcess(
        TritonConfig(
            model_repository=model_repository.absolute(),
            work_dir=data_dir / "triton",
            models=(triton_model,),
            grpc_port=grpc_port,
            http_port=http_port,
            metrics_port=metrics_port,
            startup_timeout_s=startup_timeout_s,
        )
    )
    front: FrontProcess | None = None
    try:
        milvus.start()
        triton.start()
        overrides = {
            "DEDUP_HOST": "127.0.0.1",
            "DEDUP_PORT": str(front_port),
            "DEDUP_TRITON_URL": triton.url,
            "DEDUP_TRITON_MODEL": triton_model,
            "DEDUP_MILVUS_URI": milvus.uri,
            "DEDUP_DATA_DIR": str(data_dir / "front"),
            "DEDUP_METRICS_PORT": "off",  # its fixed default would clash with `make run` beside it
            **(front_overrides or {}),
        }
        front = FrontProcess(
            FrontConfig(
                command=(sys.executable, "-m", "dedup_server"),
                env=front_env(os.environ, overrides, _FRONT_PYTHONPATH),
                host="127.0.0.1",
                port=front_port,
                log_path=data_dir / "front.log",
                startup_timeout_s=startup_timeout_s,
            )
        )
        front.start()
        endpoints = StackEndpoints(
            target=f"127.0.0.1:{front_port}", triton_url=triton.url, milvus_uri=milvus.uri,
            startup_s=time.monotonic() - started,
        )
        logger.info("stack up in %.1f s: front %s", endpoints.startup_s, endpoints.target)
        yield endpoints
    finally:
        if front is not None:
            front.stop()
        triton.stop()
        milvus.stop()
