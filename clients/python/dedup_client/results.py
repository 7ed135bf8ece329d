"""Plain, frozen values the client returns and accepts, and their conversion from protobufs.

Callers never see a protobuf: they get these dataclasses, which know nothing of gRPC
and are easy to print, compare and serialise.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from dedup.v1 import dedup_pb2


def _f32(value: float) -> float:
    """The float32 the server sent, as the short decimal it stands for.

    Proto ``float`` is 32-bit: a threshold of 0.92 arrives as 0.9200000166893005.
    Seven significant digits is what float32 carries, so nothing real is lost.
    """
    return float(f"{value:.7g}")


class IndexStatus(enum.Enum):
    """What the server did with one streamed image (mirrors IndexResponse.Status)."""

    UNSPECIFIED = dedup_pb2.IndexResponse.STATUS_UNSPECIFIED
    INDEXED = dedup_pb2.IndexResponse.INDEXED
    DUPLICATE = dedup_pb2.IndexResponse.DUPLICATE
    INVALID = dedup_pb2.IndexResponse.INVALID
    FAILED = dedup_pb2.IndexResponse.FAILED

    @property
    def ok(self) -> bool:
        """True when the image was handled as intended (stored, or recognised as a duplicate)."""
        return self in (IndexStatus.INDEXED, IndexStatus.DUPLICATE)


class FlipPolicy(enum.Enum):
    """Does a left-right mirrored copy count as a duplicate? (mirrors dedup.v1.FlipPolicy)"""

    DEFAULT = dedup_pb2.FLIP_POLICY_UNSPECIFIED  # the server's default: yes
    MIRROR_IS_DUPLICATE = dedup_pb2.FLIP_POLICY_MIRROR_IS_DUPLICATE  # yes (matches say ``mirrored``)
    MIRROR_IS_DISTINCT = dedup_pb2.FLIP_POLICY_MIRROR_IS_DISTINCT  # no: mirrored copies are not matched


@dataclass(frozen=True)
class MatchResult:
    id: str
    similarity: float
    metadata: dict[str, str] = field(default_factory=dict)
    mirrored: bool = False
    verified: bool = False  # geometric verification ran and passed (candidates near the threshold)
    inliers: int = 0  # local-feature matches that agreed, when it ran
    framed: bool = False  # found through the photo inside the query's frame (a screenshot's, a letterboxed one)


class KeepPolicy(enum.Enum):
    """Which image of a duplicate group to keep (mirrors dedup.v1.KeepPolicy)."""

    DEFAULT = dedup_pb2.KEEP_POLICY_UNSPECIFIED  # the server's default: LARGEST
    LARGEST = dedup_pb2.KEEP_POLICY_LARGEST  # most pixels, then most bytes
    ORIGINAL_FORMAT = dedup_pb2.KEEP_POLICY_ORIGINAL_FORMAT  # lossless (PNG, TIFF, BMP, PPM) first, then pixels
    OLDEST = dedup_pb2.KEEP_POLICY_OLDEST  # indexed first
    NEWEST = dedup_pb2.KEEP_POLICY_NEWEST  # indexed last

    @property
    def flag(self) -> str:
        """The CLI's spelling: largest, original-format, oldest, newest."""
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True)
class DuplicatePair:
    id_a: str
    id_b: str
    similarity: float
    mirrored: bool = False


@dataclass(frozen=True)
class GroupMember:
    """One image of a duplicate group. Facts are 0 / "" for images indexed before the server kept them."""

    id: str
    similarity: float  # the best similarity joining it to another member
    closest: str  # that member
    keeper: bool
    mirrored: bool  # it is the keeper mirrored left-right
    metadata: dict[str, str] = field(default_factory=dict)
    width: int = 0
    height: int = 0
    bytes: int = 0
    format: str = ""
    indexed_at_ms: int = 0

    @property
    def path(self) -> str:
        """The file it was indexed from, as the CLI recorded it (else its id)."""
        return self.metadata.get("path") or self.id


@dataclass(frozen=True)
class DuplicateGroup:
    ids: tuple[str, ...]
    pairs: tuple[DuplicatePair, ...]
    members: tuple[GroupMember, ...] = ()  # each image once: the keeper first, then best similarity first
    keeper: str = ""

    @property
    def removable(self) -> tuple[GroupMember, ...]:
        """Every member but the keeper: the copies that could go."""
        return tuple(m for m in self.members if not m.keeper)


@dataclass(frozen=True)
class ScanProgress:
    scanned: int
    total: int


@dataclass(frozen=True)
class ThresholdCalibration:
    model: str
    threshold: float
    dataset: str
    precision: float
    recall: float
    f1: float
    match_precision: float
    queries: int
    distractor_queries: int
    false_alarms: int
    measured_at: str
    verify_below: float = 0.0  # the verification band: [threshold - below, threshold + above)
    verify_above: float = 0.0
    verify_min_inliers: int = 0
    verify_min_coverage: float = 0.0
    false_alarm_rate_1m: float = 0.0  # expected per unrelated query among 1M indexed images, with its interval
    false_alarm_rate_1m_low: float = 0.0
    false_alarm_rate_1m_high: float = 0.0
    micro_ap: float = 0.0
    recall_at_precision_99: float = 0.0
    recall_at_precision_999: float = 0.0
    bytes_per_image: int = 0


@dataclass(frozen=True)
class CheckResult:
    is_duplicate: bool
    matches: tuple[MatchResult, ...]
    inserted: bool
    model: str
    threshold: float


@dataclass(frozen=True)
class IndexItem:
    """One image to stream to IndexStream."""

    id: str
    image: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)
    collection: str = ""
    skip_duplicates: bool = False
    threshold: float = 0.0
    flip_policy: FlipPolicy = FlipPolicy.DEFAULT


@dataclass(frozen=True)
class IndexResult:
    id: str
    status: IndexStatus
    matches: tuple[MatchResult, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class DeleteResult:
    deleted_count: int
    not_found: tuple[str, ...]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    embedding_dim: int
    fallback: bool
    warning: str


@dataclass(frozen=True)
class IndexInfo:
    index_type: str
    build_params: dict[str, str]
    search_params: dict[str, str]
    metric: str


@dataclass(frozen=True)
class CollectionStats:
    name: str
    image_count: int
    model: str
    index: IndexInfo


@dataclass(frozen=True)
class StatsResult:
    collections: tuple[CollectionStats, ...]
    model: ModelInfo
    index: IndexInfo
    default_threshold: float
    default_top_k: int
    threshold_source: str
    calibration: ThresholdCalibration | None = None  # what the default threshold was measured at


def match_from_proto(msg: dedup_pb2.Match) -> MatchResult:
    return MatchResult(
        id=msg.id, similarity=_f32(msg.similarity), metadata=dict(msg.metadata), mirrored=msg.mirrored,
        verified=msg.verified, inliers=msg.inliers, framed=msg.framed,
    )


def check_from_proto(msg: dedup_pb2.CheckDuplicateResponse) -> CheckResult:
    return CheckResult(
        is_duplicate=msg.is_duplicate,
        matches=tuple(match_from_proto(m) for m in msg.matches),
        inserted=msg.inserted,
        model=msg.model,
        threshold=_f32(msg.threshold),
    )


def index_request_to_proto(item: IndexItem) -> dedup_pb2.IndexRequest:
    return dedup_pb2.IndexRequest(
        id=item.id,
        image=item.image,
        metadata=dict(item.metadata),
        collection=item.collection,
        skip_duplicates=item.skip_duplicates,
        threshold=item.threshold,
        flip_policy=item.flip_policy.value,
    )


def _status_from_proto(value: int) -> IndexStatus:
    try:
        return IndexStatus(value)
    except ValueError:
        # A newer server may add statuses; an unknown one is not success.
        return IndexStatus.UNSPECIFIED


def index_result_from_proto(msg: dedup_pb2.IndexResponse) -> IndexResult:
    return IndexResult(
        id=msg.id,
        status=_status_from_proto(msg.status),
        matches=tuple(match_from_proto(m) for m in msg.matches),
        error=msg.error,
    )


def delete_from_proto(msg: dedup_pb2.DeleteImagesResponse) -> DeleteResult:
    return DeleteResult(deleted_count=msg.deleted_count, not_found=tuple(msg.not_found))


def _index_info_from_proto(msg: dedup_pb2.IndexInfo) -> IndexInfo:
    return IndexInfo(
        index_type=msg.index_type,
        build_params=dict(msg.build_params),
        search_params=dict(msg.search_params),
        metric=msg.metric,
    )


def stats_from_proto(msg: dedup_pb2.GetStatsResponse) -> StatsResult:
    return StatsResult(
        collections=tuple(
            CollectionStats(
                name=c.name,
                image_count=c.image_count,
                model=c.model,
                index=_index_info_from_proto(c.index),
            )
            for c in msg.collections
        ),
        model=ModelInfo(
            name=msg.model.name,
            version=msg.model.version,
            embedding_dim=msg.model.embedding_dim,
            fallback=msg.model.fallback,
            warning=msg.model.warning,
        ),
        index=_index_info_from_proto(msg.index),
        default_threshold=_f32(msg.default_threshold),
        default_top_k=msg.default_top_k,
        threshold_source=msg.threshold_source,
        calibration=_calibration_from_proto(msg.calibration) if msg.HasField("calibration") else None,
    )


def _calibration_from_proto(msg: dedup_pb2.ThresholdCalibration) -> ThresholdCalibration:
    return ThresholdCalibration(
        model=msg.model, threshold=_f32(msg.threshold), dataset=msg.dataset, precision=_f32(msg.precision),
        recall=_f32(msg.recall), f1=_f32(msg.f1), match_precision=_f32(msg.match_precision), queries=msg.queries,
        distractor_queries=msg.distractor_queries, false_alarms=msg.false_alarms, measured_at=msg.measured_at,
        verify_below=_f32(msg.verify_below), verify_above=_f32(msg.verify_above),
        verify_min_inliers=msg.verify_min_inliers, verify_min_coverage=_f32(msg.verify_min_coverage),
        false_alarm_rate_1m=_f32(msg.false_alarm_rate_1m), false_alarm_rate_1m_low=_f32(msg.false_alarm_rate_1m_low),
        false_alarm_rate_1m_high=_f32(msg.false_alarm_rate_1m_high), micro_ap=_f32(msg.micro_ap),
        recall_at_precision_99=_f32(msg.recall_at_precision_99),
        recall_at_precision_999=_f32(msg.recall_at_precision_999), bytes_per_image=msg.bytes_per_image,
    )


def groups_item_from_proto(msg: dedup_pb2.FindDuplicateGroupsResponse) -> ScanProgress | DuplicateGroup:
    if msg.WhichOneof("item") == "progress":
        return ScanProgress(scanned=msg.progress.scanned, total=msg.progress.total)
    return DuplicateGroup(
        ids=tuple(msg.group.ids),
        pairs=tuple(DuplicatePair(p.id_a, p.id_b, _f32(p.similarity), p.mirrored) for p in msg.group.pairs),
        members=tuple(_member_from_proto(m) for m in msg.group.members),
        keeper=msg.group.keeper,
    )


def _member_from_proto(msg: dedup_pb2.GroupMember) -> GroupMember:
    return GroupMember(
        id=msg.id, similarity=_f32(msg.similarity), closest=msg.closest, keeper=msg.keeper, mirrored=msg.mirrored,
        metadata=dict(msg.metadata), width=msg.width, height=msg.height, bytes=msg.bytes, format=msg.format,
        indexed_at_ms=msg.indexed_at_ms,
    )
