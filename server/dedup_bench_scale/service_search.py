"""Search latency as CheckDuplicate sees it: through the service's search batcher (DedupService.search), which
merges the Milvus searches of concurrent checks into one call, beside milvus_run.latency's one call per query."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from dedup_bench.measure import Latency
from dedup_server.config import IndexConfig, ServerConfig
from dedup_server.index import MilvusIndex
from dedup_server.model_identity import ModelInfo
from dedup_server.service import DedupService

from .groups_probe import KnownModel
from .milvus_run import PREFIX, TOP_K


async def _measure(uri: str, milvus_name: str, model: ModelInfo, index: IndexConfig, queries: np.ndarray, *,
                   concurrency: int, requests: int) -> Latency:
    pool = ThreadPoolExecutor(2)
    milvus_index = MilvusIndex(uri=uri, token="", prefix=PREFIX, index=index)
    service = DedupService(ServerConfig(milvus_uri=uri, collection_prefix=PREFIX, index=index),
                           embedder=KnownModel(model), index=milvus_index, decode_pool=pool)  # type: ignore[arg-type]
    service.start()
    times: list[float] = []
    errors = 0

    async def client(k: int) -> None:
        nonlocal errors
        for i in range(k, requests, concurrency):
            started = time.perf_counter()
            try:
                await service.search(milvus_name, queries[i % len(queries)][None, :], TOP_K)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                errors += 1
                continue
            times.append(time.perf_counter() - started)

    try:
        await service.search(milvus_name, queries[:1], TOP_K)  # warm-up
        started = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(concurrency)))
        wall = time.perf_counter() - started
    finally:
        await service.close()
        milvus_index.close()
        pool.shutdown()
    return Latency.of(times, errors=errors, wall_s=wall)


def latency(uri: str, milvus_name: str, model: ModelInfo, index: IndexConfig, queries: np.ndarray, *,
            concurrency: int, requests: int) -> Latency:
    """``requests`` single-query searches from ``concurrency`` concurrent callers, through the service."""
    return asyncio.run(_measure(uri, milvus_name, model, index, queries, concurrency=concurrency, requests=requests))
