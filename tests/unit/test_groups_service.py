"""FindDuplicateGroups in the service, against a real Milvus Lite: facts stored at index time and the keeper chosen
on them, reserved metadata never answered, and collection names users use (with the first scheme's kept)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dedup_server import service as service_module
from dedup_server.config import ServerConfig
from dedup_server.errors import CollectionNotFound
from dedup_server.groups import DuplicateGroup, KeepPolicy
from dedup_server.index import MilvusIndex, milvus_collection_name
from dedup_server.service import CheckQuery, DedupService, GroupsQuery, IndexItem, ItemStatus, ScanProgress
from dedup_server.servicer import _matches
from PIL import Image

from tests.conftest import encode
from tests.unit.test_service import ColourEmbedder

RED = (250, 10, 10)


def photo(size: tuple[int, int], fmt: str, colour: tuple[int, int, int] = RED) -> bytes:
    return encode(Image.new("RGB", size, colour), fmt, **({"quality": 95} if fmt == "JPEG" else {}))


@pytest.fixture(params=["paged", "joined"])
async def service(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                  ) -> AsyncIterator[DedupService]:
    # Every answer is the same whichever way the scan finds neighbours: Milvus searches a page at a time, or the
    # front's self-join (large collections; forced here for a small one).
    if request.param == "joined":
        monkeypatch.setattr(service_module, "GROUPS_JOIN_MIN_IMAGES", 0)
    pool = ThreadPoolExecutor(2)
    index = MilvusIndex(uri=str(tmp_path / "milvus.db"), token="", prefix="t_", index=ServerConfig().index)
    config = dataclasses.replace(
        ServerConfig(milvus_uri=str(tmp_path / "milvus.db"), threshold=0.99, data_dir=tmp_path / "data")
    )
    built = DedupService(config, embedder=ColourEmbedder(), index=index, decode_pool=pool)
    built.start()
    yield built
    await built.close()
    index.close()
    pool.shutdown()


async def _index_one_by_one(service: DedupService, collection: str, items: list[tuple[str, bytes]]) -> None:
    """In this order, each its own write (distinct inserted_at: oldest and newest are well defined)."""
    for image_id, image in items:
        async def one(image_id: str = image_id, image: bytes = image) -> AsyncIterator[IndexItem]:
            yield IndexItem(id=image_id, image=image, collection=collection, metadata={"path": f"p/{image_id}"})
        outcomes = [o async for o in service.index_stream(one())]
        assert outcomes[0].status is ItemStatus.INDEXED, outcomes
        await asyncio.sleep(0.01)


async def _groups(service: DedupService, **query: object) -> list[DuplicateGroup]:
    found = [item async for item in service.find_groups(GroupsQuery(**query))]  # type: ignore[arg-type]
    assert isinstance(found[0], ScanProgress)
    return [g for g in found if isinstance(g, DuplicateGroup)]


LIBRARY = [
    ("copy.jpg", photo((800, 600), "JPEG")),  # indexed first: the oldest
    ("original.png", photo((800, 600), "PNG")),
    ("big.jpg", photo((1600, 1200), "JPEG")),
    ("thumb.webp", photo((160, 120), "WEBP")),  # indexed last: the newest
    ("green.png", photo((100, 100), "PNG", (10, 250, 10))),  # no duplicate
]


@pytest.mark.parametrize(
    ("keep", "keeper"),
    [
        pytest.param(KeepPolicy.DEFAULT, "big.jpg", id="default"),
        pytest.param(KeepPolicy.LARGEST, "big.jpg", id="largest"),
        pytest.param(KeepPolicy.ORIGINAL_FORMAT, "original.png", id="original-format"),
        pytest.param(KeepPolicy.OLDEST, "copy.jpg", id="oldest"),
        pytest.param(KeepPolicy.NEWEST, "thumb.webp", id="newest"),
    ],
)
async def test_groups_answer_members_with_stored_facts_and_the_keeper(
    service: DedupService, keep: KeepPolicy, keeper: str
) -> None:
    await _index_one_by_one(service, "lib", LIBRARY)
    (group,) = await _groups(service, collection="lib", keep=keep.value)
    assert group.ids == ("big.jpg", "copy.jpg", "original.png", "thumb.webp")
    assert group.keeper == keeper and group.members[0].id == keeper and group.members[0].keeper
    assert sum(m.keeper for m in group.members) == 1
    members = {m.id: m for m in group.members}
    big = members["big.jpg"].facts
    assert (big.width, big.height, big.format, big.bytes) == (1600, 1200, "JPEG", len(LIBRARY[2][1]))
    assert members["thumb.webp"].facts.format == "WEBP" and members["original.png"].facts.lossless
    assert members["copy.jpg"].facts.indexed_at_ms < members["thumb.webp"].facts.indexed_at_ms
    assert all(m.metadata == {"path": f"p/{m.id}"} for m in group.members)  # the client's own, nothing reserved
    assert all(m.similarity >= 0.99 and m.closest in members for m in group.members)


async def test_min_group_size_limit_and_bad_keep(service: DedupService) -> None:
    await _index_one_by_one(service, "sizes", LIBRARY + [("green2.png", photo((50, 50), "PNG", (10, 250, 10)))])
    assert [len(g.ids) for g in await _groups(service, collection="sizes")] == [4, 2]
    assert [len(g.ids) for g in await _groups(service, collection="sizes", min_group_size=3)] == [4]
    assert [len(g.ids) for g in await _groups(service, collection="sizes", limit=1)] == [4]
    with pytest.raises(Exception, match="keep 7 is not one of"):
        await _groups(service, collection="sizes", keep=7)


async def test_answers_never_carry_the_servers_own_metadata(service: DedupService) -> None:
    await _index_one_by_one(service, "meta", LIBRARY[:1])
    outcome = await service.check(CheckQuery(image=LIBRARY[1][1], collection="meta"))
    # Inside, hits carry the stored facts (groups choose keepers on them); every Match leaving the server has only
    # the client's keys.
    assert outcome.matches and outcome.matches[0].metadata["_dedup_format"] == "JPEG"
    assert [dict(m.metadata) for m in _matches(outcome.matches)] == [{"path": "p/copy.jpg"}]
    inserted = await service.check(CheckQuery(image=photo((30, 30), "GIF", (1, 2, 250)), collection="meta",
                                              insert_if_unique=True, id="blue.gif", metadata={"path": "blue.gif"}))
    assert inserted.inserted
    again = await service.check(CheckQuery(image=photo((30, 30), "PNG", (1, 2, 250)), collection="meta"))
    assert again.matches[0].metadata["_dedup_format"] == "GIF"  # facts are stored by CheckDuplicate inserts too


@pytest.mark.parametrize("name", ["my-photos", "7d444840-9dc0-11d1-b245-5ffdce74fad2", "tenant-42", "photos.2026"])
async def test_collection_names_users_use(service: DedupService, name: str) -> None:
    await _index_one_by_one(service, name, LIBRARY[:2])
    stats = await service.stats("")
    assert name in [c.name for c in stats.collections]  # GetStats lists the user's name, not the Milvus one
    (only,) = (await service.stats(name)).collections
    assert (only.name, only.image_count) == (name, 2)
    assert (await service.check(CheckQuery(image=LIBRARY[0][1], collection=name))).matches
    (group,) = await _groups(service, collection=name)
    assert len(group.ids) == 2


async def test_first_scheme_names_map_as_before_and_a_look_alike_is_refused(service: DedupService) -> None:
    index: MilvusIndex = service._index  # noqa: SLF001 - the Milvus names are what this test is about
    await _index_one_by_one(service, "old_style_name", LIBRARY[:1])
    assert index._client.has_collection("t_old_style_name")  # noqa: SLF001
    assert [c.name for c in (await service.stats("old_style_name")).collections] == ["old_style_name"]
    # A first-scheme name that reads like the hashed Milvus name of "my-photos" takes that Milvus collection...
    look_alike = milvus_collection_name("t_", "my-photos").removeprefix("t_")
    await _index_one_by_one(service, look_alike, LIBRARY[:1])
    # ...so "my-photos" is refused rather than mixed with it, and GetStats does not pass one off as the other.
    async def one() -> AsyncIterator[IndexItem]:
        yield IndexItem(id="x", image=LIBRARY[0][1], collection="my-photos")
    (outcome,) = [o async for o in service.index_stream(one())]
    assert outcome.status is ItemStatus.INVALID and "choose another name" in outcome.error
    with pytest.raises(CollectionNotFound):
        await service.stats("my-photos")

