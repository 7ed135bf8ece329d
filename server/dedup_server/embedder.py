"""Embeddings from Triton: uint8 NHWC images in, unit-length float32 vectors out.

The model graph normalises pixels and L2-normalises its output, so this module only moves
tensors. Who the model is (name, version, dimension, fallback) is read from the model's own
config parameters on Triton, so a front never disagrees with the model it is served by.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import tritonclient.grpc.aio as triton_aio
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from . import metrics
from .errors import BackendError, BackendUnavailable, InvalidRequest

logger = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"

# Status codes (as tritonclient spells them) that mean "Triton is not there right now".
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelInfo:
    name: str
    version: str
    embedding_dim: int
    input_size: int
    fallback: bool
    warning: str

    @property
    def label(self) -> str:
        """What collections record and responses report: name@version."""
        return f"{self.name}@{self.version}"


class Embedder(Protocol):
    """What the service needs from an embedding backend (Triton in production, fakes in unit tests)."""

    async def model_info(self) -> ModelInfo: ...

    async def embed(self, images: Sequence[np.ndarray], *, timeout_s: float | None = None) -> np.ndarray: ...

    async def is_ready(self) -> bool: ...

    def forget_model_info(self) -> None: ...

    async def close(self) -> None: ...


class TritonEmbedder:
    def __init__(self, *, url: str, model: str, timeout_s: float, max_message_bytes: int) -> None:
        self._url = url
        self._model = model
        self._timeout_s = timeout_s
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

    async def close(self) -> None:
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
        """Read the model's identity again on next use (Triton went away and may come back with another)."""
        self._info = None

    async def model_info(self) -> ModelInfo:
        if self._info is None:
            self._info = await self._fetch_model_info()
        return self._info

    async def embed(self, images: Sequence[np.ndarray], *, timeout_s: float | None = None) -> np.ndarray:
        """Embed a batch of HxWx3 uint8 images; returns float32 [N, D] unit vectors.

        `timeout_s` (default: the configured one) bounds the inference call; a timeout is BackendUnavailable.
        """
        info = await self.model_info()
        batch = np.stack(images)
        expected = (info.input_size, info.input_size, 3)
        if batch.dtype != np.uint8 or batch.shape[1:] != expected:
            raise InvalidRequest(f"model input must be uint8 {expected}, got {batch.dtype} {batch.shape[1:]}")
        request = InferInput(INPUT_NAME, list(batch.shape), "UINT8")
        request.set_data_from_numpy(batch)
        try:
            # Traced by the contrib aio client interceptor (telemetry.py), timed here.
            with metrics.TRITON_INFER_SECONDS.time():
                result = await self._client.infer(
                    self._model,
                    inputs=[request],
                    outputs=[InferRequestedOutput(OUTPUT_NAME)],
                    client_timeout=self._timeout_s if timeout_s is None else timeout_s,
                )
        except InferenceServerException as exc:
            raise _backend_error("inference", exc) from exc
        embeddings = result.as_numpy(OUTPUT_NAME)
        if embeddings is None or embeddings.shape != (len(images), info.embedding_dim):
            shape = None if embeddings is None else embeddings.shape
            raise BackendError(f"Triton returned embeddings of shape {shape} for {len(images)} images")
        return embeddings.astype(np.float32, copy=False)

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
        )


def _backend_error(what: str, exc: InferenceServerException) -> Exception:
    status = exc.status() or ""
    message = f"Triton {what} failed: {exc.message()}"
    if status in _UNAVAILABLE:
        return BackendUnavailable(message)
    return BackendError(message)
