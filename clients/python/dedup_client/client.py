"""A small synchronous client for the dedup.v1.Deduplication service.

One long-lived channel per client, closed explicitly (or by ``with``). Every call has a
deadline; gRPC failures come out as ``DedupError`` and results as frozen dataclasses.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc
from dedup.v1 import dedup_pb2, dedup_pb2_grpc

from .errors import DedupConnectionError, DedupError
from .results import (
    CheckResult,
    DeleteResult,
    DuplicateGroup,
    FlipPolicy,
    IndexItem,
    IndexResult,
    KeepPolicy,
    ScanProgress,
    StatsResult,
    check_from_proto,
    delete_from_proto,
    groups_item_from_proto,
    index_request_to_proto,
    index_result_from_proto,
    stats_from_proto,
)

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_TIMEOUT_S = 30.0
# Images travel whole in one message; 64 MiB covers large TIFFs with room to spare and
# must match (or stay under) the server's own limit.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Servers end a stream after DEDUP_MAX_STREAM_ITEMS items (100,000 by default): `index` opens a new
# stream every this many items, well under that.
ITEMS_PER_STREAM = 10_000

# Messages grpc-core uses when no connection could be made at all. UNAVAILABLE alone is
# not enough: the server itself answers UNAVAILABLE when its backends are down.
_CONNECT_FAILURE_HINTS = (
    "failed to connect",
    "connection refused",
    "dns resolution failed",
    "name resolution",
    "connections to all backends failing",
    "no route to host",
)


def error_from_rpc(exc: grpc.RpcError, target: str) -> DedupError:
    """The one mapping from a gRPC failure to this package's exceptions."""
    code_obj = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    code = code_obj.name if code_obj is not None else "UNKNOWN"
    lowered = details.lower()
    if code == "UNAVAILABLE" and any(hint in lowered for hint in _CONNECT_FAILURE_HINTS):
        return DedupConnectionError(target, code, details)
    return DedupError(code, details)


class _RequestPump:
    """Feeds IndexItems to gRPC and remembers an exception the caller's iterable raised.

    gRPC consumes the request iterator on its own thread and turns any exception there
    into a bare CANCELLED/UNKNOWN status; keeping it lets ``index`` re-raise the real cause.
    """

    def __init__(self, items: Iterable[IndexItem]) -> None:
        self._items = iter(items)
        # Written on gRPC's thread, read on the caller's only after the stream has failed.
        self.error: Exception | None = None

    def __iter__(self) -> Iterator[dedup_pb2.IndexRequest]:
        return self

    def __next__(self) -> dedup_pb2.IndexRequest:
        try:
            item = next(self._items)
            return index_request_to_proto(item)
        except StopIteration:
            raise
        except Exception as exc:
            self.error = exc
            raise


class DedupClient:
    """Client for one dedup server.

    ``root_certificates`` (PEM bytes) or ``tls=True`` (system roots) selects a secure
    channel; ``client_cert`` and ``client_key`` (PEM bytes, together) add this client's
    certificate for servers that require mutual TLS. ``token`` is sent as
    ``authorization: Bearer <token>`` on every call. ``timeout`` is the default deadline,
    in seconds, of the unary calls.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        client_cert: bytes | None = None,
        client_key: bytes | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if (client_cert is None) != (client_key is None):
            raise ValueError("client_cert and client_key go together (mutual TLS)")
        self.target = target
        self.timeout = timeout
        # Plain metadata rather than call credentials: gRPC refuses call credentials on an
        # insecure channel, and local/dev servers behind a TLS-terminating proxy need the token too.
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        # No client keepalive: servers reject pings more frequent than they allow
        # (GOAWAY too_many_pings), and a user-facing CLI gains nothing from it.
        if tls or root_certificates is not None or client_cert is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates, private_key=client_key, certificate_chain=client_cert
            )
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = dedup_pb2_grpc.DeduplicationStub(self._channel)

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> DedupClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------

    def check(
        self,
        image: bytes,
        *,
        collection: str = "",
        threshold: float = 0.0,
        top_k: int = 0,
        insert_if_unique: bool = False,
        id: str = "",  # noqa: A002 - mirrors the proto field
        metadata: Mapping[str, str] | None = None,
        flip_policy: FlipPolicy = FlipPolicy.DEFAULT,
        cosine_only: bool = False,
        timeout: float | None = None,
    ) -> CheckResult:
        """Is ``image`` a near-duplicate of an indexed one? Optionally index it when not. ``cosine_only``: no
        geometric verification of candidates near the threshold (raw similarities, for tools)."""
        request = dedup_pb2.CheckDuplicateRequest(
            image=image,
            collection=collection,
            threshold=threshold,
            top_k=top_k,
            insert_if_unique=insert_if_unique,
            id=id,
            metadata=dict(metadata or {}),
            flip_policy=flip_policy.value,
            cosine_only=cosine_only,
        )
        response = self._unary(self._stub.CheckDuplicate, request, timeout)
        return check_from_proto(response)

    def index(
        self,
        items: Iterable[IndexItem],
        *,
        timeout: float | None = None,
        items_per_stream: int = ITEMS_PER_STREAM,
    ) -> Iterator[IndexResult]:
        """Stream ``items`` to IndexStream and yield one result per item as it arrives.

        Items are pulled lazily as gRPC sends them, so a generator that reads files on
        demand keeps memory flat. Results may come in any order; match them by ``id``.
        A new stream is opened every ``items_per_stream`` items (servers limit a stream's
        length). ``timeout`` bounds each stream; None (the default) means no deadline, since
        a bulk ingest of unknown size has no sensible fixed one. Stopping iteration early
        cancels the stream.
        """
        if items_per_stream < 1:
            raise ValueError(f"items_per_stream must be positive, got {items_per_stream}")
        source = iter(items)
        while True:
            # Peek, so that no stream is opened for nothing after the last full one.
            first = next(source, None)
            if first is None:
                return
            yield from self._index_stream(itertools.chain([first], itertools.islice(source, items_per_stream - 1)),
                                          timeout)

    def _index_stream(self, items: Iterable[IndexItem], timeout: float | None) -> Iterator[IndexResult]:
        pump = _RequestPump(items)
        responses = self._stub.IndexStream(pump, timeout=timeout, metadata=self._metadata)
        try:
            for response in responses:
                yield index_result_from_proto(response)
        except grpc.RpcError as exc:
            if pump.error is not None:
                raise pump.error from exc
            raise error_from_rpc(exc, self.target) from exc
        finally:
            # No-op once the stream has finished; stops the upload when the caller bailed out.
            responses.cancel()

    def groups(
        self,
        *,
        collection: str = "",
        threshold: float = 0.0,
        top_k: int = 0,
        keep: KeepPolicy = KeepPolicy.DEFAULT,
        flip_policy: FlipPolicy = FlipPolicy.DEFAULT,
        min_group_size: int = 0,
        limit: int = 0,
        cosine_only: bool = False,
        timeout: float | None = None,
    ) -> Iterator[ScanProgress | DuplicateGroup]:
        """Every duplicate group of a collection: progress while the server scans, then the groups, largest first,
        each with its members and the keeper ``keep`` picks. ``min_group_size``: leave out smaller groups (0: none);
        ``limit``: at most this many groups (0: all); ``cosine_only``: pairs on cosine alone, without the
        geometric verification CheckDuplicate applies near the threshold."""
        request = dedup_pb2.FindDuplicateGroupsRequest(
            collection=collection, threshold=threshold, top_k=top_k, keep=keep.value, flip_policy=flip_policy.value,
            min_group_size=min_group_size, limit=limit, cosine_only=cosine_only,
        )
        responses = self._stub.FindDuplicateGroups(request, timeout=timeout, metadata=self._metadata)
        try:
            for response in responses:
                yield groups_item_from_proto(response)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.target) from exc
        finally:
            responses.cancel()

    def delete(
        self, ids: Sequence[str], *, collection: str = "", timeout: float | None = None
    ) -> DeleteResult:
        """Remove images by id; ids that were not there come back in ``not_found``."""
        request = dedup_pb2.DeleteImagesRequest(ids=list(ids), collection=collection)
        response = self._unary(self._stub.DeleteImages, request, timeout)
        return delete_from_proto(response)

    def stats(self, *, collection: str = "", timeout: float | None = None) -> StatsResult:
        """Counts per collection ("" = all), the model, the index and the defaults."""
        request = dedup_pb2.GetStatsRequest(collection=collection)
        response = self._unary(self._stub.GetStats, request, timeout)
        return stats_from_proto(response)

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        """Call one unary RPC with the deadline and credentials; gRPC errors become DedupError."""
        try:
            return method(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc, self.target) from exc

    def _deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout
