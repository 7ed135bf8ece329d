"""Thin gRPC servicer: protobuf in -> DedupService (plain Python) -> protobuf out."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import grpc
from dedup.v1 import dedup_pb2, dedup_pb2_grpc

from . import metrics
from .errors import DedupError, shorten_message
from .facts import public_metadata
from .groups import DuplicateGroup, GroupMember
from .index import Hit, IndexDescription
from .service import CheckQuery, DedupService, GroupsQuery, IndexItem, ItemOutcome, ItemStatus, ScanProgress
from .status import status_for
from .thresholds import CalibrationRecord

Request = TypeVar("Request")
Response = TypeVar("Response")

_ITEM_STATUS = {
    ItemStatus.INDEXED: dedup_pb2.IndexResponse.INDEXED,
    ItemStatus.DUPLICATE: dedup_pb2.IndexResponse.DUPLICATE,
    ItemStatus.INVALID: dedup_pb2.IndexResponse.INVALID,
    ItemStatus.FAILED: dedup_pb2.IndexResponse.FAILED,
}


def _domain_errors_to_status(
    method: Callable[[DedupServicer, Request, grpc.aio.ServicerContext], Awaitable[Response]],
) -> Callable[[DedupServicer, Request, grpc.aio.ServicerContext], Awaitable[Response]]:
    @functools.wraps(method)
    async def wrapper(self: DedupServicer, request: Request, context: grpc.aio.ServicerContext) -> Response:
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            await context.abort(code, message)
            raise  # unreachable: abort raises

    return wrapper


class DedupServicer(dedup_pb2_grpc.DeduplicationServicer):
    def __init__(self, service: DedupService) -> None:
        self._service = service

    @_domain_errors_to_status
    async def CheckDuplicate(
        self, request: dedup_pb2.CheckDuplicateRequest, context: grpc.aio.ServicerContext
    ) -> dedup_pb2.CheckDuplicateResponse:
        outcome = await self._service.check(
            CheckQuery(
                image=request.image,
                collection=request.collection,
                threshold=request.threshold,
                top_k=request.top_k,
                insert_if_unique=request.insert_if_unique,
                id=request.id,
                metadata=dict(request.metadata),
                flip_policy=request.flip_policy,
                cosine_only=request.cosine_only,
            ),
            time_remaining=context.time_remaining(),
        )
        return dedup_pb2.CheckDuplicateResponse(
            is_duplicate=bool(outcome.matches),
            matches=_matches(outcome.matches),
            inserted=outcome.inserted,
            model=outcome.model,
            threshold=outcome.threshold,
        )

    async def IndexStream(
        self, request_iterator: AsyncIterator[dedup_pb2.IndexRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dedup_pb2.IndexResponse]:
        async def items() -> AsyncIterator[IndexItem]:
            async for request in request_iterator:
                yield IndexItem(
                    id=request.id,
                    image=request.image,
                    metadata=dict(request.metadata),
                    collection=request.collection,
                    skip_duplicates=request.skip_duplicates,
                    threshold=request.threshold,
                    flip_policy=request.flip_policy,
                )

        # Headers first, before reading anything: a client may wait for them before it streams its images, so a
        # stream the server refuses (RPC limit: trailers only) is refused before a write can meet the refusal,
        # which grpc.aio clients misreport as INTERNAL (grpc/grpc#36066) instead of RESOURCE_EXHAUSTED.
        await context.send_initial_metadata(())
        try:
            async for outcome in self._service.index_stream(items(), time_remaining=context.time_remaining()):
                metrics.INDEX_ITEMS.labels(outcome.status.value).inc()
                yield _index_response(outcome)
        except DedupError as exc:  # per-item errors are outcomes; this ends the stream (e.g. too long)
            code, message = status_for(exc)
            await context.abort(code, message)

    async def FindDuplicateGroups(
        self, request: dedup_pb2.FindDuplicateGroupsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[dedup_pb2.FindDuplicateGroupsResponse]:
        query = GroupsQuery(collection=request.collection, threshold=request.threshold, top_k=request.top_k,
                            flip_policy=request.flip_policy, keep=request.keep,
                            min_group_size=request.min_group_size, limit=request.limit,
                            cosine_only=request.cosine_only)
        try:
            # aclosing: a cancelled RPC (the client went away) closes the scan at once, not when collected.
            async with contextlib.aclosing(
                self._service.find_groups(query, time_remaining=context.time_remaining())
            ) as found:
                async for item in found:
                    yield _groups_response(item)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            await context.abort(code, message)

    @_domain_errors_to_status
    async def DeleteImages(
        self, request: dedup_pb2.DeleteImagesRequest, context: grpc.aio.ServicerContext
    ) -> dedup_pb2.DeleteImagesResponse:
        deleted, not_found = await self._service.delete(request.collection, list(request.ids))
        return dedup_pb2.DeleteImagesResponse(deleted_count=deleted, not_found=not_found)

    @_domain_errors_to_status
    async def GetStats(
        self, request: dedup_pb2.GetStatsRequest, context: grpc.aio.ServicerContext
    ) -> dedup_pb2.GetStatsResponse:
        stats = await self._service.stats(request.collection)
        return dedup_pb2.GetStatsResponse(
            collections=[
                dedup_pb2.CollectionStats(
                    name=c.name, image_count=c.image_count, model=c.model, index=_index_info(c.index)
                )
                for c in stats.collections
            ],
            model=dedup_pb2.ModelInfo(
                name=stats.model.name,
                version=stats.model.version,
                embedding_dim=stats.model.embedding_dim,
                fallback=stats.model.fallback,
                warning=stats.model.warning,
            ),
            index=_index_info(stats.index),
            default_threshold=stats.calibration.threshold,
            default_top_k=stats.default_top_k,
            threshold_source=stats.calibration.source,
            calibration=_calibration(stats.calibration.record),
        )


def _calibration(record: CalibrationRecord | None) -> dedup_pb2.ThresholdCalibration | None:
    if record is None:
        return None
    return dedup_pb2.ThresholdCalibration(
        model=record.model, threshold=record.threshold, dataset=record.dataset, precision=record.precision,
        recall=record.recall, f1=record.f1, queries=record.queries, distractor_queries=record.distractor_queries,
        false_alarms=record.false_alarms, measured_at=record.measured_at, match_precision=record.match_precision,
        verify_below=record.verify_below, verify_above=record.verify_above,
        verify_min_inliers=record.verify_min_inliers, verify_min_coverage=record.verify_min_coverage,
        false_alarm_rate_1m=record.false_alarm_rate_1m, false_alarm_rate_1m_low=record.false_alarm_rate_1m_low,
        false_alarm_rate_1m_high=record.false_alarm_rate_1m_high, micro_ap=record.micro_ap,
        recall_at_precision_99=record.recall_at_precision_99, recall_at_precision_999=record.recall_at_precision_999,
        bytes_per_image=record.bytes_per_image,
    )


def _groups_response(item: ScanProgress | DuplicateGroup) -> dedup_pb2.FindDuplicateGroupsResponse:
    if isinstance(item, ScanProgress):
        return dedup_pb2.FindDuplicateGroupsResponse(
            progress=dedup_pb2.ScanProgress(scanned=item.scanned, total=item.total)
        )
    return dedup_pb2.FindDuplicateGroupsResponse(
        group=dedup_pb2.DuplicateGroup(
            ids=list(item.ids),
            pairs=[dedup_pb2.DuplicatePair(id_a=p.id_a, id_b=p.id_b, similarity=p.similarity, mirrored=p.mirrored)
                   for p in item.pairs],
            members=[_member(m) for m in item.members],
            keeper=item.keeper,
        )
    )


def _member(member: GroupMember) -> dedup_pb2.GroupMember:
    facts = member.facts
    return dedup_pb2.GroupMember(
        id=member.id, similarity=member.similarity, closest=member.closest, keeper=member.keeper,
        mirrored=member.mirrored, metadata=dict(member.metadata), width=facts.width, height=facts.height,
        bytes=facts.bytes, format=facts.format, indexed_at_ms=facts.indexed_at_ms,
    )


def _matches(hits: Sequence[Hit]) -> list[dedup_pb2.Match]:
    return [
        # Only the client's metadata: the server's own facts (reserved keys) stay inside.
        dedup_pb2.Match(id=hit.id, similarity=hit.similarity, metadata=public_metadata(hit.metadata),
                        mirrored=hit.mirrored, verified=hit.verified, inliers=hit.inliers, framed=hit.framed)
        for hit in hits
    ]


def _index_response(outcome: ItemOutcome) -> dedup_pb2.IndexResponse:
    return dedup_pb2.IndexResponse(
        id=outcome.id, status=_ITEM_STATUS[outcome.status], matches=_matches(outcome.matches),
        error=shorten_message(outcome.error),
    )


def _index_info(index: IndexDescription) -> dedup_pb2.IndexInfo:
    return dedup_pb2.IndexInfo(
        index_type=index.index_type,
        build_params=dict(index.build_params),
        search_params=dict(index.search_params),
        metric=index.metric,
    )
