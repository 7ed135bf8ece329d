"""A generic asyncio micro-batcher: many awaiting callers, one batched call.

Callers `submit()` a payload and await its result. A collector task takes jobs off a *bounded*
queue and releases a batch at once when no batch is in flight (an idle backend should not wait for
company: latency at low load is one call), else when it holds `max_batch_size` jobs or when the
oldest job has waited `max_delay_ms`. At most `max_in_flight` batches run at once; jobs that arrive
while a batch waits for a slot join it. Errors reach every job of the batch
through its future. The batcher knows nothing about images, models or indexes.

A batch runs in the context (contextvars) of its oldest job, as if that caller had made the call:
the batch's trace spans nest under that request's span. Batch sizes and queue depth go to metrics.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from . import metrics
from .config import BatchConfig
from .errors import BackendError, BackendUnavailable, Overloaded

P = TypeVar("P")
R = TypeVar("R")

logger = logging.getLogger(__name__)


@dataclasses.dataclass(slots=True)
class _Job(Generic[P, R]):
    payload: P
    future: asyncio.Future[R]
    enqueued_at: float
    context: contextvars.Context


@dataclasses.dataclass(slots=True)
class BatcherStats:
    batches: int = 0
    items: int = 0
    largest_batch: int = 0

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class MicroBatcher(Generic[P, R]):
    def __init__(
        self,
        process: Callable[[Sequence[P]], Awaitable[Sequence[R]]],
        config: BatchConfig,
        *,
        name: str,
    ) -> None:
        self._process = process
        self._config = config
        self._name = name
        self._queue: asyncio.Queue[_Job[P, R]] = asyncio.Queue(maxsize=config.max_queue)
        self._in_flight = asyncio.Semaphore(config.max_in_flight)
        self._running: set[asyncio.Task[None]] = set()
        self._collector: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = BatcherStats()
        metrics.QUEUE_DEPTH.labels(name).set_function(self._queue.qsize)

    @property
    def name(self) -> str:
        return self._name

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._collector is None:
            self._collector = asyncio.create_task(self._collect(), name=f"batcher-{self._name}")

    async def submit(self, payload: P, *, wait_for_room: bool = False) -> R:
        """Queue one payload and await its result.

        A full queue raises Overloaded at once, unless `wait_for_room` (streams use it: they apply
        backpressure to their client instead of failing items).
        """
        if self._closed:
            raise BackendUnavailable(f"{self._name} batcher is shutting down")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        job = _Job(payload, future, time.monotonic(), contextvars.copy_context())
        if wait_for_room:
            await self._queue.put(job)
        else:
            try:
                self._queue.put_nowait(job)
            except asyncio.QueueFull:
                raise Overloaded(
                    f"{self._name} queue is full ({self._config.max_queue} waiting): retry later"
                ) from None
        return await future

    async def close(self) -> None:
        """Stop accepting work, finish what is queued and running, then stop the collector."""
        self._closed = True
        await self._queue.join()  # every queued job has been through _run
        if self._collector is not None:
            self._collector.cancel()
            try:
                await self._collector
            except asyncio.CancelledError:
                pass
            self._collector = None

    async def _collect(self) -> None:
        max_delay = self._config.max_delay_ms / 1000.0
        while True:
            first = await self._queue.get()
            batch = [first]
            self._take_queued(batch)
            deadline = first.enqueued_at + max_delay
            # Nothing in flight: the backend is idle, so waiting for company would only add latency (a lone
            # request goes at once). While batches run, jobs wait up to max_delay to ride together.
            while self._running and len(batch) < self._config.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
                self._take_queued(batch)
            # Waiting here (not before collecting) lets the next batch fill while one runs; what arrived while
            # waiting for a slot rides along.
            await self._in_flight.acquire()
            self._take_queued(batch)
            # Context.run: create_task copies the current context (its context= argument needs Python 3.11).
            task = first.context.run(asyncio.create_task, self._run(batch), name=f"batch-{self._name}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _take_queued(self, batch: list[_Job[P, R]]) -> None:
        """Move jobs already queued into ``batch``, up to max_batch_size, without waiting."""
        while len(batch) < self._config.max_batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except asyncio.QueueEmpty:
                return

    async def _run(self, batch: list[_Job[P, R]]) -> None:
        try:
            live = [job for job in batch if not job.future.done()]  # callers that gave up are skipped
            if not live:
                return
            self.stats.batches += 1
            self.stats.items += len(live)
            self.stats.largest_batch = max(self.stats.largest_batch, len(live))
            metrics.BATCH_SIZE.labels(self._name).observe(len(live))
            try:
                results = await self._process([job.payload for job in live])
                if len(results) != len(live):
                    raise BackendError(
                        f"{self._name}: batch of {len(live)} returned {len(results)} results"
                    )
            except Exception as exc:
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(exc)
                return
            for job, result in zip(live, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
        finally:
            self._in_flight.release()
            for _ in batch:
                self._queue.task_done()
