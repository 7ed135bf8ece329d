"""Triton system shared memory against the real local Triton: used when Triton is local, same embeddings as the
wire, regions reused safely by concurrent batches, batches larger than a region sent over the wire, and every
region unregistered on close."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import tritonclient.grpc.aio as triton_aio
from dedup_server.decode import DecodeLimits, decode_image
from dedup_server.embedder import TritonEmbedder
from dedup_stack.triton import TritonProcess
from tritonclient.utils import InferenceServerException

from tests.conftest import REPO

pytestmark = pytest.mark.integration

PHOTOS = REPO.parent / "shared" / "eval" / "imagededup" / "base_images"


def photos() -> list[np.ndarray]:
    paths = sorted(PHOTOS.glob("*.jpg"))
    if len(paths) < 4:
        pytest.skip(f"no photos in {PHOTOS}")
    return [decode_image(path.read_bytes(), DecodeLimits()) for path in paths]


def embedder(triton: TritonProcess, mode: str, **kwargs: int) -> TritonEmbedder:
    return TritonEmbedder(
        url=triton.url, model="embedder", timeout_s=60, max_message_bytes=64 << 20, shared_memory=mode, **kwargs
    )


async def registered_regions(triton: TritonProcess) -> set[str]:
    async with triton_aio.InferenceServerClient(triton.url) as client:
        status = await client.get_system_shared_memory_status()
    return set(status.regions)


async def test_shared_memory_gives_the_wire_embeddings_and_is_released(triton: TritonProcess) -> None:
    images = photos()
    wire = embedder(triton, "off")
    local = embedder(triton, "auto", max_batch=4, shared_memory_regions=2)
    try:
        before = await registered_regions(triton)  # the session's front may have its own
        expected = await wire.embed(images)
        by_shm = await local.embed(images[:4])
        assert wire.transport == "wire" and local.transport == "shared-memory"
        ours = await registered_regions(triton) - before
        assert len(ours) == 2
        np.testing.assert_allclose(by_shm, expected[:4], atol=1e-6)
        assert np.allclose(np.linalg.norm(by_shm, axis=1), 1.0, atol=1e-4)

        # Six concurrent batches through two regions: each caller gets its own images' embeddings back.
        batches = [images[i : i + 3] for i in range(0, len(images) - 2)][:6]
        results = await asyncio.gather(*(local.embed(batch) for batch in batches))
        for start, result in zip(range(len(batches)), results, strict=True):
            np.testing.assert_allclose(result, expected[start : start + 3], atol=1e-6)

        # Larger than a region: over the wire, same answer.
        np.testing.assert_allclose(await local.embed(images), expected, atol=1e-6)
    finally:
        await wire.close()
        await local.close()
    assert not [name for name in await registered_regions(triton) if name in ours]


async def test_shared_memory_off_uses_the_wire(triton: TritonProcess) -> None:
    images = photos()[:2]
    off = embedder(triton, "off")
    try:
        await off.embed(images)
        assert off.transport == "wire"
    finally:
        await off.close()


async def test_triton_restart_forgets_regions_and_they_are_registered_again(triton: TritonProcess) -> None:
    images = photos()[:2]
    local = embedder(triton, "on", max_batch=2, shared_memory_regions=1)
    try:
        before = await registered_regions(triton)
        first = await local.embed(images)
        ours = await registered_regions(triton) - before
        assert len(ours) == 1
        # What a restarted Triton looks like to the front: our region is unknown there.
        await _unregister_when_released(triton, ours.pop())
        again = await local.embed(images)  # this batch falls back to the wire, the next one re-registers
        np.testing.assert_allclose(again, first, atol=1e-6)
        await asyncio.sleep(0)  # let the stale pool's cleanup task run
        np.testing.assert_allclose(await local.embed(images), first, atol=1e-6)
        assert local.transport == "shared-memory"
    finally:
        await local.close()


async def _unregister_when_released(triton: TritonProcess, region: str) -> None:
    """Triton may still hold the region a moment after answering ("currently in use", seen on a loaded CI host)."""
    async with triton_aio.InferenceServerClient(triton.url) as client:
        for attempt in range(50):
            try:
                await client.unregister_system_shared_memory(region)
                return
            except InferenceServerException as exc:
                if "in use" not in str(exc) or attempt == 49:
                    raise
                await asyncio.sleep(0.1)
