"""A thin asyncio client of etcd's v3 gRPC API: the few calls the write locks need, each with its own timeout.

The generated stubs and messages come from the `aetcd` package (`aetcd.rpc`); its high-level client is not used,
because it has one timeout for every call and connects lazily behind our back. Here the channel is explicit
(keepalive, reconnect backoff), every call takes the timeout its caller can afford, and failures become domain
errors: an etcd that cannot be reached is `BackendUnavailable` (UNAVAILABLE), anything else `BackendError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from ..errors import BackendError, BackendUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

_UNREACHABLE = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,  # a connection reset mid-call surfaces as UNKNOWN
})

# Range sort: etcd's enums, named here so that call sites read as the recipe does.
ASCEND, DESCEND = rpc.RangeRequest.ASCEND, rpc.RangeRequest.DESCEND
BY_CREATE_REVISION = rpc.RangeRequest.CREATE


def grpc_target(endpoints: Sequence[str]) -> str:
    """gRPC target for etcd's client URLs (`host:port`, `http://host:port`): one member, or IP literals of several."""
    hosts = [endpoint.removeprefix("http://").rstrip("/") for endpoint in endpoints]
    if len(hosts) == 1:
        return hosts[0]
    for host in hosts:
        try:
            ipaddress.ip_address(host.rsplit(":", 1)[0].strip("[]"))
        except ValueError:
            raise ValueError(
                f"several etcd endpoints must be IP addresses ({host!r} is not); give one DNS name that resolves "
                "to every member instead (dns:///etcd:2379)"
            ) from None
    scheme = "ipv6" if any(host.startswith("[") for host in hosts) else "ipv4"
    return f"{scheme}:{','.join(hosts)}"  # gRPC tries them in order (pick_first)


def prefix_end(prefix: bytes) -> bytes:
    """The range end that selects every key starting with `prefix` (etcd's convention)."""
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


def compare_created(key: bytes, revision: int) -> Any:
    """Compare: `key` exists with this create revision (0: `key` does not exist)."""
    return rpc.Compare(result=rpc.Compare.EQUAL, target=rpc.Compare.CREATE, key=key, create_revision=revision)


def put(key: bytes, value: bytes, lease: int = 0) -> Any:
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def delete(key: bytes) -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))


def get(key: bytes, **options: Any) -> Any:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key, **options))


def first_created(prefix: bytes, **options: Any) -> Any:
    """Range op: the key under `prefix` created first (the lock's owner); its response counts every key there."""
    return get(prefix, range_end=prefix_end(prefix), sort_target=BY_CREATE_REVISION, sort_order=ASCEND, limit=1,
               **options)


class EtcdClient:
    """One long-lived gRPC channel to etcd; close() it."""

    def __init__(self, endpoints: Sequence[str], *, call_timeout_s: float = 2.0) -> None:
        self.target = grpc_target(endpoints)
        self._call_timeout_s = call_timeout_s
        self._channel = grpc.aio.insecure_channel(
            self.target,
            options=[
                # Notice a dead member within seconds rather than at the next call's timeout.
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
                # Reconnect soon after etcd comes back (gRPC's default backoff grows to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2_000),
            ],
        )
        self._kv = rpc.KVStub(self._channel)
        self._leases = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)

    def _timeout(self, timeout_s: float | None) -> float:
        return self._call_timeout_s if timeout_s is None else max(0.01, min(timeout_s, self._call_timeout_s))

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise _domain_error(what, exc) from exc

    async def txn(
        self, compare: Sequence[Any], success: Sequence[Any] = (), failure: Sequence[Any] = (), *,
        timeout_s: float | None = None,
    ) -> Any:
        request = rpc.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return await self._call("transaction", self._kv.Txn(request, timeout=self._timeout(timeout_s)))

    async def range(self, key: bytes, *, timeout_s: float | None = None, **options: Any) -> Any:
        return await self._call(
            "range", self._kv.Range(rpc.RangeRequest(key=key, **options), timeout=self._timeout(timeout_s))
        )

    async def grant(self, ttl_s: int, *, timeout_s: float | None = None) -> tuple[int, int]:
        """A new lease: (id, granted TTL in seconds)."""
        reply = await self._call(
            "lease grant", self._leases.LeaseGrant(rpc.LeaseGrantRequest(TTL=ttl_s), timeout=self._timeout(timeout_s))
        )
        if reply.error:
            raise BackendError(f"etcd refused a lease: {reply.error}")
        return int(reply.ID), int(reply.TTL)

    async def keepalive(self, lease_id: int, *, timeout_s: float | None = None) -> int:
        """Refresh a lease; returns its TTL in seconds, 0 when etcd no longer has it (expired or revoked).

        One short stream per refresh (a new HTTP/2 stream on the same connection): a stream kept open would carry
        state across timeouts and process pauses, where an answer that comes late could be taken for the next."""
        call = self._leases.LeaseKeepAlive(timeout=self._timeout(timeout_s))
        try:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            reply = await call.read()
        except grpc.aio.AioRpcError as exc:
            raise _domain_error("lease keepalive", exc) from exc
        except (asyncio.InvalidStateError, grpc.aio.UsageError) as exc:  # the call ended before the write
            code = await call.code()
            reason = code.name if code is not None else type(exc).__name__
            raise BackendUnavailable(f"etcd lease keepalive failed: {reason}") from exc
        finally:
            call.cancel()
        if reply is grpc.aio.EOF:
            raise BackendUnavailable("etcd closed the lease keepalive stream")
        return int(reply.TTL)

    async def revoke(self, lease_id: int, *, timeout_s: float | None = None) -> None:
        """Revoke a lease: etcd deletes every key attached to it at once."""
        await self._call(
            "lease revoke",
            self._leases.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease_id), timeout=self._timeout(timeout_s)),
        )

    async def wait_deleted(self, key: bytes, *, after_revision: int, timeout_s: float) -> bool:
        """Wait until `key` is deleted at a revision after `after_revision`; False when `timeout_s` passed first."""
        try:
            async with asyncio.timeout(timeout_s), contextlib.aclosing(
                self.events(key, start_revision=after_revision + 1, deletes=True)
            ) as events:
                async for event in events:
                    if event.type == rpc.Event.DELETE:
                        return True
        except TimeoutError:
            return False
        return True  # the watch ended without an event (compacted history): look again

    async def events(
        self, key: bytes, *, start_revision: int, prefix: bool = False, deletes: bool = False
    ) -> AsyncGenerator[Any, None]:
        """Events on `key` (every key under it when `prefix`) from `start_revision`: deletions when `deletes`,
        else puts. Ends when etcd cancels the watch (e.g. the revision was compacted). Iterate it inside
        `contextlib.aclosing`, so that leaving early closes the watch at once."""
        create = rpc.WatchCreateRequest(
            key=key, range_end=prefix_end(key) if prefix else b"", start_revision=start_revision,
            filters=[rpc.WatchCreateRequest.NOPUT if deletes else rpc.WatchCreateRequest.NODELETE],
        )
        call = self._watch.Watch()
        try:
            await call.write(rpc.WatchRequest(create_request=create))
            while True:
                reply = await call.read()
                if reply is grpc.aio.EOF or reply.canceled or reply.compact_revision:
                    return
                for event in reply.events:
                    yield event
        except grpc.aio.AioRpcError as exc:
            raise _domain_error("watch", exc) from exc
        except (asyncio.InvalidStateError, grpc.aio.UsageError):
            return  # the call was cancelled (the watcher is being stopped) before or while it wrote: no events
        finally:
            call.cancel()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._channel.close()


def _domain_error(what: str, exc: grpc.aio.AioRpcError) -> Exception:
    message = f"etcd {what} failed: {exc.code().name} {exc.details() or ''}".rstrip()
    if exc.code() in _UNREACHABLE:
        return BackendUnavailable(message)
    return BackendError(message)
