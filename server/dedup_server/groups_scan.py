"""The pages of a FindDuplicateGroups scan over a large collection: each stored image with its nearest others, found by
the front's self-join (self_join.py) instead of one Milvus search a page.

Three passes, each reported as a third of the scan's progress (in images, so that ``scanned`` ends at ``total``):
read every vector once into a spill file on disk; join (in a thread: BLAS releases the GIL, and the event loop keeps
answering); read the collection again without vectors, a page at a time, and hand each page with its images'
candidates to the same verification and decision as the paged Milvus scan. Closing the generator (a cancelled RPC)
stops whichever pass is running: the join between two blocks, a read after its page; the spill file is removed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .index import Hit, MilvusIndex, StoredImage
from .self_join import JoinConfig, Neighbours, VectorSpill, nearest_others

#: A page of the scan: its images and each one's candidates (itself left out), best first.
Page = tuple[list[StoredImage], list[list[Hit]]]


class ScanTick(NamedTuple):
    """How far a joined scan is, in images (its three passes together): yielded between its pages."""

    scanned: int
    total: int


class Progress:
    """ScanTicks for a three-pass scan, at most one every ``every_s``."""

    def __init__(self, total: int, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(1, total)  # the collection's count until the first pass has counted the rows themselves
        self.every_s = every_s
        self._clock = clock
        self._last = -float("inf")

    def due(self) -> bool:
        if self._clock() - self._last >= self.every_s:
            self._last = self._clock()
            return True
        return False

    def at(self, passes_done: int, fraction: float) -> ScanTick:
        done = (passes_done + min(1.0, max(0.0, fraction))) / 3
        return ScanTick(min(self.total, int(done * self.total)), self.total)

    def counted(self, rows: int) -> None:
        """The first pass has read ``rows`` images: the rest of the scan counts those, not the estimate."""
        self.total = max(1, rows)


async def joined_pages(
    index: MilvusIndex, milvus_name: str, *, total: int, top_k: int, min_similarity: float, page_size: int,
    progress: Progress, spill_dir: Path | None = None, join: JoinConfig | None = None,
) -> AsyncGenerator[Page | ScanTick, None]:
    """Pages of (images, candidates), and ScanTicks between them."""
    spill: VectorSpill | None = None
    ids: list[str] = []
    try:
        batches = index.scan(milvus_name, batch_size=page_size)
        try:
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                if spill is None:
                    spill = VectorSpill(len(batch[0].vector), spill_dir)
                spill.append(np.stack([image.vector for image in batch]))
                ids.extend(image.id for image in batch)
                if progress.due():
                    yield progress.at(0, len(ids) / max(total, 1))
        finally:
            await asyncio.to_thread(batches.close)
        if spill is None:
            return
        progress.counted(len(ids))
        neighbours = Neighbours(np.empty((0, 0), np.int32), np.empty((0, 0), np.float32))
        async for item in _joined(spill, top_k, min_similarity, join or JoinConfig(), progress):
            if isinstance(item, Neighbours):
                neighbours = item
            else:
                yield item
        spill.close()
        spill = None
        row_of = {image_id: row for row, image_id in enumerate(ids)}
        decided = 0
        batches = index.scan(milvus_name, batch_size=page_size, vectors=False)
        try:
            while (batch := await asyncio.to_thread(next, batches, None)) is not None:
                # An image written after the first pass has no neighbours here: the scan misses it, as the paged
                # scan misses images written behind its read position.
                candidates = [
                    [Hit(id=ids[row], similarity=similarity, metadata={})
                     for row, similarity in neighbours.of(row_of[image.id])]
                    if image.id in row_of else []
                    for image in batch
                ]
                yield batch, candidates
                decided += len(batch)
                if progress.due():
                    yield progress.at(2, decided / len(ids))
        finally:
            await asyncio.to_thread(batches.close)
    finally:
        if spill is not None:
            spill.close()


async def _joined(spill: VectorSpill, top_k: int, min_similarity: float, join: JoinConfig, progress: Progress
                  ) -> AsyncGenerator[Neighbours | ScanTick, None]:
    """The join in a thread, with its progress while it runs; stopped between blocks when the caller goes away."""
    stop = threading.Event()
    rows_done = [0]

    def run() -> Neighbours:
        return nearest_others(spill, k=top_k, min_similarity=min_similarity, config=join, should_stop=stop.is_set,
                              progress=lambda done: rows_done.__setitem__(0, done))

    task = asyncio.ensure_future(asyncio.to_thread(run))
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=progress.every_s)
            if progress.due():
                yield progress.at(1, rows_done[0] / max(1, len(spill)))
        yield task.result()
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
