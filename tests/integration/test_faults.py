"""Backend faults against real processes: Triton or Milvus killed mid-stream and restarted, and backends that
hang (SIGSTOP). Affected items are retried within their deadline or reported FAILED/UNAVAILABLE, health flips
NOT_SERVING and back by itself, and nothing acknowledged is lost.

The stack here is this module's own (free ports, its own dirs): the session's Triton and Milvus, which other
tests share, are never touched.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from dedup_client import DedupClient, DedupError, IndexStatus
from dedup_load.audit import MilvusAudit
from dedup_load.health import SERVING, HealthLog
from dedup_stack.killable import KillableStack

from tests.integration.fault_kit import distinct_images, items

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ITEMS = 30


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KillableStack]:
    # Long enough to ride out a Milvus restart (measured ~10 s to serve + ~5 s to reload its collections).
    with KillableStack(tmp_path_factory.mktemp("faults"), front_overrides={"DEDUP_BACKEND_WAIT_S": "90"}) as stack:
        yield stack


@pytest.fixture(scope="module")
def stored(stack: KillableStack) -> Iterator[MilvusAudit]:
    reader = MilvusAudit(stack.milvus_uri)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def images(eval_dir: Path) -> list[bytes]:
    return distinct_images(eval_dir, ITEMS)


def _restart_after_not_serving(stack: KillableStack, health: HealthLog, backend: str, since: float) -> None:
    health.wait_for("NOT_SERVING", since=since, timeout_s=30)
    if backend == "triton":
        stack.start_triton()
    else:
        stack.start_milvus()


@pytest.mark.parametrize("backend", ["triton", "milvus"])
def test_backend_killed_mid_stream_items_are_retried_and_health_recovers(
    stack: KillableStack, stored: MilvusAudit, images: list[bytes], backend: str
) -> None:
    collection = f"killed_{backend}"
    sent = items(images, prefix=backend, collection=collection)
    results = {}
    restarter: threading.Thread | None = None
    with HealthLog(stack.target) as health, DedupClient(stack.target) as client:
        health.wait_for(SERVING)
        for result in client.index(sent):
            results[result.id] = result
            if len(results) == 5:  # the other items are in flight in the front
                killed_at = time.monotonic()
                stack.kill(backend)
                restarter = threading.Thread(
                    target=_restart_after_not_serving, args=(stack, health, backend, killed_at)
                )
                restarter.start()
        assert restarter is not None
        restarter.join()
        health.wait_for(SERVING, since=killed_at, timeout_s=60)
    assert len(results) == ITEMS
    failed = {r.id: r.error for r in results.values() if r.status is not IndexStatus.INDEXED}
    assert failed == {}, "the restart took less than DEDUP_BACKEND_WAIT_S: every item should have been retried"
    # Acknowledged = stored, exactly once, also the 5 acknowledged before the kill.
    assert sorted(stored.ids(collection)) == sorted(item.id for item in sent)


def test_hung_backends_answer_unavailable_within_the_deadline_then_recover(
    stack: KillableStack, images: list[bytes]
) -> None:
    collection = "hung"
    with HealthLog(stack.target) as health, DedupClient(stack.target) as client:
        health.wait_for(SERVING)
        assert client.check(images[0], collection=collection, insert_if_unique=True, id="first").inserted

        for backend in ("triton", "milvus"):
            paused_at = time.monotonic()
            stack.pause(backend)
            with ThreadPoolExecutor(1) as patient_caller:
                try:
                    # A caller with time to spare is answered once the backend is back.
                    patient = patient_caller.submit(client.check, images[0], collection=collection, timeout=40)
                    # Milvus is paused only briefly: its components exit when their etcd leases (10 s) run out.
                    started = time.monotonic()
                    with pytest.raises(DedupError) as caught:
                        client.check(images[1], collection=collection, timeout=3)
                    elapsed = time.monotonic() - started
                    assert caught.value.code == "UNAVAILABLE", caught.value
                    assert elapsed < 3, f"{backend}: answered after {elapsed:.1f} s, past the caller's deadline"
                    if backend == "triton":
                        # A stream item within the stream's deadline: FAILED, and the stream still ends normally.
                        [result] = client.index(items(images[2:3], prefix="hung", collection=collection), timeout=3)
                        assert result.status is IndexStatus.FAILED and "Triton" in result.error, result
                        # The front lets go of what it held of Triton (shared memory) while the call waits.
                        health.wait_for("NOT_SERVING", since=paused_at, timeout_s=15)
                finally:
                    stack.resume(backend)
                assert patient.result(timeout=40).matches[0].id == "first"
            health.wait_until(SERVING, timeout_s=30)  # a brief Milvus pause may not flip it at all
            assert client.check(images[0], collection=collection, timeout=30).matches[0].id == "first"
