"""This front's etcd lease, and the deadline of a write that must end before the lease could.

The lease is granted when a write first needs it and refreshed every third of its TTL. What matters for fencing is
a lower bound of when etcd will let it expire: a refresh sent at monotonic time t that etcd answers with TTL s
keeps the lease until at least t + s (etcd counts from when it *received* the refresh, which is later). That bound
only moves forward on an answer, so a process that was paused (SIGSTOP, a long GC, a frozen VM) wakes up with a
bound already in the past: every write checks it first and refuses (`LeasedDeadline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable

from ..deadline import Deadline
from ..errors import BackendUnavailable, DedupError
from .etcd import EtcdClient

logger = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(
        self, client: EtcdClient, *, ttl_s: int, call_timeout_s: float, on_lost: Callable[[int], None]
    ) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._call_timeout_s = call_timeout_s
        self._on_lost = on_lost
        self._id: int | None = None
        self._valid_until = -math.inf  # time.monotonic() before which etcd surely still has the lease
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    @property
    def lease_id(self) -> int | None:
        return self._id

    def remaining(self, lease_id: int) -> float:
        """Seconds `lease_id` surely still lives; -inf when it is not this front's lease any more."""
        if lease_id != self._id:
            return -math.inf
        return self._valid_until - time.monotonic()

    async def ensure(self, deadline: Deadline, margin_s: float) -> int:
        """This front's lease id, with more than `margin_s` left: revived or granted within `deadline`."""
        if self._id is not None and self.remaining(self._id) > margin_s:
            return self._id
        async with self._lock:
            if self._id is not None and self.remaining(self._id) > margin_s:
                return self._id
            # Lapsed here (etcd was unreachable, or this process was paused): etcd may have kept it.
            if self._id is not None and await self._refresh(deadline.timeout(self._call_timeout_s)):
                if self.remaining(self._id) > margin_s:
                    return self._id
            sent = time.monotonic()
            lease_id, ttl = await self._client.grant(self._ttl_s, timeout_s=deadline.timeout(self._call_timeout_s))
            self._id, self._valid_until = lease_id, sent + ttl
            logger.info("etcd lease %x granted (TTL %d s)", lease_id, ttl)
            if self._task is None:
                self._task = asyncio.create_task(self._keep_alive(), name="etcd-lease-keepalive")
            return lease_id

    async def _refresh(self, timeout_s: float) -> bool:
        """Refresh the lease; False (and the lease forgotten) when etcd no longer has it."""
        lease_id = self._id
        if lease_id is None:
            return False
        sent = time.monotonic()
        ttl = await self._client.keepalive(lease_id, timeout_s=timeout_s)
        if lease_id != self._id:
            return False  # replaced meanwhile
        if ttl > 0:
            self._valid_until = max(self._valid_until, sent + ttl)
            return True
        logger.warning("etcd lease %x has expired: this front's write locks are gone", lease_id)
        self._id, self._valid_until = None, -math.inf
        self._on_lost(lease_id)
        return False

    async def _keep_alive(self) -> None:
        interval = self._ttl_s / 3
        while True:
            await asyncio.sleep(interval if not self._failing else min(0.5, interval / 3))
            if self._id is None:
                continue
            try:
                # Up to half the TTL: a slow answer still renews the lease (its bound counts from the send).
                await self._refresh(min(self._call_timeout_s, self._ttl_s / 2))
            except DedupError as exc:
                if not self._failing:
                    logger.warning("etcd lease %x: refresh failed (%s); writes stop when it may have expired",
                                   self._id or 0, exc)
                self._failing = True
            else:
                if self._failing:
                    logger.info("etcd lease refreshed again")
                self._failing = False

    async def close(self) -> None:
        """Stop refreshing and revoke the lease: etcd deletes this front's locks at once, others need not wait."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        lease_id, self._id, self._valid_until = self._id, None, -math.inf
        if lease_id is not None:
            try:
                await self._client.revoke(lease_id, timeout_s=self._call_timeout_s)
            except DedupError as exc:
                logger.warning("could not revoke etcd lease %x (%s): its locks go when it expires", lease_id, exc)


@dataclasses.dataclass(frozen=True, slots=True)
class LeasedDeadline(Deadline):
    """A deadline that also ends `margin_s` before the lease could expire; a call past it is refused, not sent.

    Every backend call of a write batch takes its timeout from here (`retry_sync` asks `timeout()` before each
    attempt), so a call's gRPC deadline never lies past the lease: a front paused in the middle of a batch finds
    the deadline of its call already gone when it wakes up, and one paused between calls is refused here.
    """

    keeper: LeaseKeeper = dataclasses.field(compare=False, kw_only=True)
    lease_id: int = dataclasses.field(kw_only=True)
    margin_s: float = dataclasses.field(kw_only=True)

    def remaining(self) -> float:
        return min(self.at - time.monotonic(), self.keeper.remaining(self.lease_id) - self.margin_s)

    def timeout(self, cap_s: float) -> float:
        lease_left = self.keeper.remaining(self.lease_id) - self.margin_s
        if lease_left <= 0:
            raise BackendUnavailable(
                "this front's write lease ended (etcd unreachable, or the process was paused): the batch was not "
                "written; send it again"
            )
        # Deadline.timeout explicitly: zero-argument super() does not work in a slots dataclass.
        return min(Deadline.timeout(self, cap_s), lease_left)
