"""Python client and CLI for the image-deduplication gRPC service (dedup.v1)."""

from .client import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, MAX_MESSAGE_BYTES, DedupClient
from .errors import DedupConnectionError, DedupError
from .results import (
    CheckResult,
    CollectionStats,
    DeleteResult,
    IndexInfo,
    IndexItem,
    IndexResult,
    IndexStatus,
    MatchResult,
    ModelInfo,
    StatsResult,
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
    "IndexInfo",
    "IndexItem",
    "IndexResult",
    "IndexStatus",
    "MatchResult",
    "ModelInfo",
    "StatsResult",
]
