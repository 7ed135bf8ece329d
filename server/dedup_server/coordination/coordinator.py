"""Whose turn is it to write a collection? One front at a time, across every front that shares the Milvus.

Why a lock with fencing and not routing to a leader: every front can then serve every request (a load balancer
needs no affinity, and no front forwards bytes to another), a front that dies costs the others one lease TTL, and
the only new moving part is etcd, which every Milvus deployment already runs.

The lock of a collection is etcd's lock recipe (what `etcdctl lock` does): each contender puts a key under
`<prefix>write-locks/<collection>/`, attached to its lease; the key created first owns the lock; the others each
watch the key created just before theirs and look again when it is deleted (FIFO, no thundering herd). A key goes
away when its front releases it, when its lease expires (the front died or stopped refreshing), or when the
front shuts down and revokes its lease.

Per write batch (never per image):

* the holder checks in one transaction that its key still exists with the create revision it got (the fencing
  token) — about half a millisecond here — and learns in the same answer whether anyone waits;
* every Milvus call of the batch takes its timeout from a `LeasedDeadline`, which ends a margin before the lease
  could expire, and is refused once it has: a holder paused past its lease writes nothing when it wakes, and its
  keys have been deleted by etcd before anyone else could own the lock;
* a holder keeps the lock between batches (no hand-over cost while it writes alone) and releases it after the
  batch in which it saw a contender, or at once when idle (a watch tells it); it then queues behind them.

The first batch after taking the lock searches Milvus with Strong consistency: another front may have written
just before, and Milvus' Session consistency only covers this client's own writes. Later batches of the same
holding read Session, as a single front always has.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ..config import CoordinationConfig
from ..deadline import Deadline, retry_async
from ..errors import BackendUnavailable, DedupError
from ..metrics import WRITE_COORDINATION_SECONDS, WRITE_LOCK_WAIT_SECONDS
from . import etcd
from .etcd import EtcdClient
from .lease import LeasedDeadline, LeaseKeeper

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class WriteTurn:
    """This front may write the collection until `deadline` (the caller's, cut to the lease)."""

    deadline: Deadline
    fresh: bool  # the lock was just taken: another front may have written, search with Strong consistency


class WriteCoordinator(Protocol):
    def turn(self, collection: str, deadline: Deadline) -> AbstractAsyncContextManager[WriteTurn]: ...

    async def close(self) -> None: ...


class LocalCoordinator:
    """One front: its write batcher runs one batch at a time, which is all the serialisation it needs."""

    @contextlib.asynccontextmanager
    async def turn(self, collection: str, deadline: Deadline) -> AsyncIterator[WriteTurn]:
        yield WriteTurn(deadline=deadline, fresh=False)

    async def close(self) -> None:
        return None


@dataclasses.dataclass(slots=True)
class CoordinationStats:
    turns: int = 0
    acquisitions: int = 0  # turns that had to take the lock (the others only fenced)
    waits: int = 0  # acquisitions that queued behind another front
    releases: int = 0
    etcd_seconds: float = 0.0  # spent in fencing and acquiring, waits for other fronts excluded
    wait_seconds: float = 0.0

    @property
    def mean_ms_per_turn(self) -> float:
        return 1000 * self.etcd_seconds / self.turns if self.turns else 0.0


@dataclasses.dataclass(slots=True)
class _Held:
    key: bytes
    revision: int  # create revision of our key: the fencing token
    lease_id: int
    contended: bool = False  # another front waits: release after the batch
    busy: bool = False  # a turn is in progress
    watcher: asyncio.Task[None] | None = None


class EtcdCoordinator:
    """Per-collection write locks in etcd, held under this front's lease."""

    def __init__(
        self, config: CoordinationConfig, *, client: EtcdClient | None = None, front_id: str | None = None
    ) -> None:
        self._config = config
        self._client = client or EtcdClient(config.endpoints, call_timeout_s=config.call_timeout_s)
        self.front_id = front_id or f"{socket.gethostname()}-{os.getpid()}"
        self._leases = LeaseKeeper(
            self._client, ttl_s=config.lease_ttl_s, call_timeout_s=config.call_timeout_s, on_lost=self._lease_lost
        )
        self._held: dict[str, _Held] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks
        self.stats = CoordinationStats()

    @property
    def target(self) -> str:
        return self._client.target

    def _prefix(self, collection: str) -> bytes:
        return f"{self._config.prefix}write-locks/{collection}/".encode()

    @contextlib.asynccontextmanager
    async def turn(self, collection: str, deadline: Deadline) -> AsyncIterator[WriteTurn]:
        lock = self._locks.setdefault(collection, asyncio.Lock())
        async with lock:
            held, fresh = await retry_async(
                functools.partial(self._hold, collection, deadline), deadline,
                cap_s=self._config.call_timeout_s, what=f"etcd write lock of {collection}",
            )
            held.busy = True
            try:
                yield WriteTurn(
                    deadline=LeasedDeadline(deadline.at, keeper=self._leases, lease_id=held.lease_id,
                                            margin_s=self._config.margin_s),
                    fresh=fresh,
                )
            finally:
                held.busy = False
                if held.contended and self._held.get(collection) is held:
                    await self._release(collection, held)

    async def _hold(self, collection: str, deadline: Deadline, timeout_s: float) -> tuple[_Held, bool]:
        """Fence the lock when this front holds it (fresh=False), else take it, queueing behind others (True)."""
        started = time.monotonic()
        waited = 0.0
        step = "fence"
        try:
            lease_id = await self._leases.ensure(deadline, self._config.margin_s)
            held = self._held.get(collection)
            if held is not None and held.lease_id == lease_id:
                prefix = self._prefix(collection)
                reply = await self._client.txn(
                    [etcd.compare_created(held.key, held.revision)],
                    [etcd.get(prefix, range_end=etcd.prefix_end(prefix), count_only=True)],
                    timeout_s=timeout_s,
                )
                if reply.succeeded:
                    held.contended = held.contended or reply.responses[0].response_range.count > 1
                    return held, False
                logger.warning("write lock of %s was lost (its key is gone): taking it again", collection)
                self._forget(collection)
            step = "acquire"
            held, waited = await self._acquire(collection, lease_id, deadline)
            return held, True
        finally:
            self.stats.turns += 1
            self.stats.etcd_seconds += time.monotonic() - started - waited
            self.stats.wait_seconds += waited
            WRITE_COORDINATION_SECONDS.labels(step).observe(time.monotonic() - started - waited)
            if waited:
                WRITE_LOCK_WAIT_SECONDS.observe(waited)

    async def _acquire(self, collection: str, lease_id: int, deadline: Deadline) -> tuple[_Held, float]:
        prefix = self._prefix(collection)
        key = prefix + f"{self.front_id}-{lease_id:x}".encode()
        reply = await self._client.txn(
            [etcd.compare_created(key, 0)],
            [etcd.put(key, self.front_id.encode(), lease_id), etcd.first_created(prefix)],
            [etcd.get(key), etcd.first_created(prefix)],  # queued already (an earlier try gave up waiting)
            timeout_s=deadline.timeout(self._config.call_timeout_s),
        )
        if reply.succeeded:
            revision = reply.header.revision
        else:
            revision = reply.responses[0].response_range.kvs[0].create_revision
        owner = reply.responses[1].response_range
        header_revision = reply.header.revision
        waited = 0.0
        while not owner.kvs or owner.kvs[0].create_revision != revision:
            started = time.monotonic()
            await self._wait_for_predecessor(collection, prefix, key, revision, deadline)
            waited += time.monotonic() - started
            check = await self._client.txn(
                [etcd.compare_created(key, revision)], [etcd.first_created(prefix)],
                timeout_s=deadline.timeout(self._config.call_timeout_s),
            )
            if not check.succeeded:
                raise BackendUnavailable(f"this front's lease ended while it waited for the write lock of {collection}")
            owner, header_revision = check.responses[0].response_range, check.header.revision
        self.stats.acquisitions += 1
        self.stats.waits += waited > 0
        held = _Held(key=key, revision=revision, lease_id=lease_id, contended=owner.count > 1)
        held.watcher = asyncio.create_task(
            self._watch_contenders(collection, held, header_revision), name=f"write-lock-{collection}"
        )
        self._tasks.add(held.watcher)
        held.watcher.add_done_callback(self._tasks.discard)
        self._held[collection] = held
        logger.debug("took the write lock of %s (revision %d, waited %.3f s)", collection, revision, waited)
        return held, waited

    async def _wait_for_predecessor(
        self, collection: str, prefix: bytes, key: bytes, revision: int, deadline: Deadline
    ) -> None:
        before = await self._client.range(
            prefix, range_end=etcd.prefix_end(prefix), max_create_revision=revision - 1,
            sort_target=etcd.BY_CREATE_REVISION, sort_order=etcd.DESCEND, limit=1,
            timeout_s=deadline.timeout(self._config.call_timeout_s),
        )
        if not before.kvs:
            return  # gone already: look at the owner again
        holder = before.kvs[0].value.decode(errors="replace")
        if await self._client.wait_deleted(
            before.kvs[0].key, after_revision=before.header.revision, timeout_s=max(0.0, deadline.remaining())
        ):
            return
        with contextlib.suppress(DedupError):  # leave the queue, so that nobody waits for us in turn
            await self._client.txn([etcd.compare_created(key, revision)], [etcd.delete(key)],
                                   timeout_s=self._config.call_timeout_s)
        raise BackendUnavailable(
            f"the writes of collection {collection} waited for another front ({holder}) until the deadline: "
            "it holds the collection's write lock (a front that died holds it until its etcd lease expires)"
        )

    async def _watch_contenders(self, collection: str, held: _Held, after_revision: int) -> None:
        """Note the first other contender that queues up; release at once if no turn is in progress."""
        prefix = self._prefix(collection)
        try:
            async with contextlib.aclosing(
                self._client.events(prefix, start_revision=after_revision + 1, prefix=True)
            ) as events:
                async for event in events:
                    if event.kv.key != held.key:
                        break
        except DedupError:
            pass  # etcd unreachable: hand over as soon as it can be done
        except asyncio.CancelledError:
            return
        held.contended = True
        async with self._locks[collection]:
            if self._held.get(collection) is held and not held.busy:
                await self._release(collection, held)

    async def _release(self, collection: str, held: _Held) -> None:
        self._forget(collection)
        try:
            await self._client.txn([etcd.compare_created(held.key, held.revision)], [etcd.delete(held.key)],
                                   timeout_s=self._config.call_timeout_s)
        except DedupError as exc:  # the next turn finds the key again, or the lease takes it away
            logger.warning("could not release the write lock of %s: %s", collection, exc)
            return
        self.stats.releases += 1

    def _forget(self, collection: str) -> None:
        held = self._held.pop(collection, None)
        if held is not None and held.watcher is not None and held.watcher is not asyncio.current_task():
            held.watcher.cancel()

    def _lease_lost(self, lease_id: int) -> None:
        for collection, held in list(self._held.items()):
            if held.lease_id == lease_id:
                self._forget(collection)

    async def close(self) -> None:
        """Revoke the lease (etcd deletes every lock this front holds or waits for at once), close the channel."""
        for collection in list(self._held):
            self._forget(collection)
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._leases.close()
        await self._client.close()
        stats = self.stats
        logger.info(
            "write locks: %d turns, %d acquisitions (%d waited, %.1f s in all), %d releases; etcd %.2f ms per turn",
            stats.turns, stats.acquisitions, stats.waits, stats.wait_seconds, stats.releases, stats.mean_ms_per_turn,
        )


def coordinator_for(config: CoordinationConfig) -> WriteCoordinator:
    """etcd when endpoints are configured, else local (one front)."""
    return EtcdCoordinator(config) if config.enabled else LocalCoordinator()
