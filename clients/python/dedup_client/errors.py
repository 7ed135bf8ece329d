"""Errors raised by the dedup client.

    DedupError                 the server (or the transport) answered with a non-OK gRPC status
      └── DedupConnectionError the server could not be reached at all

Both carry the status code *name* (e.g. "INVALID_ARGUMENT") and the details. The
name, not ``grpc.StatusCode``, so that callers can match on it without importing
grpc; the mapping from ``grpc.RpcError`` lives in one place, ``client.py``.
"""

from __future__ import annotations


class DedupError(Exception):
    """A call to the dedup server failed with a gRPC status other than OK."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


class DedupConnectionError(DedupError):
    """No connection to the server: refused, unresolvable, or reset before any answer."""

    def __init__(self, target: str, code: str, details: str) -> None:
        super().__init__(code, details)
        self.target = target

    def __str__(self) -> str:
        return f"cannot reach the dedup server at {self.target} ({self.code}: {self.details})"
