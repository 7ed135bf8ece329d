"""Watch Triton and Milvus; report SERVING on grpc.health.v1 only while both answer."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health, health_pb2

from .embedder import Embedder, ModelInfo
from .errors import DedupError
from .index import MilvusIndex

logger = logging.getLogger(__name__)

SERVICE_NAMES = ("", "dedup.v1.Deduplication")


def fallback_banner(model: ModelInfo) -> str:
    line = "!" * 96
    return (
        f"\n{line}\n!! FALLBACK MODEL: this server embeds with {model.label}, NOT the production model ResNet-50.\n"
        f"!! {model.warning}\n"
        "!! Give ResNet-50 weights to `make model` (RESNET50_WEIGHTS=/path/resnet50-0676ba61.pth) and restart.\n"
        f"{line}"
    )


class BackendMonitor:
    def __init__(
        self,
        *,
        embedder: Embedder,
        index: MilvusIndex,
        health_servicer: health.aio.HealthServicer,
        interval_s: float,
    ) -> None:
        self._embedder = embedder
        self._index = index
        self._health = health_servicer
        self._interval_s = interval_s
        self._serving: bool | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def serving(self) -> bool:
        return bool(self._serving)

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="backend-monitor")

    async def wait_ready(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._ready.wait(), timeout_s)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._set(False, "shutting down")

    async def _watch(self) -> None:
        while True:
            try:
                await self._check_once()
            except Exception:  # the watcher must outlive any surprise, or health would freeze
                logger.exception("backend check failed")
                await self._set(False, "backend check failed")
            await asyncio.sleep(self._interval_s)

    async def _check_once(self) -> None:
        triton_ok = await self._embedder.is_ready()
        milvus_ok = await asyncio.to_thread(self._index.ping)
        reason = ", ".join(name for name, ok in (("Triton", triton_ok), ("Milvus", milvus_ok)) if not ok)
        serving = triton_ok and milvus_ok
        if not triton_ok:
            self._embedder.forget_model_info()
        if serving and self._serving is not True:
            serving = await self._announce_model()
            reason = reason or "model config unreadable"
        await self._set(serving, f"{reason} not answering" if not serving else "")

    async def _announce_model(self) -> bool:
        try:
            model = await self._embedder.model_info()
        except DedupError as exc:
            logger.error("Triton answers but its model cannot be used: %s", exc)
            return False
        if model.fallback:
            logger.warning("%s", fallback_banner(model))
        logger.info("embedding model %s (dim %d)", model.label, model.embedding_dim)
        return True

    async def _set(self, serving: bool, reason: str) -> None:
        if serving == self._serving:
            return
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in SERVICE_NAMES:
            await self._health.set(name, status)
        if serving:
            logger.info("backends answer: SERVING")
            self._ready.set()
        elif self._serving is not None or reason:
            logger.warning("NOT_SERVING: %s", reason)
            self._ready.clear()
        self._serving = serving
