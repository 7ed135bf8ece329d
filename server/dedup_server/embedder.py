"""Embeddings from Triton: uint8 NHWC images in, unit-length float32 vectors out.

The model graph normalises pixels and L2-normalises its output, so this module only moves
tensors: through Triton system shared memory when Triton runs on this host (triton_shm.py), else
over gRPC. Who the model is (name, version, dimension, fallback) is read from the model's own
config parameters on Triton, so a front never disagrees with the model it is served by.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from . import metrics
from .errors import BackendError, BackendUnavailable, InvalidRequest
from .model_identity import ModelInfo, input_colour
from .triton_shm import PoolClosed, SharedMemoryPool, wants_shared_memory

logger = logging.getLogger(__name__)

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "Embedder", "ModelInfo", "TritonEmbedder", "input_colour"]

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"

# Status codes (as tritonclient spells them) that mean "Triton is not there right now".
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"}


class Embedder(Protocol):
    """What the service needs from an embedding backend (Triton in production, fakes in unit tests)."""

    async def model_info(self) -> ModelInfo: ...

    def known_model_info(self) -> ModelInfo | None:
        """The model info already read, without I/O (None: not read yet, or forgotten)."""
        ...

    async def embed(self, images: Sequence[np.ndarray], *, timeout_s: float | None = None) -> np.ndarray: ...

    async def is_ready(self) -> bool: ...

    def forget_model_info(self) -> None: ...

    async def close(self) -> None: ...


class TritonEmbedder:
    def __init__(
        self,
        *,
        url: str,
        model: str,
        timeout_s: float,
        max_message_bytes: int,
        shared_memory: str = "off",
        max_batch: int = 32,
        shared_memory_regions: int = 3,
    ) -> None:
        """``shared_memory`` "auto" (a local Triton), "on" (required) or "off"; regions hold ``max_batch`` images
        each, one per batch in flight (the embed batcher's max_in_flight + 1 is plenty)."""
        self._url = url
        self._model = model
        self._timeout_s = timeout_s
        self._shm_mode = shared_memory
        self._shm_wanted = wants_shared_memory(shared_memory, url)
        self._shm_max_batch = max_batch
        self._shm_regions = shared_memory_regions
        self._shm_pool: SharedMemoryPool | None = None
        self._shm_lock = asyncio.Lock()
        self._shm_failed = False  # "auto" after a failed registration: the wire from then on
        self._client = triton_aio.InferenceServerClient(
            url,
            channel_args=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.keepalive_time_ms", 30_000),
                ("grpc.keepalive_timeout_ms", 10_000),
                # Reconnect soon after Triton comes back (gRPC's default backoff grows to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2_000),
            ],
        )
        self._info: ModelInfo | None = None

    @property
    def transport(self) -> str:
        """"shared-memory" while regions are registered with Triton, else "wire"."""
        return "shared-memory" if self._shm_pool is not None else "wire"

    async def close(self) -> None:
        pool, self._shm_pool = self._shm_pool, None
        if pool is not None:
            await pool.close(self._client)
        await self._client.close()

    async def is_ready(self) -> bool:
        try:
            return bool(
                await self._client.is_server_ready(client_timeout=2.0)
                and await self._client.is_model_ready(self._model, client_timeout=2.0)
            )
        except InferenceServerException:
            return False

    def forget_model_info(self) -> None:
        """Read the model's identity again on next use (Triton went away and may come back with another).

        A restarted Triton has forgotten our shared-memory registrations too: they are made again on next use.
        """
        self._info = None
        pool, self._shm_pool = self._shm_pool, None
        if pool is not None:
            asyncio.get_running_loop().create_task(pool.close(None))

    def known_model_info(self) -> ModelInfo | None:
        return self._info

    async def model_info(self) -> ModelInfo:
        if self._info is None:
            self._info = await self._fetch_model_info()
        return self._info

    async def embed(self, images: Sequence[np.ndarray], *, timeout_s: float | None = None) -> np.ndarray:
        """Embed a batch of HxWx3 uint8 images; returns float32 [N, D] unit vectors.

        `timeout_s` (default: the configured one) bounds the inference call; a timeout is BackendUnavailable.
        """
        info = await self.model_info()
        expected = (info.input_size, info.input_size, 3)
        for image in images:
            if image.dtype != np.uint8 or image.shape != expected:
                raise InvalidRequest(f"model input must be uint8 {expected}, got {image.dtype} {image.shape}")
        timeout = self._timeout_s if timeout_s is None else timeout_s
        pool = await self._shared_memory(info)
        embeddings: np.ndarray | None = None
        if pool is not None and 0 < len(images) <= pool.max_batch:
            try:
                embeddings = await self._infer_shared_memory(pool, images, timeout)
            except PoolClosed:
                pass  # released by the health check (Triton went away) while this batch waited: the wire
            except InferenceServerException as exc:
                if "shared memory" not in (exc.message() or "").lower():
                    raise _backend_error("inference", exc) from exc
                # Triton lost the registration (restarted between health checks): register again next time.
                logger.warning("Triton shared memory failed (%s): this batch goes over the wire", exc.message())
                self.forget_model_info()
        if embeddings is None:
            embeddings = await self._infer_wire(images, timeout)
        if embeddings.shape != (len(images), info.embedding_dim):
            raise BackendError(f"Triton returned embeddings of shape {embeddings.shape} for {len(images)} images")
        return embeddings.astype(np.float32, copy=False)

    async def _infer_wire(self, images: Sequence[np.ndarray], timeout: float) -> np.ndarray:
        batch = np.stack(images)
        request = InferInput(INPUT_NAME, list(batch.shape), "UINT8")
        request.set_data_from_numpy(batch)
        try:
            # Traced by the contrib aio client interceptor (telemetry.py), timed here.
            with metrics.TRITON_INFER_SECONDS.time():
                result = await self._client.infer(
                    self._model, inputs=[request], outputs=[InferRequestedOutput(OUTPUT_NAME)],
                    client_timeout=timeout,
                )
        except InferenceServerException as exc:
            raise _backend_error("inference", exc) from exc
        embeddings = result.as_numpy(OUTPUT_NAME)
        if embeddings is None:
            raise BackendError(f"Triton returned no {OUTPUT_NAME!r} for {len(images)} images")
        return embeddings

    async def _infer_shared_memory(
        self, pool: SharedMemoryPool, images: Sequence[np.ndarray], timeout: float
    ) -> np.ndarray:
        async with pool.request(images) as (inputs, outputs, region):
            with metrics.TRITON_INFER_SECONDS.time():
                await self._client.infer(self._model, inputs=inputs, outputs=outputs, client_timeout=timeout)
            return pool.embeddings(region, len(images))

    async def _shared_memory(self, info: ModelInfo) -> SharedMemoryPool | None:
        """The registered pool, registering it on first use; None means the wire."""
        if self._shm_pool is not None or not self._shm_wanted or self._shm_failed:
            return self._shm_pool
        async with self._shm_lock:
            if self._shm_pool is None and not self._shm_failed:
                try:
                    self._shm_pool = await SharedMemoryPool.register(
                        self._client,
                        count=self._shm_regions,
                        max_batch=self._shm_max_batch,
                        image_shape=(info.input_size, info.input_size, 3),
                        embedding_dim=info.embedding_dim,
                    )
                except Exception as exc:
                    if self._shm_mode == "on":
                        raise BackendError(f"Triton system shared memory (DEDUP_TRITON_SHM=on) failed: {exc}") from exc
                    logger.warning("Triton system shared memory unavailable (%s): tensors go over the wire", exc)
                    self._shm_failed = True
        return self._shm_pool

    async def _fetch_model_info(self) -> ModelInfo:
        try:
            response = await self._client.get_model_config(self._model, client_timeout=5.0)
        except InferenceServerException as exc:
            raise _backend_error("model config", exc) from exc
        config = response.config
        params = {key: value.string_value for key, value in config.parameters.items()}
        missing = [key for key in ("model_id", "model_version", "embedding_dim") if key not in params]
        if missing:
            raise BackendError(
                f"Triton model {self._model!r} lacks config parameters {missing}: build it with `make model`"
            )
        inputs = {tensor.name: list(tensor.dims) for tensor in config.input}
        dims = inputs.get(INPUT_NAME)
        if not dims or len(dims) != 3 or dims[0] != dims[1] or dims[2] != 3:
            raise BackendError(f"Triton model {self._model!r} input {INPUT_NAME!r} has dims {dims}, want [S, S, 3]")
        fallback = params.get("fallback", "false").lower() == "true"
        return ModelInfo(
            name=params["model_id"],
            version=params["model_version"],
            embedding_dim=int(params["embedding_dim"]),
            input_size=int(dims[0]),
            fallback=fallback,
            warning=params.get("fallback_reason", "") if fallback else "",
            precision=params.get("precision", "fp32"),
            input_colour=input_colour(params),
        )


def _backend_error(what: str, exc: InferenceServerException) -> Exception:
    status = exc.status() or ""
    message = f"Triton {what} failed: {exc.message()}"
    if status in _UNAVAILABLE:
        return BackendUnavailable(message)
    return BackendError(message)
