"""Python client and CLI for the image-deduplication gRPC service (dedup.v1)."""

from .client import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, MAX_MESSAGE_BYTES, DedupClient
from .errors import DedupConnectionError, DedupError
from .results import (
    CheckResult,
    CollectionStats,
    DeleteResult,
    DuplicateGroup,
    DuplicatePair,
    FlipPolicy,
    GroupMember,
    IndexInfo,
    IndexItem,
    IndexResult,
    IndexStatus,
    KeepPolicy,
    MatchResult,
    ModelInfo,
    ScanProgress,
    StatsResult,
    ThresholdCalibration,
)

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT_S",
    "MAX_MESSAGE_BYTES",
    "CheckResult",
    "CollectionStats",
    "DedupClient",
    "DedupConnectionError",
    "DedupError",
    "DeleteResult",
    "DuplicateGroup",
    "DuplicatePair",
    "FlipPolicy",
    "GroupMember",
    "IndexInfo",
    "IndexItem",
    "IndexResult",
    "IndexStatus",
    "KeepPolicy",
    "MatchResult",
    "ModelInfo",
    "ScanProgress",
    "StatsResult",
    "ThresholdCalibration",
]
