"""Supervisor for the local dedup stack: Milvus, Triton and the gRPC front as child processes.

`python -m dedup_stack` (what `make run` calls) starts everything in the foreground; the integration tests use
`MilvusProcess` and `TritonProcess` directly. Every class here owns its child's process group, so stopping one
also stops whatever that child spawned (Triton's Python-backend stubs).
"""

from dedup_stack.config import StackConfig
from dedup_stack.errors import (
    ModelRepositoryError,
    PortInUseError,
    ProcessStartError,
    StackError,
    StartCancelled,
)
from dedup_stack.milvus import MilvusConfig, MilvusPorts, MilvusProcess
from dedup_stack.ports import PortClaim, check_ports_free, pick_free_ports
from dedup_stack.triton import TritonConfig, TritonProcess

__all__ = [
    "MilvusConfig",
    "MilvusPorts",
    "MilvusProcess",
    "ModelRepositoryError",
    "PortClaim",
    "PortInUseError",
    "ProcessStartError",
    "StackConfig",
    "StackError",
    "StartCancelled",
    "TritonConfig",
    "TritonProcess",
    "check_ports_free",
    "pick_free_ports",
]
