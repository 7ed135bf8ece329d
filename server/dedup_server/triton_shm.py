"""Triton system shared memory for the embedder's tensors, when Triton runs on the same host.

Over the wire, a batch of 32 images is 4.8 MB that gRPC serialises, copies and parses on both sides. With
shared memory the front writes each decoded image once into a region Triton has mapped, and reads the
embeddings back from the same region: the request only names the region. One region per in-flight batch
(a small pool sized for the largest batch), each laid out as [images | embeddings].

Only for a Triton on this host (127.0.0.1, localhost, ::1 or a unix socket) sharing its /dev/shm with us;
`mode` "auto" falls back to the wire when that does not hold or registration fails, "on" makes it an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Final, Literal

import numpy as np
import tritonclient.grpc.aio as triton_aio
import tritonclient.utils.shared_memory as shm
from tritonclient.grpc import InferInput, InferRequestedOutput

logger = logging.getLogger(__name__)

ShmMode = Literal["auto", "on", "off"]
SHM_MODES: Final = ("auto", "on", "off")
_LOCAL_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def is_local_url(url: str) -> bool:
    """Whether a tritonclient gRPC URL (host:port, [v6]:port or unix:path) points at this host."""
    if url.startswith("unix:"):
        return True
    host = url.rsplit(":", 1)[0] if ":" in url else url
    return host.strip("[]") in _LOCAL_HOSTS


def wants_shared_memory(mode: str, url: str) -> bool:
    """Whether to try shared memory: "on" always, "auto" for a local Triton, "off" never."""
    if mode not in SHM_MODES:
        raise ValueError(f"shared-memory mode must be one of {SHM_MODES}, got {mode!r}")
    return mode == "on" or (mode == "auto" and is_local_url(url))


@dataclasses.dataclass(frozen=True)
class _Region:
    name: str  # what Triton calls it
    handle: shm.SharedMemoryRegion
    output_offset: int


class PoolClosed(Exception):
    """The pool was closed (Triton went away) before this batch got a region: send it over the wire."""


class SharedMemoryPool:
    """Registered system shared-memory regions, each big enough for one batch of ``max_batch`` images.

    Closing it (Triton went away) destroys the free regions at once, and each region still in use when its batch
    ends: a batch in flight across a Triton hang still reads its answer from its region.
    """

    def __init__(
        self, *, regions: Sequence[_Region], max_batch: int, image_shape: tuple[int, int, int], embedding_dim: int
    ) -> None:
        self._free: asyncio.Queue[_Region | None] = asyncio.Queue()  # None: closed
        self._closed = False
        self._closing_client: triton_aio.InferenceServerClient | None = None
        for region in regions:
            self._free.put_nowait(region)
        self.max_batch = max_batch
        self._image_shape = image_shape
        self._image_bytes = int(np.prod(image_shape))
        self._embedding_dim = embedding_dim

    @classmethod
    async def register(
        cls,
        client: triton_aio.InferenceServerClient,
        *,
        count: int,
        max_batch: int,
        image_shape: tuple[int, int, int],
        embedding_dim: int,
    ) -> SharedMemoryPool:
        """Create ``count`` regions and register them with Triton; on failure nothing stays behind."""
        input_bytes = max_batch * int(np.prod(image_shape))
        output_bytes = max_batch * embedding_dim * 4
        tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
        regions: list[_Region] = []
        try:
            for index in range(count):
                name, key = f"dedup_{tag}_{index}", f"/dedup_{tag}_{index}"
                handle = shm.create_shared_memory_region(name, key, input_bytes + output_bytes, create_only=True)
                regions.append(_Region(name=name, handle=handle, output_offset=input_bytes))
                await client.register_system_shared_memory(name, key, input_bytes + output_bytes)
        except BaseException:
            await _release(client, regions)
            raise
        logger.info(
            "Triton system shared memory: %d regions of %.1f MB (batches up to %d)",
            count, (input_bytes + output_bytes) / 1e6, max_batch,
        )
        return cls(regions=regions, max_batch=max_batch, image_shape=image_shape, embedding_dim=embedding_dim)

    @contextlib.asynccontextmanager
    async def request(
        self, images: Sequence[np.ndarray]
    ) -> AsyncIterator[tuple[list[InferInput], list[InferRequestedOutput], _Region]]:
        """A free region holding ``images``, and the inputs/outputs that name it; the region is reused after."""
        count = len(images)
        region = await self._free.get()
        if region is None:
            self._free.put_nowait(None)  # wakes the next waiter too
            raise PoolClosed("Triton shared memory was released")
        try:
            # Each decoded image is copied once, straight into the region (no np.stack, no protobuf).
            shm.set_shared_memory_region(region.handle, list(images))
            request = InferInput("images", [count, *self._image_shape], "UINT8")
            request.set_shared_memory(region.name, count * self._image_bytes)
            output = InferRequestedOutput("embeddings")
            output.set_shared_memory(region.name, count * self._embedding_dim * 4, offset=region.output_offset)
            yield [request], [output], region
        finally:
            if self._closed:
                await _release(self._closing_client, [region])
            else:
                self._free.put_nowait(region)

    def embeddings(self, region: _Region, count: int) -> np.ndarray:
        """The embeddings Triton wrote into ``region``, copied out (the region is reused by the next batch)."""
        view = shm.get_contents_as_numpy(
            region.handle, np.float32, [count, self._embedding_dim], offset=region.output_offset
        )
        return np.array(view, copy=True)

    async def close(self, client: triton_aio.InferenceServerClient | None) -> None:
        """Unregister (when Triton is still there) and destroy every region, those in use once their batch ends."""
        self._closed, self._closing_client = True, client
        free = []
        while not self._free.empty():
            region = self._free.get_nowait()
            if region is not None:
                free.append(region)
        self._free.put_nowait(None)
        await _release(client, free)


async def _release(client: triton_aio.InferenceServerClient | None, regions: Sequence[_Region]) -> None:
    for region in regions:
        if client is not None:
            try:
                await client.unregister_system_shared_memory(region.name, client_timeout=2.0)
            except Exception as exc:  # Triton may be gone (restart): the region dies with our process anyway
                logger.debug("unregistering %s: %s", region.name, exc)
        try:
            shm.destroy_shared_memory_region(region.handle)
        except Exception as exc:
            logger.warning("cannot destroy shared memory region %s: %s", region.name, exc)
