"""The write locks of coordination/ against a real etcd (Debian's etcd-server): exclusion, hand-over, fencing.

No Milvus or Triton here: several EtcdCoordinators in one process stand for several fronts (each has its own
lease, channel and front id, as separate processes would). Lease TTLs are etcd's minimum, 2 s, to keep it short.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from dedup_server.config import CoordinationConfig
from dedup_server.coordination import EtcdCoordinator, LeasedDeadline
from dedup_server.deadline import Deadline
from dedup_server.errors import BackendUnavailable
from dedup_stack.etcd import EtcdConfig, EtcdProcess

pytestmark = pytest.mark.integration

TTL_S = 2
_prefixes = itertools.count()


@pytest.fixture
async def fronts(etcd: EtcdProcess) -> AsyncIterator[Callable[..., EtcdCoordinator]]:
    """Coordinators ("fronts") on one etcd, under a prefix of this test's own; closed at the end."""
    prefix = f"/test-{time.monotonic_ns()}-{next(_prefixes)}/"
    made: list[EtcdCoordinator] = []

    def make(name: str, endpoint: str | None = None, **overrides: object) -> EtcdCoordinator:
        config = CoordinationConfig(
            endpoints=(endpoint or etcd.endpoint,), prefix=prefix, lease_ttl_s=TTL_S, margin_s=0.3,
            **overrides,  # type: ignore[arg-type]
        )
        coordinator = EtcdCoordinator(config, front_id=name)
        made.append(coordinator)
        return coordinator

    yield make
    for coordinator in made:
        await coordinator.close()


def deadline(seconds: float = 10.0) -> Deadline:
    return Deadline.after(seconds)


async def test_one_front_keeps_its_lock_between_batches(fronts: Callable[..., EtcdCoordinator]) -> None:
    a = fronts("a")
    async with a.turn("c", deadline()) as first:
        assert first.fresh  # just taken: search Strong
        assert isinstance(first.deadline, LeasedDeadline)
        assert 0 < first.deadline.timeout(30.0) <= TTL_S
    for _ in range(5):
        async with a.turn("c", deadline()) as turn:
            assert not turn.fresh  # still held: only fenced, Session reads as a single front
    assert (a.stats.acquisitions, a.stats.turns, a.stats.releases) == (1, 6, 0)
    assert a.stats.mean_ms_per_turn < 50


async def test_turns_of_several_fronts_never_overlap(fronts: Callable[..., EtcdCoordinator]) -> None:
    coordinators = [fronts(name) for name in ("a", "b", "c")]
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    order: list[str] = []

    async def writer(coordinator: EtcdCoordinator, batches: int) -> None:
        for _ in range(batches):
            async with coordinator.turn("shared", deadline()):
                inside.append(coordinator.front_id)
                if len(inside) > 1:
                    overlaps.append(tuple(inside))
                order.append(coordinator.front_id)
                await asyncio.sleep(0.01)  # the batch's Milvus calls
                inside.remove(coordinator.front_id)

    await asyncio.wait_for(asyncio.gather(*(writer(c, 8) for c in coordinators)), 60)
    assert overlaps == []
    assert sorted(order) == sorted(["a", "b", "c"] * 8)
    # Contended fronts hand over after a batch (FIFO): nobody writes all of its batches before the others start.
    first_run = len(list(itertools.takewhile(lambda name: name == order[0], order)))
    assert first_run < 8, order
    assert sum(c.stats.waits for c in coordinators) > 0


async def test_an_idle_holder_hands_over_at_once(fronts: Callable[..., EtcdCoordinator]) -> None:
    a, b = fronts("a"), fronts("b")
    async with a.turn("c", deadline()):
        pass
    started = time.monotonic()
    async with b.turn("c", deadline()) as turn:
        assert turn.fresh
    assert time.monotonic() - started < 1.0  # a's watch saw b queue up and released; no lease expiry waited for
    async with a.turn("c", deadline()) as again:
        assert again.fresh  # b wrote in between: a must read Strong again


async def test_a_dead_holder_blocks_writes_for_one_lease_ttl(fronts: Callable[..., EtcdCoordinator]) -> None:
    a, b = fronts("a"), fronts("b")
    async with a.turn("c", deadline()):
        pass
    _die(a)
    started = time.monotonic()
    async with b.turn("c", deadline()) as turn:
        waited = time.monotonic() - started
        assert turn.fresh
    assert 0.5 < waited < TTL_S + 2.0, waited


async def test_a_holder_paused_past_its_lease_writes_nothing(fronts: Callable[..., EtcdCoordinator]) -> None:
    a, b = fronts("a"), fronts("b")
    async with a.turn("c", deadline()) as turn:
        assert turn.deadline.timeout(30.0) > 0
        _die(a)  # what SIGSTOP does to the lease: no refresh goes out
        b_turn = asyncio.create_task(_enter_and_leave(b, "c"))
        await asyncio.sleep(TTL_S + 0.5)  # paused past the lease
        with pytest.raises(BackendUnavailable, match="write lease ended"):
            turn.deadline.timeout(30.0)  # the next Milvus call is refused, not sent
        assert await asyncio.wait_for(b_turn, TTL_S + 3)  # etcd expired a's key: b took the lock


async def test_a_paused_holder_takes_the_lock_again_after_waking(fronts: Callable[..., EtcdCoordinator]) -> None:
    a, b = fronts("a"), fronts("b")
    async with a.turn("c", deadline()):
        pass
    _pause_refreshes(a)
    await asyncio.sleep(TTL_S + 0.5)
    async with b.turn("c", deadline()) as turn_b:
        assert turn_b.fresh
    async with a.turn("c", deadline()) as turn_a:  # its fence fails (key gone): it re-acquires, behind b
        assert turn_a.fresh
        assert turn_a.deadline.timeout(30.0) > 0


async def test_waiting_past_the_deadline_is_unavailable_and_leaves_the_queue(
    fronts: Callable[..., EtcdCoordinator],
) -> None:
    a, b, c = fronts("a"), fronts("b"), fronts("c")
    release = asyncio.Event()

    async def hold() -> None:
        async with a.turn("c", deadline()):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match="waited for another front"):
        async with b.turn("c", deadline(1.0)):
            pass
    assert time.monotonic() - started < 1.5
    release.set()
    await holder
    async with c.turn("c", deadline(2.0)) as turn:  # b left the queue: c does not wait for it
        assert turn.fresh


async def test_etcd_down_fails_writes_within_the_deadline(tmp_path: Path) -> None:
    process = EtcdProcess(EtcdConfig.on_free_ports(tmp_path / "etcd"))
    process.start()
    coordinator = EtcdCoordinator(
        CoordinationConfig(endpoints=(process.endpoint,), lease_ttl_s=TTL_S, margin_s=0.3), front_id="a"
    )
    try:
        async with coordinator.turn("c", deadline()):
            pass
        process.stop()
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            async with coordinator.turn("c", deadline(1.5)) as turn:
                turn.deadline.timeout(30.0)  # a lease that may have lapsed is not written under
                await asyncio.sleep(TTL_S + 0.5)
                turn.deadline.timeout(30.0)
        assert time.monotonic() - started < TTL_S + 1.5
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="etcd"):
            async with coordinator.turn("c", deadline(1.5)):
                pass
        assert time.monotonic() - started < 2.5
    finally:
        await coordinator.close()
        process.stop()


async def _enter_and_leave(coordinator: EtcdCoordinator, collection: str) -> bool:
    async with coordinator.turn(collection, deadline()):
        return True


def _die(coordinator: EtcdCoordinator) -> None:
    """Stop refreshing and never release: the lease runs out in etcd as it does for a killed front."""
    _pause_refreshes(coordinator)
    for held in coordinator._held.values():
        if held.watcher is not None:
            held.watcher.cancel()
    coordinator._held.clear()


def _pause_refreshes(coordinator: EtcdCoordinator) -> None:
    task = coordinator._leases._task
    assert task is not None
    task.cancel()
    coordinator._leases._task = None
