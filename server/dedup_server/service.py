"""The dedup service in plain Python: decode -> embed (batched) -> search/insert (batched, serialised).

Knows nothing of gRPC. Check-and-insert is race-free because every write goes through one
write batcher that runs one batch at a time: within a batch, items are compared with the index
*and* with the items before them; across batches, Milvus' session consistency makes each
batch see the previous one's inserts. Across fronts (processes, pods) sharing one Milvus, each
collection's batches also take turns through the write coordinator (coordination/: etcd), and
the first batch of a turn searches with Strong consistency to see the other fronts' writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from typing import TypeVar

import numpy as np
from opentelemetry import trace

from . import groups_scan, validation
from .batcher import MicroBatcher
from .config import ServerConfig
from .coordination import LocalCoordinator, WriteCoordinator, WriteTurn
from .deadline import Deadline, backend_deadline, retry_async, retry_sync
from .decision import COSINE_ONLY, decide, to_verify
from .decode import DecodeLimits, decode_with_thumbnail
from .embedder import Embedder, ModelInfo
from .errors import BackendUnavailable, DedupError, InvalidRequest, ModelMismatch, StreamTooLong
from .facts import facts_from_metadata, image_facts, public_metadata
from .flip import FlipPolicy
from .groups import DuplicateGroup, GroupBuilder
from .index import CollectionStats, Hit, IndexDescription, MilvusIndex, StoredImage, milvus_collection_name
from .layout import layout_of
from .stream import map_unordered
from .thresholds import Calibration, calibrated_threshold
from .verification import signature
from .verification.rule import VerificationRule
from .verification.verifier import QueryFeatures, Verified, verify

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

T = TypeVar("T")

#: FindDuplicateGroups reads the collection a page at a time and searches a whole page in one Milvus call.
GROUPS_SCAN_BATCH = 512
#: Progress of a groups scan goes out after the first page, then at most this often.
GROUPS_PROGRESS_EVERY_S = 2.0
#: Band pairs whose evidence a groups scan remembers until the other side's scan (~200 bytes each).
GROUPS_VERIFIED_PAIRS = 200_000
#: From this many images a groups scan finds each image's neighbours by the front's self-join (groups_scan.py), not
#: one Milvus search a page: at 1M the paged search ran at 49.5-239 images/s here (deploy/CAPACITY.md).
GROUPS_JOIN_MIN_IMAGES = 10_000
#: Under the data dir: a joined scan's vectors while it runs (float32: ~5 GB for 1M images of 1280-d), then removed.
GROUPS_SPILL_DIR = "groups-spill"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckQuery:
    image: bytes
    collection: str = ""
    threshold: float = 0.0
    top_k: int = 0
    insert_if_unique: bool = False
    id: str = ""
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    flip_policy: int = 0  # dedup.v1.FlipPolicy, validated here like the other fields
    cosine_only: bool = False  # no geometric verification: the cosine against the threshold decides


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    matches: Sequence[Hit]
    inserted: bool
    model: str
    threshold: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexItem:
    id: str
    image: bytes
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    collection: str = ""
    skip_duplicates: bool = False
    threshold: float = 0.0
    flip_policy: int = 0  # dedup.v1.FlipPolicy


@dataclasses.dataclass(frozen=True, kw_only=True)
class GroupsQuery:
    collection: str = ""
    threshold: float = 0.0
    top_k: int = 0
    flip_policy: int = 0  # dedup.v1.FlipPolicy
    keep: int = 0  # dedup.v1.KeepPolicy: which member of a group is its keeper
    min_group_size: int = 0  # 0 = 2: every group
    limit: int = 0  # at most this many groups, the largest; 0 = all
    cosine_only: bool = False  # no geometric verification of band candidates: the cosine against the threshold


@dataclasses.dataclass(frozen=True)
class ScanProgress:
    scanned: int
    total: int


class ItemStatus(enum.Enum):
    INDEXED = "INDEXED"
    DUPLICATE = "DUPLICATE"
    INVALID = "INVALID"
    FAILED = "FAILED"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ItemOutcome:
    id: str
    status: ItemStatus
    matches: Sequence[Hit] = ()
    error: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServiceStats:
    collections: Sequence[CollectionStats]
    model: ModelInfo
    index: IndexDescription
    calibration: Calibration
    default_top_k: int


@dataclasses.dataclass(frozen=True, slots=True)
class _EmbedJob:
    pixels: np.ndarray
    deadline: Deadline | None  # the caller's; None: no deadline


@dataclasses.dataclass(frozen=True, slots=True)
class _SearchJob:
    milvus_name: str
    vectors: np.ndarray  # [n, dim]: the query, and its framed photo's view when it shows one
    top_k: int
    deadline: Deadline | None  # the caller's; None: no deadline


@dataclasses.dataclass(frozen=True, slots=True)
class _WriteJob:
    collection: str
    id: str
    vector: np.ndarray
    metadata: Mapping[str, str]
    skip_duplicates: bool
    threshold: float
    top_k: int
    deadline: Deadline | None = None  # the caller's; None: no deadline
    flip_policy: FlipPolicy = FlipPolicy.DEFAULT
    layout: str = ""  # the image's layout (layout.py): stored, and compared to tell mirrored matches
    thumbnail: np.ndarray | None = None  # grey, for local features of band candidates (verification/)
    signature: str = ""  # what is stored of the thumbnail (verification/signature.py)
    rule: VerificationRule = COSINE_ONLY
    view: np.ndarray | None = None  # the framed photo's embedding (framing.py): searched too, never stored
    framed_thumbnail: np.ndarray | None = None  # the framed photo's part of the thumbnail, for its local features


@dataclasses.dataclass(frozen=True, slots=True)
class _WriteResult:
    matches: Sequence[Hit]
    inserted: bool


class DedupService:
    def __init__(
        self, config: ServerConfig, *, embedder: Embedder, index: MilvusIndex, decode_pool: Executor,
        coordinator: WriteCoordinator | None = None,
    ) -> None:
        self._config = config
        self._coordinator: WriteCoordinator = coordinator or LocalCoordinator()
        self._limits = config.limits
        self._embedder = embedder
        self._index = index
        self._decode_pool = decode_pool
        self._decode_limits = DecodeLimits(
            max_bytes=config.limits.max_image_bytes, max_pixels=config.limits.max_pixels
        )
        self.embed_batcher: MicroBatcher[_EmbedJob, np.ndarray] = MicroBatcher(
            self._embed_batch, config.embed_batch, name="embed"
        )
        self.write_batcher: MicroBatcher[_WriteJob, _WriteResult | DedupError] = MicroBatcher(
            self._write_batch, config.write_batch, name="write"
        )
        # Concurrent checks share one Milvus search: a search costs Milvus and the client far more per call than
        # per vector (make bench-scale), so merged calls keep the latency of many concurrent checks down.
        self.search_batcher: MicroBatcher[_SearchJob, list[list[Hit]] | DedupError] = MicroBatcher(
            self._search_batch, config.search_batch, name="search"
        )
        self._draining = False

    def start(self) -> None:
        self.embed_batcher.start()
        self.write_batcher.start()
        self.search_batcher.start()

    def drain(self) -> None:
        """Shutting down: streams read no new item; they finish and answer what they read, then end UNAVAILABLE."""
        self._draining = True

    async def close(self) -> None:
        await self.embed_batcher.close()
        await self.search_batcher.close()
        await self.write_batcher.close()

    async def model(self, deadline: Deadline | None = None) -> ModelInfo:
        """The served model (cached by the embedder); read from Triton again, within `deadline`, after it restarted."""
        known = self._embedder.known_model_info()
        if known is not None:
            return known  # the hot path: no retry machinery, no task, on every request and item
        if deadline is None:
            return await self._embedder.model_info()
        return await retry_async(
            self._model_info, deadline, cap_s=self._config.triton_timeout_s, what="Triton model config"
        )

    async def _model_info(self, timeout_s: float) -> ModelInfo:
        try:
            return await asyncio.wait_for(self._embedder.model_info(), timeout_s)
        except TimeoutError as exc:
            raise BackendUnavailable(f"Triton did not send the model config within {timeout_s:.1f} s") from exc

    async def calibration(self, deadline: Deadline | None = None) -> Calibration:
        return calibrated_threshold((await self.model(deadline)).name, self._config.threshold)

    def _deadline(self, caller: Deadline | None) -> Deadline:
        return backend_deadline([caller], wait_cap_s=self._config.backend_wait_s)

    # -- CheckDuplicate ------------------------------------------------------------------------

    async def check(self, query: CheckQuery, *, time_remaining: float | None = None) -> CheckOutcome:
        """`time_remaining`: seconds until the caller's deadline (None: none); backend calls end before it."""
        caller = Deadline.from_time_remaining(time_remaining)
        calibration = await self.calibration(self._deadline(caller))
        collection = validation.collection_name(query.collection, self._config.default_collection)
        threshold = validation.threshold(query.threshold, calibration.threshold)
        top_k = validation.top_k(query.top_k, self._config.default_top_k, self._limits)
        image_id = validation.image_id(query.id, self._limits, required=query.insert_if_unique)
        metadata = validation.metadata(query.metadata, self._limits)
        policy = validation.flip_policy(query.flip_policy)
        model = await self.model(self._deadline(caller))
        if not query.insert_if_unique:
            # Fail fast on an unknown collection, before spending a model call on the image.
            milvus_name = await self._existing_collection(collection, model, caller)
        rule = _rule(calibration, cosine_only=query.cosine_only or query.threshold > 0)
        embedded = await self._embed(query.image, caller, signed=query.insert_if_unique, framed=True)
        vector, layout = embedded.vector, embedded.layout
        if query.insert_if_unique:
            result = await self._write(
                _WriteJob(collection, image_id, vector, metadata | await _facts(self._decode_pool, query.image),
                          True, threshold, top_k, deadline=caller,
                          flip_policy=policy, layout=layout, thumbnail=embedded.thumbnail,
                          signature=embedded.signature, rule=rule, view=embedded.view,
                          framed_thumbnail=embedded.framed_thumbnail)
            )
            return CheckOutcome(
                matches=result.matches, inserted=result.inserted, model=model.label, threshold=threshold
            )
        found = await self.search(milvus_name, _query_vectors(vector, embedded.view), top_k, caller)
        # The framed photo's hits join the whole image's: each candidate counts with its better similarity, and one
        # found through the framed photo is verified however high it scores (verification/rule.py).
        hits = list(found[0]) + [dataclasses.replace(hit, framed=True) for view_hits in found[1:] for hit in view_hits]
        verified = await self._verify(
            milvus_name, hits, QueryFeatures(embedded.thumbnail, embedded.framed_thumbnail), threshold, rule, caller
        )
        matches = decide(hits, layout, policy, threshold, top_k, rule=rule, verified=verified)
        return CheckOutcome(matches=matches, inserted=False, model=model.label, threshold=threshold)

    async def _verify(
        self, milvus_name: str, hits: Sequence[Hit], query: QueryFeatures, threshold: float,
        rule: VerificationRule, caller: Deadline | None,
    ) -> dict[str, Verified] | None:
        """Evidence for the band candidates of one query (None: the collection keeps no signatures)."""
        if not self._index.has_signatures(milvus_name):
            return None
        ids = to_verify(hits, threshold, rule)
        if not ids:
            return {}
        with tracer.start_as_current_span("verify", attributes={"candidates": len(ids)}):
            signatures = await asyncio.to_thread(self._signatures, milvus_name, ids, self._deadline(caller))
            # One task per candidate: OpenCV releases the GIL, so candidates are verified on every decode thread.
            loop = asyncio.get_running_loop()
            parts = await asyncio.gather(*(
                loop.run_in_executor(self._decode_pool, verify, query, {candidate: stored}, rule)
                for candidate, stored in signatures.items()
            ))
            return {candidate: found for part in parts for candidate, found in part.items()}

    # -- IndexStream ---------------------------------------------------------------------------

    async def index_stream(
        self, items: AsyncIterator[IndexItem], *, time_remaining: float | None = None
    ) -> AsyncIterator[ItemOutcome]:
        """One outcome per item, in completion order. `time_remaining`: until the stream's deadline (None: none).

        At most `max_stream_items` items are read: every one of them is answered, then StreamTooLong
        ends the stream, so the client knows exactly which items to send again on a new stream.
        """
        unread: list[IndexItem] = []  # the first item a drain left unread
        limited = _AtMost(self._until_drained(items, unread), self._limits.max_stream_items)
        index_item = functools.partial(self.index_item, caller=Deadline.from_time_remaining(time_remaining))
        async for outcome in map_unordered(limited.items(), index_item, window=self._limits.stream_window):
            yield outcome
        if limited.first_unread is not None:
            raise StreamTooLong(self._limits.max_stream_items, limited.first_unread.id)
        if unread:
            raise BackendUnavailable(
                f"the server is shutting down: every item before {unread[0].id!r} was answered; "
                "it and the items after it were not read: send them again"
            )

    async def _until_drained(
        self, items: AsyncIterator[IndexItem], unread: list[IndexItem]
    ) -> AsyncIterator[IndexItem]:
        async for item in items:
            if self._draining:
                unread.append(item)
                return
            yield item

    async def index_item(self, item: IndexItem, caller: Deadline | None = None) -> ItemOutcome:
        """Index one item; never raises: every failure becomes an INVALID or FAILED outcome.

        Acknowledged (INDEXED) only once Milvus has acknowledged the write, which survives a Milvus crash.
        """
        try:
            calibration = await self.calibration(self._deadline(caller))
            image_id = validation.image_id(item.id, self._limits, required=True)
            collection = validation.collection_name(item.collection, self._config.default_collection)
            threshold = validation.threshold(item.threshold, calibration.threshold)
            metadata = validation.metadata(item.metadata, self._limits) | await _facts(self._decode_pool, item.image)
            policy = validation.flip_policy(item.flip_policy)
            # Only a write that decides something searches the framed photo too.
            embedded = await self._embed(item.image, caller, wait_for_room=True, signed=True,
                                         framed=item.skip_duplicates)
            result = await self._write(
                _WriteJob(collection, image_id, embedded.vector, metadata, item.skip_duplicates, threshold,
                          self._config.default_top_k, deadline=caller, flip_policy=policy, layout=embedded.layout,
                          thumbnail=embedded.thumbnail, signature=embedded.signature, view=embedded.view,
                          framed_thumbnail=embedded.framed_thumbnail,
                          # Verified only where the decision changes what is stored: a plain ingest stores the item
                          # anyway, and its matches (cosine at the threshold) are for information.
                          rule=_rule(calibration, cosine_only=not item.skip_duplicates or item.threshold > 0)),
                wait_for_room=True,
            )
        except InvalidRequest as exc:
            return ItemOutcome(id=item.id, status=ItemStatus.INVALID, error=str(exc))
        except DedupError as exc:
            return ItemOutcome(id=item.id, status=ItemStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        except Exception:
            logger.exception("unexpected error indexing %r", item.id)
            return ItemOutcome(id=item.id, status=ItemStatus.FAILED, error="internal error")
        status = ItemStatus.INDEXED if result.inserted else ItemStatus.DUPLICATE
        return ItemOutcome(id=item.id, status=status, matches=result.matches)

    # -- FindDuplicateGroups ------------------------------------------------------------------

    async def find_groups(
        self, query: GroupsQuery, *, time_remaining: float | None = None
    ) -> AsyncGenerator[ScanProgress | DuplicateGroup, None]:
        """Scan the collection: each stored vector is searched against the collection, and the pairs that
        CheckDuplicate would call duplicates join groups (the same decision: cosine outside the calibrated band,
        local features of the stored signatures inside it, each band pair verified once). Yields progress after the
        first page and then every few seconds, and when the scan ends; then every group (at least
        `min_group_size` images, at most `limit` groups), largest first, one at a time, each with its members and
        the keeper `keep` picks.

        Memory is bounded for millions of images (groups.py): one page of vectors at a time, and only images that
        are in a pair enter the union-find. The next page is read and searched while one is verified and decided.
        Closing the generator (the RPC cancelled) stops the scan there: the page in flight finishes its Milvus
        calls, nothing more is asked."""
        caller = Deadline.from_time_remaining(time_remaining)
        calibration = await self.calibration(self._deadline(caller))
        collection = validation.collection_name(query.collection, self._config.default_collection)
        threshold = validation.threshold(query.threshold, calibration.threshold)
        top_k = validation.top_k(query.top_k, self._config.default_top_k, self._limits)
        policy = validation.flip_policy(query.flip_policy)
        keep = validation.keep_policy(query.keep)
        min_group_size = validation.min_group_size(query.min_group_size)
        model = await self.model(self._deadline(caller))
        milvus_name = await self._existing_collection(collection, model, caller)
        rule = _rule(calibration, cosine_only=query.cosine_only or query.threshold > 0)
        # Collections from before signatures: band candidates are decided by the cosine, as CheckDuplicate does.
        verifiable = rule.enabled and self._index.has_signatures(milvus_name)
        total = await asyncio.to_thread(self._index.count, milvus_name)
        builder = GroupBuilder()
        verified_pairs = _VerifiedPairs(GROUPS_VERIFIED_PAIRS)
        scanned, reported, reported_at = 0, -1, -math.inf
        joined = total >= GROUPS_JOIN_MIN_IMAGES
        if joined:
            # Nothing under the band's bottom can be a duplicate, so the join keeps nothing under it.
            pages = groups_scan.joined_pages(
                self._index, milvus_name, total=total, top_k=top_k, page_size=GROUPS_SCAN_BATCH,
                min_similarity=threshold - rule.below if rule.enabled else threshold,
                progress=groups_scan.Progress(total, GROUPS_PROGRESS_EVERY_S),
                spill_dir=self._config.data_dir / GROUPS_SPILL_DIR,
            )
        else:
            pages = self._searched_pages(milvus_name, top_k, caller)
        async with contextlib.aclosing(pages):
            async for item in pages:
                if isinstance(item, groups_scan.ScanTick):  # a joined scan's own progress, in images (its three passes)
                    logger.info("groups of %s: %d of %d images' worth scanned (joined), %d in pairs", collection,
                                item.scanned, item.total, len(builder))
                    yield ScanProgress(scanned=item.scanned, total=item.total)
                    continue
                batch, candidates = item
                evidence: Sequence[dict[str, Verified] | None] = [None] * len(batch)
                if verifiable:
                    evidence = await self._scan_evidence(
                        milvus_name, batch, candidates, threshold, rule, caller, verified_pairs
                    )
                candidates = await self._describe_matches(
                    milvus_name, batch, candidates, evidence, threshold, rule, caller
                )
                for image, hits, verified in zip(batch, candidates, evidence, strict=True):
                    for hit in decide(hits, image.layout, policy, threshold, top_k, rule=rule, verified=verified):
                        builder.add(image.id, hit.id, hit.similarity, hit.mirrored)
                        # What a neighbour's hit knows of it, until its own scan tells more (indexed-at too).
                        builder.describe(hit.id, facts_from_metadata(hit.metadata), public_metadata(hit.metadata),
                                         replace=False)
                    if builder.knows(image.id):
                        builder.describe(image.id, facts_from_metadata(image.metadata, image.inserted_at),
                                         public_metadata(image.metadata))
                scanned += len(batch)
                if not joined and time.monotonic() - reported_at >= GROUPS_PROGRESS_EVERY_S:
                    reported, reported_at = scanned, time.monotonic()
                    logger.info("groups of %s: %d of %d images scanned, %d in pairs", collection, scanned,
                                max(total, scanned), len(builder))
                    yield ScanProgress(scanned=scanned, total=max(total, scanned))
        if reported != scanned:
            yield ScanProgress(scanned=scanned, total=max(total, scanned) if not joined else scanned)
        components = await asyncio.to_thread(builder.components, min_size=min_group_size, limit=query.limit)
        logger.info("groups of %s: %d images scanned, %d in pairs, %d groups answered", collection, scanned,
                    len(builder), len(components))
        for k in range(len(components)):
            yield builder.group(components, k, keep)

    async def _searched_pages(
        self, milvus_name: str, top_k: int, caller: Deadline | None,
    ) -> AsyncGenerator[tuple[list[StoredImage], list[list[Hit]]], None]:
        """The paged scan: each page read, then searched in one Milvus call. The next page is read and searched
        (Milvus' work) while the caller verifies and decides this one (the front's)."""
        batches = self._index.scan(milvus_name, batch_size=GROUPS_SCAN_BATCH)
        page = asyncio.ensure_future(self._searched_page(batches, milvus_name, top_k, caller))
        try:
            while (searched := await page) is not None:
                page = asyncio.ensure_future(self._searched_page(batches, milvus_name, top_k, caller))
                yield searched
        finally:
            # The page in flight owns the scan's generator until its thread returns (a thread cannot be cancelled):
            # close the generator only then. At most one more page is read and searched.
            await asyncio.gather(page, return_exceptions=True)
            await asyncio.to_thread(batches.close)

    async def _searched_page(
        self, batches: Iterator[list[StoredImage]], milvus_name: str, top_k: int, caller: Deadline | None,
    ) -> tuple[list[StoredImage], list[list[Hit]]] | None:
        """The scan's next page and each image's nearest others (itself left out); None when the scan is done."""
        batch = await asyncio.to_thread(next, batches, None)
        if batch is None:
            return None
        vectors = np.stack([image.vector for image in batch])
        with tracer.start_as_current_span("search", attributes={"batch.size": len(batch)}):
            found = await asyncio.to_thread(
                self._milvus,
                functools.partial(self._search_rows, milvus_name, vectors, top_k + 1, with_metadata=False),
                self._deadline(caller), "Milvus search",
            )
        return batch, [_without(hits, image.id) for image, hits in zip(batch, found, strict=True)]

    async def _describe_matches(
        self, milvus_name: str, batch: Sequence[StoredImage], candidates: Sequence[Sequence[Hit]],
        evidence: Sequence[Mapping[str, Verified] | None], threshold: float, rule: VerificationRule,
        caller: Deadline | None,
    ) -> list[list[Hit]]:
        """The scan's hits, with metadata and layout read for those that can be a match (one Milvus read a page).
        The layout only decides whether a match is mirrored, never whether it is one, so the matches of a decision
        that ignores the flip policy and top_k hold every hit the real decision can keep."""
        possible = {
            hit.id
            for image, hits, verified in zip(batch, candidates, evidence, strict=True)
            for hit in decide(hits, image.layout, FlipPolicy.MIRROR_IS_DUPLICATE, threshold, max(1, len(hits)),
                              rule=rule, verified=verified)
        }
        if not possible:
            return [list(hits) for hits in candidates]
        wanted = list({hit.id: hit for hits in candidates for hit in hits if hit.id in possible}.values())
        described = await asyncio.to_thread(
            self._milvus, lambda timeout_s: self._index.described(milvus_name, wanted, timeout_s=timeout_s),
            self._deadline(caller), "Milvus get metadata",
        )
        known = {hit.id: hit for hit in described}
        return [
            [dataclasses.replace(hit, metadata=known[hit.id].metadata, layout=known[hit.id].layout)
             if hit.id in known else hit for hit in hits]
            for hits in candidates
        ]

    async def _scan_evidence(
        self, milvus_name: str, batch: Sequence[StoredImage], candidates: Sequence[Sequence[Hit]], threshold: float,
        rule: VerificationRule, caller: Deadline | None, known: _VerifiedPairs,
    ) -> list[dict[str, Verified]]:
        """Geometric evidence for the band candidates of each scanned image, as CheckDuplicate gathers it for a
        query: the stored image's own signature stands for the query. A pair verified from one side (``known``) is
        not verified again from the other. One Milvus read for the signatures of the batch; the matching runs in
        the decode pool."""
        wanted = [to_verify(hits, threshold, rule) for hits in candidates]
        reused: list[dict[str, Verified]] = [{} for _ in batch]
        todo: list[list[str]] = []
        claimed: dict[tuple[str, str], int] = {}  # a pair of this batch -> the image whose verification runs it
        deferred: list[tuple[int, str, int]] = []  # (image, candidate, claimant): the other side of a claimed pair
        for j, (image, chosen, found) in enumerate(zip(batch, wanted, reused, strict=True)):
            missing = []
            for candidate in chosen:
                verified = known.pop(image.id, candidate)
                pair = _VerifiedPairs.key(image.id, candidate)
                if verified is not None:
                    found[candidate] = verified
                elif pair in claimed:
                    deferred.append((j, candidate, claimed[pair]))
                else:
                    claimed[pair] = j
                    missing.append(candidate)
            todo.append(missing)
        queries = {image.id for image, missing in zip(batch, todo, strict=True) if missing}
        ids = sorted({i for missing in todo for i in missing} | queries)
        if not ids:
            return reused
        with tracer.start_as_current_span("verify", attributes={"candidates": len(ids)}):
            signatures = await asyncio.to_thread(self._signatures, milvus_name, ids, self._deadline(caller))
            fresh = await asyncio.get_running_loop().run_in_executor(
                self._decode_pool, _verify_scanned, [signatures.get(image.id, "") for image in batch],
                [{i: signatures.get(i, "") for i in missing} for missing in todo], rule,
            )
        used = {_VerifiedPairs.key(batch[j].id, candidate) for j, candidate, _ in deferred}  # both sides done
        for image, found, new in zip(batch, reused, fresh, strict=True):
            for candidate, verified in new.items():
                if _VerifiedPairs.key(image.id, candidate) not in used:
                    known.put(image.id, candidate, verified)
            found.update(new)
        for j, candidate, claimant in deferred:
            evidence = fresh[claimant].get(batch[j].id)
            if evidence is not None:
                reused[j][candidate] = evidence
        return reused

    # -- DeleteImages / GetStats ---------------------------------------------------------------

    async def delete(self, collection: str, ids: Sequence[str]) -> tuple[int, list[str]]:
        name = validation.collection_name(collection, self._config.default_collection)
        if not ids:
            raise InvalidRequest("ids is empty: name at least one image to delete")
        if len(ids) > self._limits.max_delete_ids:
            raise InvalidRequest(f"{len(ids)} ids in one call, over the limit of {self._limits.max_delete_ids}")
        for image_id in ids:
            validation.image_id(image_id, self._limits, required=True, field="ids[]")
        model = await self.model()
        try:
            milvus_name = await asyncio.to_thread(self._index.open_collection, name, model, create=False)
        except ModelMismatch as mismatch:
            # Built by another model: deleting ids needs no embeddings, so open it as the model it records.
            if "@" not in mismatch.collection_model:
                raise
            recorded_name, recorded_version = mismatch.collection_model.rsplit("@", 1)
            recorded = dataclasses.replace(model, name=recorded_name, version=recorded_version)
            milvus_name = await asyncio.to_thread(self._index.open_collection, name, recorded, create=False)
        return await asyncio.to_thread(self._index.delete, milvus_name, list(dict.fromkeys(ids)))

    async def stats(self, collection: str) -> ServiceStats:
        collections = await asyncio.to_thread(self._index.stats, collection or None)
        return ServiceStats(
            collections=collections,
            model=await self.model(),
            index=self._index.describe_config(self._config.default_top_k),
            calibration=await self.calibration(),
            default_top_k=self._config.default_top_k,
        )

    # -- stages --------------------------------------------------------------------------------

    async def _existing_collection(self, collection: str, model: ModelInfo, caller: Deadline | None) -> str:
        """Milvus name of an existing collection: from the index's cache when opened before (no thread hop on
        the hot path), else looked up in Milvus within the caller's deadline (CollectionNotFound when absent)."""
        known = self._index.opened(collection, model)
        if known is not None:
            return known
        return await asyncio.to_thread(
            self._milvus, lambda _timeout_s: self._index.open_collection(collection, model, create=False),
            self._deadline(caller), "Milvus open collection",
        )

    async def _embed(
        self, image: bytes, caller: Deadline | None, *, wait_for_room: bool = False, signed: bool = False,
        framed: bool = False,
    ) -> _Embedded:
        """The image's embedding, layout (layout.py) and grey thumbnail, from one decode; ``signed``: also the
        signature to store (verification/signature.py); ``framed``: also the embedding of the photo inside a frame
        when the image shows one (framing.py), embedded in the same batches as the image."""
        # Every caller has read the model first (model() / calibration()), so this is known; grey decoding is
        # only a shortcut, and a colour decode gives the same luma to the model, so None just decodes colour.
        model = self._embedder.known_model_info()
        grey = model is not None and model.reads_luma
        with tracer.start_as_current_span("decode"):
            # The layout is computed in the decode thread too: CPU work stays off the event loop.
            decoded = await asyncio.get_running_loop().run_in_executor(
                self._decode_pool, _decode_for_embedding, image, self._decode_limits, grey, signed, framed
            )
        inputs = [decoded.pixels] if decoded.framed is None else [decoded.pixels, decoded.framed]
        vectors = await asyncio.gather(*(
            _before(caller, self.embed_batcher.submit(_EmbedJob(pixels, caller), wait_for_room=wait_for_room),
                    "Triton")
            for pixels in inputs
        ))
        return _Embedded(vector=vectors[0], layout=decoded.layout, thumbnail=decoded.thumbnail,
                         signature=decoded.signature, view=vectors[1] if len(vectors) > 1 else None,
                         framed_thumbnail=decoded.framed_thumbnail)

    async def _write(self, job: _WriteJob, *, wait_for_room: bool = False) -> _WriteResult:
        result = await _before(job.deadline, self.write_batcher.submit(job, wait_for_room=wait_for_room), "Milvus")
        if isinstance(result, DedupError):
            raise result
        return result

    async def search(
        self, milvus_name: str, vectors: np.ndarray, top_k: int, caller: Deadline | None = None
    ) -> list[list[Hit]]:
        """The nearest stored images of each query vector, best first, in a Milvus call shared with the concurrent
        checks (search_batcher). ``milvus_name``: an opened collection's (index.py)."""
        job = _SearchJob(milvus_name, vectors, top_k, caller)
        result = await _before(job.deadline, self.search_batcher.submit(job), "Milvus")
        if isinstance(result, DedupError):
            raise result
        return result

    async def _search_batch(self, jobs: Sequence[_SearchJob]) -> Sequence[list[list[Hit]] | DedupError]:
        """One Milvus search per collection for every query vector of the batch, at the largest top_k asked
        (HNSW's ef follows it, so a query asking fewer loses nothing); each job gets its own rows, cut to its
        top_k. A failed collection fails only its own jobs."""
        deadline = backend_deadline((job.deadline for job in jobs), wait_cap_s=self._config.backend_wait_s)
        by_collection = _positions_by(job.milvus_name for job in jobs)
        results: list[list[list[Hit]] | DedupError] = [[] for _ in jobs]

        async def one(milvus_name: str, positions: list[int]) -> None:
            vectors = np.concatenate([jobs[p].vectors for p in positions])
            top_k = max(jobs[p].top_k for p in positions)
            with tracer.start_as_current_span("search", attributes={"batch.size": len(vectors)}):
                try:
                    found = await asyncio.to_thread(
                        self._milvus, functools.partial(self._search_rows, milvus_name, vectors, top_k),
                        deadline, "Milvus search",
                    )
                except DedupError as exc:
                    for p in positions:
                        results[p] = exc
                    return
            start = 0
            for p in positions:
                rows = len(jobs[p].vectors)
                results[p] = [list(hits[:jobs[p].top_k]) for hits in found[start:start + rows]]
                start += rows

        await asyncio.gather(*(one(name, positions) for name, positions in by_collection.items()))
        return results

    def _search_rows(
        self, milvus_name: str, vectors: np.ndarray, top_k: int, timeout_s: float, *, with_metadata: bool = True
    ) -> list[list[Hit]]:
        """index.search in the call shape _milvus retries (the timeout last)."""
        return self._index.search(milvus_name, vectors, top_k, timeout_s=timeout_s, with_metadata=with_metadata)

    async def _embed_batch(self, jobs: Sequence[_EmbedJob]) -> Sequence[np.ndarray]:
        images = [job.pixels for job in jobs]
        deadline = backend_deadline((job.deadline for job in jobs), wait_cap_s=self._config.backend_wait_s)
        with tracer.start_as_current_span("infer", attributes={"batch.size": len(images)}):
            embeddings = await retry_async(
                functools.partial(self._embed_images, images), deadline,
                cap_s=self._config.triton_timeout_s, what="Triton inference",
            )
        return list(embeddings)

    async def _embed_images(self, images: Sequence[np.ndarray], timeout_s: float) -> np.ndarray:
        return await self._embedder.embed(images, timeout_s=timeout_s)

    async def _write_batch(self, jobs: Sequence[_WriteJob]) -> Sequence[_WriteResult | DedupError]:
        deadline = backend_deadline((job.deadline for job in jobs), wait_cap_s=self._config.backend_wait_s)
        model = await self.model(deadline)
        results: list[_WriteResult | DedupError] = [_WriteResult(matches=(), inserted=False)] * len(jobs)
        by_collection = _positions_by(job.collection for job in jobs)
        with tracer.start_as_current_span("search_and_insert", attributes={"batch.size": len(jobs)}):
            for collection, positions in by_collection.items():
                outcomes: Sequence[_WriteResult | DedupError]
                try:
                    # One turn per collection and batch: across fronts, only the holder of its lock writes it.
                    lock = milvus_collection_name(self._config.collection_prefix, collection)
                    async with self._coordinator.turn(lock, deadline) as turn:
                        outcomes = await asyncio.to_thread(
                            self._write_collection, collection, [jobs[p] for p in positions], model, turn
                        )
                except DedupError as exc:
                    outcomes = [exc] * len(positions)
                for position, outcome in zip(positions, outcomes, strict=True):
                    results[position] = outcome
        return results


    def _milvus(self, call: Callable[[float], T], deadline: Deadline, what: str) -> T:
        """call(timeout_s), retried while Milvus is unreachable and `deadline` allows (blocking: run in a thread)."""
        return retry_sync(call, deadline, cap_s=self._config.milvus_timeout_s, what=what)

    def _write_collection(
        self, collection: str, jobs: Sequence[_WriteJob], model: ModelInfo, turn: WriteTurn
    ) -> list[_WriteResult | DedupError]:
        """Search, decide and insert one collection's part of a write batch (blocking: runs in a thread).

        Every Milvus call takes its timeout from the turn's deadline, which ends before this front's write lease
        could (coordination/lease.py): a front paused past it writes nothing."""
        deadline = turn.deadline
        # A fresh turn may follow another front's writes, which Session consistency does not show.
        consistency = "Strong" if turn.fresh else None
        milvus_name = self._milvus(
            lambda _timeout_s: self._index.open_collection(collection, model, create=True),
            deadline, "Milvus open collection",
        )
        vectors = np.stack([job.vector for job in jobs])
        # The framed photos (framing.py) of the items that have one are searched in the same call; their hits join
        # their item's, and against earlier items of the batch each item counts with its better view.
        framed = [j for j, job in enumerate(jobs) if job.view is not None]
        views = vectors.copy()
        for j in framed:
            views[j] = jobs[j].view
        # +1: the item's own id may come back (re-sent ids replace themselves) and is dropped.
        with tracer.start_as_current_span("search", attributes={"batch.size": len(jobs), "framed": len(framed)}):
            searched = self._milvus(
                lambda timeout_s: self._index.search(
                    milvus_name, np.concatenate([vectors, views[framed]]), max(job.top_k for job in jobs) + 1,
                    timeout_s=timeout_s, consistency=consistency,
                ),
                deadline, "Milvus search",
            )
        found = [list(hits) for hits in searched[:len(jobs)]]
        for j, view_hits in zip(framed, searched[len(jobs):], strict=True):
            found[j].extend(dataclasses.replace(hit, framed=True) for hit in view_hits)
        verifiable = self._index.has_signatures(milvus_name)
        # Each item's Milvus candidates to verify, chosen once: their signatures are read, then matched.
        band = [to_verify(_without(hits, job.id), job.threshold, job.rule) if verifiable else []
                for job, hits in zip(jobs, found, strict=True)]
        stored_signatures = self._band_signatures(milvus_name, band, deadline) if verifiable else {}
        # Items stored earlier in this batch are not in Milvus yet: compare with them directly. One product for
        # every pair; only pairs that can match (at or above the bottom of the item's band) become hits.
        whole = vectors @ vectors.T
        through_views = views @ vectors.T if framed else whole  # a batch without frames: one product
        in_batch, framed_in_batch = np.maximum(whole, through_views), through_views > whole
        evidence = (self._batch_evidence(jobs, band, in_batch, framed_in_batch, stored_signatures)
                    if verifiable else None)
        accepted: dict[str, int] = {}  # id -> position in jobs, for the items this batch stores
        results: list[_WriteResult] = []
        for j, job in enumerate(jobs):
            lowest = job.threshold - job.rule.below
            earlier = [k for other_id, k in accepted.items() if other_id != job.id and in_batch[j, k] >= lowest]
            hits = _without(found[j], job.id) + _batch_hits(jobs, earlier, in_batch[j, earlier],
                                                            framed_in_batch[j, earlier])
            verified = None
            if evidence is not None:
                verified = {i: evidence[j][i] for i in to_verify(hits, job.threshold, job.rule) if i in evidence[j]}
            matches = decide(hits, job.layout, job.flip_policy, job.threshold, job.top_k, rule=job.rule,
                             verified=verified)
            inserted = not (job.skip_duplicates and matches)
            if inserted:
                accepted.pop(job.id, None)  # a re-sent id in the same batch replaces the earlier one
                accepted[job.id] = j
            results.append(_WriteResult(matches=matches, inserted=inserted))
        stored = [
            StoredImage(id=jobs[k].id, vector=jobs[k].vector, metadata=jobs[k].metadata, layout=jobs[k].layout,
                        signature=jobs[k].signature)
            for k in accepted.values()
        ]
        try:
            with tracer.start_as_current_span("insert", attributes={"batch.size": len(stored)}):
                # Acknowledged by Milvus = in its write-ahead log (rocksmq): it survives a kill -9 of Milvus.
                self._milvus(
                    lambda timeout_s: self._index.upsert(milvus_name, model, stored, timeout_s=timeout_s),
                    deadline, "Milvus upsert",
                )
        except DedupError as exc:
            # Nothing of this batch was stored. A duplicate of stored images stays a valid answer; a duplicate
            # only of items of this batch would name images that are not there (the retry may store another copy).
            unstored = set(accepted)
            return [exc if result.inserted else _without_unstored(result, unstored, exc) for result in results]
        return list(results)


    def _batch_evidence(
        self, jobs: Sequence[_WriteJob], band: Sequence[Sequence[str]], in_batch: np.ndarray,
        framed_in_batch: np.ndarray, stored_signatures: Mapping[str, str],
    ) -> list[dict[str, Verified]]:
        """Evidence for every candidate each item's decision could verify, computed on the decode threads at once
        (blocking; the write stage's thread waits). Which earlier items of the batch end up stored is only known
        item by item, so each item is verified against every earlier one in its band, stored or not, besides its
        Milvus candidates; the serial pass then picks what its decision needs."""
        tasks: list[tuple[int, str, str]] = []
        queries = [QueryFeatures(_thumbnail_of(job), job.framed_thumbnail) for job in jobs]
        for j, job in enumerate(jobs):
            for candidate in band[j]:
                tasks.append((j, candidate, stored_signatures.get(candidate, "")))
            for k in range(j):
                if jobs[k].id != job.id and job.rule.in_band(float(in_batch[j, k]), job.threshold,
                                                             framed=bool(framed_in_batch[j, k])):
                    tasks.append((j, jobs[k].id, jobs[k].signature))
        evidence: list[dict[str, Verified]] = [{} for _ in jobs]
        futures = [self._decode_pool.submit(verify, queries[j], {candidate: stored}, jobs[j].rule)
                   for j, candidate, stored in tasks]
        for (j, _, _), future in zip(tasks, futures, strict=True):
            evidence[j].update(future.result())
        return evidence

    def _band_signatures(self, milvus_name: str, band: Sequence[Sequence[str]], deadline: Deadline) -> dict[str, str]:
        """One Milvus read for the stored signatures of every band candidate of the batch."""
        return self._signatures(milvus_name, sorted({i for candidates in band for i in candidates}), deadline)

    def _signatures(self, milvus_name: str, ids: Sequence[str], deadline: Deadline) -> dict[str, str]:
        """The stored signatures of ``ids``, retried while Milvus is unreachable (blocking: run in a thread)."""
        if not ids:
            return {}
        return self._milvus(
            lambda timeout_s: self._index.signatures(milvus_name, ids, timeout_s=timeout_s),
            deadline, "Milvus get signatures",
        )


class _AtMost:
    """The first `limit` items of a stream; remembers the item after them, if one came."""

    def __init__(self, items: AsyncIterator[IndexItem], limit: int) -> None:
        self._items = items
        self._limit = limit
        self.first_unread: IndexItem | None = None

    async def items(self) -> AsyncIterator[IndexItem]:
        count = 0
        async for item in self._items:
            if count == self._limit:
                self.first_unread = item
                return
            count += 1
            yield item


@dataclasses.dataclass(frozen=True, slots=True)
class _Decoded:
    pixels: np.ndarray
    layout: str
    thumbnail: np.ndarray
    signature: str
    framed: np.ndarray | None  # the model input of the photo inside a frame (framing.py), when found
    framed_thumbnail: np.ndarray | None  # and its part of the thumbnail


@dataclasses.dataclass(frozen=True, slots=True)
class _Embedded:
    vector: np.ndarray
    layout: str
    thumbnail: np.ndarray
    signature: str  # "" unless asked for (writes)
    view: np.ndarray | None = None  # the framed photo's embedding, when asked for and found
    framed_thumbnail: np.ndarray | None = None


def _decode_for_embedding(image: bytes, limits: DecodeLimits, grey: bool, signed: bool, framed: bool) -> _Decoded:
    decoded = decode_with_thumbnail(image, limits, grey=grey, thumbnail_side=signature.SIDE, framed=framed)
    return _Decoded(
        pixels=decoded.pixels, layout=layout_of(decoded.pixels), thumbnail=decoded.thumbnail,
        signature=signature.make_signature(decoded.thumbnail) if signed else "", framed=decoded.framed,
        framed_thumbnail=decoded.framed_thumbnail,
    )


def _query_vectors(vector: np.ndarray, view: np.ndarray | None) -> np.ndarray:
    """The vectors one check searches with: the image's, then its framed photo's when it has one."""
    return vector[None, :] if view is None else np.stack([vector, view])


async def _before(caller: Deadline | None, batched: Awaitable[T], backend: str) -> T:
    """Await a batched job, but no longer than its caller's deadline: a batch serves its latest caller (see
    `backend_deadline`), and an earlier one still gets our UNAVAILABLE rather than its own DEADLINE_EXCEEDED."""
    if caller is None:
        return await batched
    try:
        return await asyncio.wait_for(batched, max(0.0, caller.remaining()))
    except TimeoutError as exc:
        raise BackendUnavailable(f"{backend} did not answer before the caller's deadline") from exc


def _without_unstored(result: _WriteResult, unstored: set[str], error: DedupError) -> _WriteResult | DedupError:
    """A duplicate's answer without the matches that were never stored; `error` when none is left."""
    matches = [hit for hit in result.matches if hit.id not in unstored]
    if not matches:
        return error
    return result if len(matches) == len(result.matches) else _WriteResult(matches=matches, inserted=False)


def _positions_by(keys: Iterable[str]) -> dict[str, list[int]]:
    """The batch positions of each key (a collection), in batch order: one backend call per collection."""
    positions: dict[str, list[int]] = {}
    for position, key in enumerate(keys):
        positions.setdefault(key, []).append(position)
    return positions


def _without(hits: Sequence[Hit], image_id: str) -> list[Hit]:
    """Hits other than the image itself (a re-sent id finds its own earlier copy)."""
    return [hit for hit in hits if hit.id != image_id]


def _rule(calibration: Calibration, *, cosine_only: bool) -> VerificationRule:
    """The calibrated decision (cosine outside the band, local features inside), or cosine alone: on request, and
    whenever the request sets its own threshold (a cosine the caller chose, as before verification existed)."""
    return COSINE_ONLY if cosine_only else calibration.rule


def _thumbnail_of(job: _WriteJob) -> np.ndarray:
    return job.thumbnail if job.thumbnail is not None else np.zeros((0, 0), dtype=np.uint8)


def _batch_hits(
    jobs: Sequence[_WriteJob], positions: Sequence[int], similarities: np.ndarray, framed: np.ndarray
) -> list[Hit]:
    return [
        Hit(id=jobs[k].id, similarity=float(similarity), metadata=jobs[k].metadata, layout=jobs[k].layout,
            framed=bool(through_frame))
        for k, similarity, through_frame in zip(positions, similarities, framed, strict=True)
    ]


async def _facts(pool: Executor, image: bytes) -> dict[str, str]:
    """The image's facts (facts.py: pixels, bytes, format), stored beside its metadata under reserved keys for the
    keep policy of duplicate groups; read in the decode pool, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(pool, image_facts, image)


def _verify_scanned(
    own: Sequence[str], candidates: Sequence[Mapping[str, str]], rule: VerificationRule
) -> list[dict[str, Verified]]:
    """verify() for each scanned image (its stored signature as the query) against its band candidates."""
    evidence: list[dict[str, Verified]] = []
    for own_signature, wanted in zip(own, candidates, strict=True):
        pixels = signature.signature_pixels(own_signature) if wanted else None
        thumbnail = pixels if pixels is not None else np.zeros((0, 0), dtype=np.uint8)
        evidence.append(verify(QueryFeatures(thumbnail), wanted, rule) if wanted else {})
    return evidence


class _VerifiedPairs:
    """Evidence already found for a pair during one groups scan, so the other side's scan does not verify it
    again (verification is symmetric: a mirrored match is mirrored both ways). Used once, then dropped; at most
    ``capacity`` pairs are remembered (the oldest go first: they are only verified again)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._pairs: dict[tuple[str, str], Verified] = {}

    @staticmethod
    def key(id_a: str, id_b: str) -> tuple[str, str]:
        return (id_a, id_b) if id_a < id_b else (id_b, id_a)

    def pop(self, id_a: str, id_b: str) -> Verified | None:
        return self._pairs.pop(self.key(id_a, id_b), None)

    def put(self, id_a: str, id_b: str, verified: Verified) -> None:
        if len(self._pairs) >= self._capacity:
            self._pairs.pop(next(iter(self._pairs)))
        self._pairs[self.key(id_a, id_b)] = verified
