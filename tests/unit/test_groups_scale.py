"""FindDuplicateGroups at scale: the union-find over row numbers (groups.py) against a plain reference on many
pairs, its memory, and the scan's paging, progress, cancellation and once-per-pair verification (service.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from dedup_server import service as service_module
from dedup_server.config import ServerConfig
from dedup_server.facts import ImageFacts
from dedup_server.groups import DuplicateGroup, GroupBuilder
from dedup_server.index import MilvusIndex
from dedup_server.service import DedupService, GroupsQuery, IndexItem, ItemStatus, ScanProgress, _VerifiedPairs
from dedup_server.verification.rule import Evidence, VerificationRule
from dedup_server.verification.verifier import Verified
from PIL import Image

from tests.conftest import encode
from tests.unit.test_service import ColourEmbedder


def _reference_components(pairs: list[tuple[int, int]]) -> list[set[int]]:
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[ra] = rb
    found: dict[int, set[int]] = {}
    for x in parent:
        found.setdefault(root(x), set()).add(x)
    return list(found.values())


def test_many_pairs_make_the_same_components_as_a_plain_union_find_largest_first() -> None:
    rng = np.random.default_rng(5)
    # 20k images, 6k random pairs among them: a few big components, many pairs and triples.
    pairs = [(int(a), int(b)) for a, b in rng.integers(0, 20_000, size=(6_000, 2)) if a != b]
    builder = GroupBuilder()
    for a, b in pairs:
        builder.add(f"img{a:05d}", f"img{b:05d}", 0.9 + (a % 10) / 100)
        builder.add(f"img{b:05d}", f"img{a:05d}", 0.95)  # the same pair from the other side
    expected = sorted((sorted(f"img{i:05d}" for i in c) for c in _reference_components(pairs)),
                      key=lambda ids: (-len(ids), ids[0]))
    groups = builder.groups()
    assert [list(g.ids) for g in groups] == expected
    assert sum(len(g.pairs) for g in groups) == len({(min(a, b), max(a, b)) for a, b in pairs})  # each pair once
    assert all(all(p.similarity >= 0.95 for p in g.pairs) for g in groups)  # the best score of both sides
    # Bounded: numpy columns, ~17 bytes a pair added and 8 an image in a pair (doubling: at most 2x that).
    assert builder.nbytes <= 2 * (17 * builder.pair_count + 8 * len(builder)) + 64 * 1024
    # limit takes the largest; min_size leaves small ones out; the answer is streamed.
    assert [g.ids for g in builder.groups(limit=3)] == [tuple(ids) for ids in expected[:3]]
    assert all(len(g.ids) >= 3 for g in builder.iter_groups(min_size=3))


def test_images_in_no_pair_are_never_described_or_answered() -> None:
    builder = GroupBuilder()
    builder.describe("lonely", ImageFacts(10, 10), {"path": "lonely.jpg"})
    builder.add("a", "b", 0.99)
    assert not builder.knows("lonely") and len(builder) == 2
    assert builder.groups()[0].ids == ("a", "b")
    assert GroupBuilder().groups() == []


def test_verified_pairs_are_used_once_from_either_side_and_bounded() -> None:
    cache = _VerifiedPairs(capacity=2)
    found = Verified(evidence=Evidence(inliers=30, coverage=0.5, matches=40), mirrored=True)
    cache.put("a", "b", found)
    assert cache.pop("b", "a") is found  # the other side's scan reuses it...
    assert cache.pop("a", "b") is None  # ...once
    for other in ("c", "d", "e"):
        cache.put("a", other, found)
    assert cache.pop("a", "c") is None and cache.pop("a", "e") is found  # the oldest went first


RED, GREEN = (250, 10, 10), (10, 250, 10)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[DedupService]:
    pool = ThreadPoolExecutor(2)
    index = MilvusIndex(uri=str(tmp_path / "milvus.db"), token="", prefix="t_", index=ServerConfig().index)
    config = ServerConfig(milvus_uri=str(tmp_path / "milvus.db"), threshold=0.99, data_dir=tmp_path / "data")
    built = DedupService(config, embedder=ColourEmbedder(), index=index, decode_pool=pool)
    built.start()
    yield built
    await built.close()
    index.close()
    pool.shutdown()


async def _index(service: DedupService, collection: str, count: int) -> None:
    async def items() -> AsyncIterator[IndexItem]:
        for i in range(count):
            colour = RED if i % 2 else GREEN
            yield IndexItem(id=f"img{i:03d}", image=encode(Image.new("RGB", (40 + i, 30), colour), "PNG"),
                            collection=collection)
    outcomes = [o async for o in service.index_stream(items())]
    assert all(o.status is ItemStatus.INDEXED for o in outcomes), outcomes


class _CountingScan:
    """Wraps MilvusIndex.scan: how many pages were pulled, and whether the scan was closed."""

    def __init__(self, index: MilvusIndex) -> None:
        self.pages, self.closed = 0, False
        self.batch_sizes: list[int] = []
        self._scan = index.scan

    def __call__(self, milvus_name: str, *, batch_size: int, timeout_s: float | None = None,
                 vectors: bool = True) -> Iterator[object]:
        self.batch_sizes.append(batch_size)
        inner = self._scan(milvus_name, batch_size=batch_size, timeout_s=timeout_s, vectors=vectors)
        try:
            for page in inner:
                self.pages += 1
                yield page
        finally:
            self.closed = True
            inner.close()


async def test_pages_progress_every_few_seconds_then_groups_largest_first(
    service: DedupService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _index(service, "paged", 9)
    counting = _CountingScan(service._index)  # noqa: SLF001 - the scan is what this test watches
    monkeypatch.setattr(service._index, "scan", counting)  # noqa: SLF001
    monkeypatch.setattr(service_module, "GROUPS_SCAN_BATCH", 2)
    monkeypatch.setattr(service_module, "GROUPS_PROGRESS_EVERY_S", 3600.0)
    found = [item async for item in service.find_groups(GroupsQuery(collection="paged"))]
    progress = [item for item in found if isinstance(item, ScanProgress)]
    groups = [item for item in found if isinstance(item, DuplicateGroup)]
    assert counting.batch_sizes == [2] and counting.pages == 5 and counting.closed
    # The first page, then (an hour later at the earliest) none, then the end: not one message a page.
    assert progress == [ScanProgress(2, 9), ScanProgress(9, 9)]
    assert found.index(progress[-1]) < found.index(groups[0])
    assert [len(g.ids) for g in groups] == [5, 4]  # largest first


async def test_closing_the_answer_stops_the_scan(service: DedupService, monkeypatch: pytest.MonkeyPatch) -> None:
    await _index(service, "cancelled", 9)
    counting = _CountingScan(service._index)  # noqa: SLF001
    monkeypatch.setattr(service._index, "scan", counting)  # noqa: SLF001
    monkeypatch.setattr(service_module, "GROUPS_SCAN_BATCH", 1)
    answer = service.find_groups(GroupsQuery(collection="cancelled"))
    first = await anext(answer)
    assert first == ScanProgress(1, 9)
    await answer.aclose()  # what a cancelled RPC does (servicer: contextlib.aclosing)
    # The page after the first was already being read and searched (pipelined): nothing after it is.
    assert counting.closed and counting.pages == 2


@pytest.mark.parametrize("joined", [pytest.param(False, id="paged"), pytest.param(True, id="joined")])
@pytest.mark.parametrize("page", [pytest.param(512, id="one-page"), pytest.param(2, id="pages-of-two")])
async def test_each_band_pair_is_verified_once(
    service: DedupService, monkeypatch: pytest.MonkeyPatch, page: int, joined: bool
) -> None:
    if joined:
        monkeypatch.setattr(service_module, "GROUPS_JOIN_MIN_IMAGES", 0)
    await _index(service, f"verified{page}", 9)  # 5 red, 4 green: 10 + 6 pairs, all inside the band
    band = VerificationRule(below=0.05, above=0.05, max_candidates=10)
    monkeypatch.setattr(service_module, "_rule", lambda calibration, *, cosine_only: band)
    monkeypatch.setattr(service_module, "GROUPS_SCAN_BATCH", page)
    verified: list[str] = []

    def fake_verify(own: list[str], candidates: list[dict[str, str]], rule: VerificationRule
                    ) -> list[dict[str, Verified]]:
        passing = Verified(evidence=Evidence(inliers=50, coverage=0.5, matches=60), mirrored=False)
        verified.extend(c for wanted in candidates for c in wanted)
        return [{c: passing for c in wanted} for wanted in candidates]

    monkeypatch.setattr(service_module, "_verify_scanned", fake_verify)
    found = [item async for item in service.find_groups(GroupsQuery(collection=f"verified{page}"))]
    groups = [item for item in found if isinstance(item, DuplicateGroup)]
    assert [len(g.ids) for g in groups] == [5, 4]  # verified in: the groups as before
    assert len(verified) == 16  # once per pair, not once from each side (32)


async def _joined_scan_of_nine(service: DedupService, monkeypatch: pytest.MonkeyPatch, collection: str) -> Path:
    """Nine images (5 red, 4 green) scanned by the self-join in pages of two, every progress reported; returns
    where the scan spills its vectors."""
    await _index(service, collection, 9)
    monkeypatch.setattr(service_module, "GROUPS_JOIN_MIN_IMAGES", 0)
    monkeypatch.setattr(service_module, "GROUPS_SCAN_BATCH", 2)
    monkeypatch.setattr(service_module, "GROUPS_PROGRESS_EVERY_S", 0.0)
    return service._config.data_dir / service_module.GROUPS_SPILL_DIR  # noqa: SLF001 - where the spill goes


async def test_a_joined_scan_reports_its_three_passes_and_leaves_no_spill_file(
    service: DedupService, monkeypatch: pytest.MonkeyPatch
) -> None:
    spills = await _joined_scan_of_nine(service, monkeypatch, "joined")
    found = [item async for item in service.find_groups(GroupsQuery(collection="joined"))]
    progress = [(p.scanned, p.total) for p in found if isinstance(p, ScanProgress)]
    groups = [item for item in found if isinstance(item, DuplicateGroup)]
    assert [len(g.ids) for g in groups] == [5, 4]  # the same groups as the paged scan
    scanned = [s for s, _ in progress]
    assert scanned == sorted(scanned) and progress[-1] == (9, 9) and len(progress) >= 6  # in images, all passes
    assert not list(spills.glob("dedup-join-*"))


async def test_closing_a_joined_scan_stops_it_and_removes_its_spill_file(
    service: DedupService, monkeypatch: pytest.MonkeyPatch
) -> None:
    spills = await _joined_scan_of_nine(service, monkeypatch, "joined-cancelled")
    answer = service.find_groups(GroupsQuery(collection="joined-cancelled"))
    first = await anext(answer)  # reading the vectors
    assert isinstance(first, ScanProgress) and first.scanned < first.total
    assert list(spills.glob("dedup-join-*"))
    await answer.aclose()
    assert not list(spills.glob("dedup-join-*"))
