"""Exactly-once ingest, proved by counting: the front (`python -m dedup_server`, a real process) is killed or
stopped mid-stream; every acknowledged item is in Milvus afterwards, and sending the whole stream again leaves
exactly one row per id (client-chosen ids, written by upsert).

The stack here is this module's own (free ports, its own dirs): nothing the other tests share is touched.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dedup_client import DedupClient, DedupError, IndexItem, IndexStatus
from dedup_load.audit import MilvusAudit
from dedup_stack.killable import KillableStack

from tests.integration.fault_kit import distinct_images, items

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ITEMS = 60
GRACE_S = 3.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillableStack]:
    root = tmp_path_factory.mktemp("exactly_once")
    with KillableStack(root, front_grace_s=GRACE_S) as stack:
        yield stack


@pytest.fixture(scope="module")
def stored(stack: KillableStack) -> Iterator[MilvusAudit]:
    reader = MilvusAudit(stack.milvus_uri)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def images(eval_dir: Path) -> list[bytes]:
    return distinct_images(eval_dir, ITEMS)


def _paced(sent: list[IndexItem], pause_s: float) -> Iterator[IndexItem]:
    """The items as a slow client sends them, so that the stream outlives a shutdown grace period."""
    for item in sent:
        yield item
        time.sleep(pause_s)


def _acknowledged_until_the_stream_breaks(
    client: DedupClient, sent: Iterator[IndexItem], on_ack: int, fault: Callable[[], None]
) -> tuple[set[str], str]:
    """Index `sent`; call `fault` at the `on_ack`-th acknowledgement. Returns the acked ids and how it ended."""
    acked: set[str] = set()
    first = next(sent)
    # Stored on its own first: the collection is created (seconds) before the stream starts, so acks flow at once.
    assert client.check(first.image, collection=first.collection, insert_if_unique=True, id=first.id).inserted
    acked.add(first.id)
    try:
        for result in client.index(itertools.chain([first], sent)):  # the first item again, stored once still
            assert result.status is IndexStatus.INDEXED, result
            acked.add(result.id)
            if len(acked) == on_ack:
                fault()
    except DedupError as exc:
        print(f"stream ended {exc.code} after {len(acked)} acknowledgements: {exc.details}")
        return acked, exc.code
    return acked, "OK"


def _assert_exactly_once(
    stored: MilvusAudit, collection: str, acked: set[str], sent: list[IndexItem], client: DedupClient
) -> None:
    before = stored.ids(collection)
    assert len(before) == len(set(before)), "an id is stored twice"
    assert acked <= set(before), f"acknowledged but lost: {sorted(acked - set(before))}"
    # Sending everything again (what a client does after a failure) adds nothing twice.
    results = list(client.index(sent))
    assert sorted(r.id for r in results if r.status is IndexStatus.INDEXED) == sorted(item.id for item in sent)
    after = stored.ids(collection)
    assert sorted(after) == sorted(item.id for item in sent)
    assert stored.count(collection) == len(sent)


def test_front_killed_mid_stream_loses_nothing_acknowledged_and_resending_adds_no_duplicate(
    stack: KillableStack, stored: MilvusAudit, images: list[bytes]
) -> None:
    collection = "front_killed"
    sent = items(images, prefix="killed", collection=collection)
    with DedupClient(stack.target) as client:
        acked, ended = _acknowledged_until_the_stream_breaks(
            client, _paced(sent, 0.05), on_ack=15, fault=lambda: stack.kill("front")
        )
    assert ended == "UNAVAILABLE" and 15 <= len(acked) < ITEMS, (ended, len(acked))
    stack.start_front()
    with DedupClient(stack.target) as client:
        _assert_exactly_once(stored, collection, acked, sent, client)


def test_sigterm_drains_in_flight_items_and_loses_nothing_acknowledged(
    stack: KillableStack, stored: MilvusAudit, images: list[bytes]
) -> None:
    collection = "front_terminated"
    sent = items(images, prefix="terminated", collection=collection)
    exit_codes: list[int] = []
    times: dict[str, float] = {}

    def terminate() -> None:
        times["signalled"] = time.monotonic()
        exit_codes.append(stack.terminate_front(timeout_s=GRACE_S + 10))
        times["exited"] = time.monotonic()

    stop = threading.Thread(target=terminate)
    with DedupClient(stack.target) as client:
        # 0.15 s between items: the stream would need ~9 s, longer than the grace period.
        acked, ended = _acknowledged_until_the_stream_breaks(client, _paced(sent, 0.15), on_ack=10, fault=stop.start)
    stop.join()
    assert exit_codes == [0], "the front did not exit cleanly on SIGTERM"
    # It read no new item after SIGTERM, answered those it had read, ended the stream UNAVAILABLE ("send the
    # rest again") and exited well within the grace period, since no RPC was left open.
    assert ended == "UNAVAILABLE", ended
    assert 10 <= len(acked) < ITEMS
    assert times["exited"] - times["signalled"] < GRACE_S
    stack.start_front()
    with DedupClient(stack.target) as client:
        _assert_exactly_once(stored, collection, acked, sent, client)
