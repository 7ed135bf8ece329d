"""Run an async function over an async stream with at most `window` calls in flight.

Results come out as they complete (not in input order). Reading the source pauses while the
window is full, which is how a fast client is slowed to the server's pace instead of piling
items up in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


async def map_unordered(
    source: AsyncIterator[T], call: Callable[[T], Awaitable[R]], *, window: int
) -> AsyncIterator[R]:
    results: asyncio.Queue[object] = asyncio.Queue()
    slots = asyncio.Semaphore(window)
    tasks: set[asyncio.Task[None]] = set()

    async def run(item: T) -> None:
        try:
            await results.put(await call(item))
        finally:
            slots.release()

    async def feed() -> None:
        try:
            async for item in source:
                await slots.acquire()
                task = asyncio.create_task(run(item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            await results.put(_DONE)

    feeder = asyncio.create_task(feed())
    try:
        while (result := await results.get()) is not _DONE:
            yield result  # type: ignore[misc]
        await feeder  # re-raises an error of the source (e.g. the client went away)
    finally:
        feeder.cancel()
        for task in list(tasks):
            task.cancel()
