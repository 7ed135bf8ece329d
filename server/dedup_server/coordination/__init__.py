"""Serialising the writes of a collection across every front that shares one Milvus (see coordinator.py).

    WriteCoordinator        turn(collection, deadline): an async context manager, one write batch inside it
    ├── LocalCoordinator    one front (DEDUP_ETCD_ENDPOINTS unset): the write batcher already serialises
    └── EtcdCoordinator     many fronts: a per-collection lock in etcd under this front's lease, fenced per batch
"""

from .coordinator import (
    CoordinationStats,
    EtcdCoordinator,
    LocalCoordinator,
    WriteCoordinator,
    WriteTurn,
    coordinator_for,
)
from .etcd import EtcdClient
from .lease import LeasedDeadline, LeaseKeeper

__all__ = [
    "CoordinationStats",
    "EtcdClient",
    "EtcdCoordinator",
    "LeaseKeeper",
    "LeasedDeadline",
    "LocalCoordinator",
    "WriteCoordinator",
    "WriteTurn",
    "coordinator_for",
]
