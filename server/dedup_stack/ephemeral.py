"""The whole local stack on free ports as a context manager, for tools that only need its addresses."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from dedup_stack.killable import REPO_DIR, KillableStack


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
    model_repository: Path = REPO_DIR / "triton_models",
    triton_model: str = "embedder",
    front_overrides: Mapping[str, str] | None = None,
    startup_timeout_s: float = 180.0,
) -> Iterator[StackEndpoints]:
    """Start Milvus standalone, Triton and the front (each on free ports, logs under data_dir); stop all on exit."""
    started = time.monotonic()
    with KillableStack(data_dir, front_overrides=front_overrides, model_repository=model_repository,
                       triton_model=triton_model, startup_timeout_s=startup_timeout_s) as stack:
        yield StackEndpoints(target=stack.target, triton_url=stack.triton_config.url, milvus_uri=stack.milvus_uri,
                             startup_s=time.monotonic() - started)
