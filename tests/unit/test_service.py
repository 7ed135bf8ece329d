"""DedupService decisions with an injected fake embedder and a real Milvus Lite index in tmp_path."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from dedup_server.config import BatchConfig, Limits, ServerConfig
from dedup_server.embedder import ModelInfo
from dedup_server.errors import CollectionNotFound, InvalidImage, InvalidRequest, ModelMismatch, StreamTooLong
from dedup_server.index import MilvusIndex
from dedup_server.service import CheckQuery, DedupService, IndexItem, ItemStatus
from PIL import Image

from tests.conftest import encode

DIM = 16
MODEL = ModelInfo(name="fake", version="1", embedding_dim=DIM, input_size=224, fallback=False, warning="")


class ColourEmbedder:
    """Embeds an image by its mean colour, so same-colour images are duplicates (cosine 1)."""

    def __init__(self, model: ModelInfo = MODEL) -> None:
        self.model = model
        self.batch_sizes: list[int] = []

    async def model_info(self) -> ModelInfo:
        return self.model

    def known_model_info(self) -> ModelInfo | None:
        return self.model

    async def embed(self, images: Sequence[np.ndarray], *, timeout_s: float | None = None) -> np.ndarray:
        self.batch_sizes.append(len(images))
        vectors = np.zeros((len(images), DIM), dtype=np.float32)
        for row, image in enumerate(images):
            r, g, b = image.reshape(-1, 3).mean(axis=0)
            vectors[row, :3] = (r + 1, g + 1, b + 1)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    async def is_ready(self) -> bool:
        return True

    def forget_model_info(self) -> None:
        return None

    async def close(self) -> None:
        return None


def solid(rgb: tuple[int, int, int]) -> bytes:
    return encode(Image.new("RGB", (64, 48), rgb), "PNG")


RED, GREEN, BLUE = solid((250, 0, 0)), solid((0, 250, 0)), solid((0, 0, 250))


@pytest.fixture
async def make_service(tmp_path: Path) -> AsyncIterator:
    pool = ThreadPoolExecutor(2)
    services: list[DedupService] = []
    index = MilvusIndex(uri=str(tmp_path / "milvus.db"), token="", prefix="t_", index=ServerConfig().index)

    def build(
        embedder: ColourEmbedder | None = None, own_index: MilvusIndex | None = None, **overrides: object
    ) -> DedupService:
        config = dataclasses.replace(ServerConfig(milvus_uri=str(tmp_path / "milvus.db"), threshold=0.99), **overrides)
        service = DedupService(
            config, embedder=embedder or ColourEmbedder(), index=own_index or index, decode_pool=pool
        )
        service.start()
        services.append(service)
        return service

    yield build
    for service in services:
        await service.close()
    index.close()
    pool.shutdown()


async def _items(*items: IndexItem) -> AsyncIterator[IndexItem]:
    for item in items:
        yield item


async def test_check_finds_indexed_image_and_not_others(make_service) -> None:
    service = make_service()
    outcome = [o async for o in service.index_stream(_items(IndexItem(id="red", image=RED)))]
    assert outcome[0].status is ItemStatus.INDEXED
    hit = await service.check(CheckQuery(image=RED))
    assert [m.id for m in hit.matches] == ["red"] and hit.matches[0].similarity == pytest.approx(1, abs=1e-5)
    assert hit.model == "fake@1" and hit.threshold == pytest.approx(0.99)
    miss = await service.check(CheckQuery(image=GREEN))
    assert miss.matches == [] and not miss.inserted


async def test_skip_duplicates_inside_one_batch_keeps_exactly_one(make_service) -> None:
    service = make_service(write_batch=BatchConfig(max_batch_size=64, max_delay_ms=50, max_queue=128, max_in_flight=1))
    items = [IndexItem(id=f"copy{i}", image=RED, skip_duplicates=True) for i in range(6)]
    green = IndexItem(id="g", image=GREEN, skip_duplicates=True)
    outcomes = [o async for o in service.index_stream(_items(*items, green))]
    statuses = sorted((o.id, o.status.value) for o in outcomes)
    assert [s for _, s in statuses].count("INDEXED") == 2  # one red copy + green
    duplicates = [o for o in outcomes if o.status is ItemStatus.DUPLICATE]
    assert len(duplicates) == 5 and all(o.matches and o.matches[0].id.startswith("copy") for o in duplicates)
    assert (await service.stats("")).collections[0].image_count == 2


async def test_concurrent_checks_share_milvus_searches_and_each_gets_its_own_answer(make_service) -> None:
    # One search in flight: the checks that arrive meanwhile are merged into the next call.
    service = make_service(search_batch=BatchConfig(max_batch_size=64, max_delay_ms=20, max_queue=128,
                                                    max_in_flight=1))
    [o async for o in service.index_stream(_items(IndexItem(id="red", image=RED), IndexItem(id="blue", image=BLUE)))]
    images = [RED, GREEN, BLUE] * 4
    outcomes = await asyncio.gather(*(service.check(CheckQuery(image=image, top_k=1 + i % 2))
                                      for i, image in enumerate(images)))
    expected = {RED: ["red"], GREEN: [], BLUE: ["blue"]}
    assert [[m.id for m in o.matches] for o in outcomes] == [expected[image] for image in images]
    stats = service.search_batcher.stats
    assert stats.items == len(images) and stats.batches < len(images)


async def test_concurrent_insert_if_unique_is_race_free(make_service) -> None:
    service = make_service()
    outcomes = await asyncio.gather(
        *(service.check(CheckQuery(image=BLUE, insert_if_unique=True, id=f"client{i}")) for i in range(8))
    )
    assert sum(o.inserted for o in outcomes) == 1
    assert all(o.matches for o in outcomes if not o.inserted)


async def test_resending_an_id_replaces_it_and_is_not_its_own_duplicate(make_service) -> None:
    service = make_service()
    first = [o async for o in service.index_stream(_items(IndexItem(id="x", image=RED, skip_duplicates=True)))]
    again = [o async for o in service.index_stream(_items(IndexItem(id="x", image=RED, skip_duplicates=True)))]
    assert first[0].status is again[0].status is ItemStatus.INDEXED
    replaced = [o async for o in service.index_stream(_items(IndexItem(id="x", image=GREEN)))]
    assert replaced[0].status is ItemStatus.INDEXED
    assert (await service.check(CheckQuery(image=RED))).matches == []
    assert (await service.stats("")).collections[0].image_count == 1


async def test_bad_items_are_reported_and_the_stream_goes_on(make_service) -> None:
    service = make_service()
    outcomes = {
        o.id: o
        async for o in service.index_stream(
            _items(
                IndexItem(id="bad", image=b"not an image"),
                IndexItem(id="", image=RED),
                IndexItem(id="good", image=GREEN),
                IndexItem(id="thr", image=BLUE, threshold=2.0),
            )
        )
    }
    assert outcomes["bad"].status is ItemStatus.INVALID and "not a recognised image" in outcomes["bad"].error
    assert outcomes[""].status is ItemStatus.INVALID and "id is required" in outcomes[""].error
    assert outcomes["thr"].status is ItemStatus.INVALID and "threshold" in outcomes["thr"].error
    assert outcomes["good"].status is ItemStatus.INDEXED


async def test_unary_errors_are_domain_errors(make_service) -> None:
    service = make_service()
    with pytest.raises(CollectionNotFound):
        await service.check(CheckQuery(image=RED, collection="nope"))
    with pytest.raises(InvalidImage):
        await service.check(CheckQuery(image=b"", insert_if_unique=True, id="a"))
    with pytest.raises(InvalidRequest, match="id is required"):
        await service.check(CheckQuery(image=RED, insert_if_unique=True))


async def test_collection_built_by_another_model_is_refused(make_service, tmp_path: Path) -> None:
    service = make_service()
    await service.check(CheckQuery(image=RED, insert_if_unique=True, id="r", collection="shared"))
    # A second front (own client, own cache) serving another model version.
    other_index = MilvusIndex(uri=str(tmp_path / "milvus.db"), token="", prefix="t_", index=ServerConfig().index)
    other = make_service(ColourEmbedder(dataclasses.replace(MODEL, version="2")), own_index=other_index)
    with pytest.raises(ModelMismatch, match="fake@1"):
        await other.check(CheckQuery(image=RED, collection="shared"))
    # Deleting needs no embeddings: the front of another model may delete from it.
    assert await other.delete("shared", ["r", "nope"]) == (1, ["nope"])
    other_index.close()


async def test_delete_reports_missing_ids(make_service) -> None:
    service = make_service()
    [o async for o in service.index_stream(_items(IndexItem(id="a", image=RED), IndexItem(id="b", image=GREEN)))]
    assert await service.delete("", ["a", "zzz", "a"]) == (1, ["zzz"])
    assert [m.id for m in (await service.check(CheckQuery(image=GREEN))).matches] == ["b"]
    assert (await service.check(CheckQuery(image=RED))).matches == []


async def test_stream_over_the_item_limit_answers_what_it_read_then_ends(make_service) -> None:
    service = make_service(limits=Limits(max_stream_items=3))
    colours = [solid((10 * i, 0, 0)) for i in range(5)]
    items = _items(*(IndexItem(id=f"i{i}", image=colour) for i, colour in enumerate(colours)))
    outcomes = []
    with pytest.raises(StreamTooLong, match=r"at most 3 items .* item 4 \(id 'i3'\)"):
        async for outcome in service.index_stream(items):
            outcomes.append(outcome)
    assert sorted(o.id for o in outcomes) == ["i0", "i1", "i2"]  # every item read was answered
    assert {o.status for o in outcomes} == {ItemStatus.INDEXED}
    assert (await service.stats("")).collections[0].image_count == 3  # nothing past the limit was stored
    exactly = [o async for o in service.index_stream(_items(*(IndexItem(id=f"j{i}", image=RED) for i in range(3))))]
    assert len(exactly) == 3  # a stream of exactly the limit ends normally


async def test_a_fresh_write_turn_searches_strong_then_session(make_service, monkeypatch: pytest.MonkeyPatch) -> None:
    """Across fronts (coordination/), the first batch after taking a collection's lock must see the other fronts'
    writes: Strong; while the lock is kept, Session (this client's writes) is enough."""
    import contextlib

    from dedup_server.coordination import WriteTurn

    class Turns:
        def __init__(self) -> None:
            self.collections: list[str] = []

        @contextlib.asynccontextmanager
        async def turn(self, collection: str, deadline):  # type: ignore[no-untyped-def]
            self.collections.append(collection)
            yield WriteTurn(deadline=deadline, fresh=len(self.collections) == 1)

        async def close(self) -> None:
            return None

    turns = Turns()
    service = make_service()
    service._coordinator = turns
    seen: list[str | None] = []
    search = service._index.search

    def spy(*args, consistency=None, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(consistency)
        return search(*args, consistency=consistency, **kwargs)

    monkeypatch.setattr(service._index, "search", spy)
    for image_id, image in (("r", RED), ("g", GREEN)):
        await service.check(CheckQuery(image=image, insert_if_unique=True, id=image_id, collection="turns"))
    assert turns.collections == ["dedup_turns", "dedup_turns"]  # prefixed as the Milvus collection is
    assert seen == ["Strong", None]
