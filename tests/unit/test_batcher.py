from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from dedup_server.batcher import MicroBatcher
from dedup_server.config import BatchConfig
from dedup_server.errors import BackendError, Overloaded


class Recorder:
    def __init__(self, *, gate: asyncio.Event | None = None, fail: bool = False, short: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate
        self.fail = fail
        self.short = short

    async def __call__(self, payloads: Sequence[int]) -> Sequence[int]:
        self.batches.append(list(payloads))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise BackendError("model exploded")
        results = [p * 10 for p in payloads]
        return results[:-1] if self.short else results


async def test_concurrent_submits_are_merged_and_results_routed_back() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, BatchConfig(max_batch_size=8, max_delay_ms=50, max_queue=64), name="t")
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    await batcher.close()
    assert results == [i * 10 for i in range(20)]
    assert [len(b) for b in recorder.batches] == [8, 8, 4]
    assert batcher.stats.mean_batch_size == pytest.approx(20 / 3)


async def test_lone_job_is_released_after_max_delay() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, BatchConfig(max_batch_size=32, max_delay_ms=5, max_queue=64), name="t")
    batcher.start()
    assert await asyncio.wait_for(batcher.submit(7), timeout=2) == 70
    await batcher.close()


async def test_lone_job_on_an_idle_batcher_goes_at_once() -> None:
    recorder = Recorder()
    batcher = MicroBatcher(recorder, BatchConfig(max_batch_size=32, max_delay_ms=10_000, max_queue=64), name="t")
    batcher.start()
    assert await asyncio.wait_for(batcher.submit(7), timeout=1) == 70  # not after the 10 s delay
    await batcher.close()


async def test_jobs_arriving_while_a_batch_runs_ride_together() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate=gate)
    config = BatchConfig(max_batch_size=8, max_delay_ms=50, max_queue=64, max_in_flight=1)
    batcher = MicroBatcher(recorder, config, name="t")
    batcher.start()
    first = asyncio.create_task(batcher.submit(0))
    while not recorder.batches:
        await asyncio.sleep(0.001)
    later = []
    for i in range(1, 6):  # one by one, while the first batch is held
        later.append(asyncio.create_task(batcher.submit(i)))
        await asyncio.sleep(0.002)
    gate.set()
    assert await asyncio.gather(first, *later) == [0, 10, 20, 30, 40, 50]
    await batcher.close()
    assert [len(b) for b in recorder.batches] == [1, 5]


async def test_errors_reach_every_job_of_the_batch() -> None:
    batcher = MicroBatcher(Recorder(fail=True), BatchConfig(max_batch_size=4, max_delay_ms=20, max_queue=8), name="t")
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    await batcher.close()
    assert all(isinstance(r, BackendError) for r in results)


async def test_wrong_result_count_is_an_error_not_a_misroute() -> None:
    batcher = MicroBatcher(Recorder(short=True), BatchConfig(max_batch_size=4, max_delay_ms=20, max_queue=8), name="t")
    batcher.start()
    results = await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)
    await batcher.close()
    assert all(isinstance(r, BackendError) and "returned 2 results" in str(r) for r in results)


async def test_full_queue_answers_overloaded_and_streams_wait_instead() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate=gate)
    config = BatchConfig(max_batch_size=2, max_delay_ms=1, max_queue=2, max_in_flight=1)
    batcher = MicroBatcher(recorder, config, name="t")
    batcher.start()
    running = [asyncio.create_task(batcher.submit(i)) for i in range(2)]  # the batch in flight, held
    while not recorder.batches:
        await asyncio.sleep(0.001)
    held = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]  # the collector's next batch
    await asyncio.sleep(0.01)
    queued = [asyncio.create_task(batcher.submit(i)) for i in (4, 5)]  # fill the queue
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded, match="queue is full"):
        await asyncio.wait_for(batcher.submit(99), timeout=1)
    waiting = asyncio.create_task(batcher.submit(6, wait_for_room=True))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.set()
    assert await asyncio.gather(*running, *held, *queued, waiting) == [0, 10, 20, 30, 40, 50, 60]
    await batcher.close()


async def test_cancelled_callers_are_skipped() -> None:
    gate = asyncio.Event()
    recorder = Recorder(gate=gate)
    config = BatchConfig(max_batch_size=1, max_delay_ms=1, max_queue=8, max_in_flight=1)
    batcher = MicroBatcher(recorder, config, name="t")
    batcher.start()
    first = asyncio.create_task(batcher.submit(1))
    while not recorder.batches:
        await asyncio.sleep(0.001)
    second = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.01)
    second.cancel()
    gate.set()
    assert await first == 10
    await batcher.close()
    assert recorder.batches == [[1]]
