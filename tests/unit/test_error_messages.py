"""Error messages echo what the client sent, cut short: a status message rides in an HTTP/2 trailer, and over
gRPC's 8 KiB metadata limit the client gets RESOURCE_EXHAUSTED instead of the status we meant.

A real aio gRPC server on port 0 with the real servicer and service (a fake embedder, Milvus Lite in tmp_path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from dedup.v1 import dedup_pb2, dedup_pb2_grpc
from dedup_server.config import ServerConfig
from dedup_server.embedder import ModelInfo
from dedup_server.errors import MAX_ECHOED_CHARS, MAX_MESSAGE_CHARS, CollectionNotFound, InvalidRequest, shorten_message
from dedup_server.index import MilvusIndex
from dedup_server.service import DedupService
from dedup_server.servicer import DedupServicer
from dedup_server.status import status_for
from PIL import Image

from tests.conftest import encode

HUGE = "n" * 10_000
MODEL = ModelInfo(name="fake", version="1", embedding_dim=8, input_size=224, fallback=False, warning="")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param("collection 'abc' does not exist", "collection 'abc' does not exist", id="short-untouched"),
        pytest.param(f"name {HUGE!r} is invalid", f"name '{'n' * MAX_ECHOED_CHARS}\u2026' is invalid", id="single"),
        pytest.param(f'id {"it" + chr(39) + "s" * 300!r} bad', f'id "it\'{"s" * (MAX_ECHOED_CHARS - 3)}\u2026" bad',
                     id="double-quoted-repr"),
        pytest.param(f"a {'x' * 250!r} and b {'y' * 250!r}.",
                     f"a '{'x' * MAX_ECHOED_CHARS}\u2026' and b '{'y' * MAX_ECHOED_CHARS}\u2026'.", id="two-values"),
    ],
)
def test_long_echoed_values_are_cut_with_an_ellipsis(message: str, expected: str) -> None:
    assert shorten_message(message) == expected


def test_a_long_message_without_quotes_is_capped_too() -> None:
    shortened = shorten_message("z" * 50_000)
    assert len(shortened) == MAX_MESSAGE_CHARS and shortened.endswith("\u2026")


def test_status_mapping_cuts_every_domain_error() -> None:
    code, message = status_for(CollectionNotFound(HUGE))
    assert code is grpc.StatusCode.NOT_FOUND and len(message) < 300
    code, message = status_for(InvalidRequest(f"metadata key {HUGE!r} is reserved"))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and len(message) < 300


class _Embedder:
    async def model_info(self) -> ModelInfo:
        return MODEL

    def known_model_info(self) -> ModelInfo:
        return MODEL

    async def embed(self, images: Sequence[np.ndarray], *, timeout_s: float | None = None) -> np.ndarray:
        vectors = np.ones((len(images), MODEL.embedding_dim), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    async def is_ready(self) -> bool:
        return True

    def forget_model_info(self) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[dedup_pb2_grpc.DeduplicationStub]:
    config = dataclasses.replace(ServerConfig(milvus_uri=str(tmp_path / "m.db"), threshold=0.9))
    index = MilvusIndex(uri=config.milvus_uri, token="", prefix="t_", index=config.index)
    pool = ThreadPoolExecutor(2)
    service = DedupService(config, embedder=_Embedder(), index=index, decode_pool=pool)  # type: ignore[arg-type]
    service.start()
    server = grpc.aio.server()
    dedup_pb2_grpc.add_DeduplicationServicer_to_server(DedupServicer(service), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield dedup_pb2_grpc.DeduplicationStub(channel)
    finally:
        await server.stop(None)
        await service.close()
        index.close()
        pool.shutdown()


def _image() -> bytes:
    return encode(Image.new("RGB", (64, 48), (200, 30, 30)), "PNG")


async def test_a_10_kb_collection_name_is_invalid_argument_not_resource_exhausted(
    stub: dedup_pb2_grpc.DeduplicationStub,
) -> None:
    for call in (
        stub.CheckDuplicate(dedup_pb2.CheckDuplicateRequest(image=_image(), collection=HUGE), timeout=30),
        stub.CheckDuplicate(dedup_pb2.CheckDuplicateRequest(image=_image(), collection=HUGE, insert_if_unique=True,
                                                            id="a"), timeout=30),
        stub.DeleteImages(dedup_pb2.DeleteImagesRequest(collection=HUGE, ids=["a"]), timeout=30),
        stub.GetStats(dedup_pb2.GetStatsRequest(collection=HUGE), timeout=30),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        details = refused.value.details() or ""
        assert "n" * MAX_ECHOED_CHARS + "\u2026" in details and len(details) < 500


async def test_a_stream_item_with_a_10_kb_collection_name_is_invalid_with_a_short_error(
    stub: dedup_pb2_grpc.DeduplicationStub,
) -> None:
    def requests() -> Iterator[dedup_pb2.IndexRequest]:
        yield dedup_pb2.IndexRequest(id="a", image=_image(), collection=HUGE)

    replies = [reply async for reply in stub.IndexStream(requests(), timeout=30)]
    assert [r.status for r in replies] == [dedup_pb2.IndexResponse.INVALID]
    assert len(replies[0].error) < 500 and "\u2026" in replies[0].error
