"""Concurrent clients on the real gRPC API (grpc.aio): a mix of CheckDuplicate and IndexStream, for a while.

Each client has its own channel (its own connection, like a separate caller; with several fronts, client n talks
to front n mod N) and loops until the time is up:
a CheckDuplicate of a random photo or transformed copy, or an IndexStream of a few of them under new ids.
Every call is timed and its status code counted; ids the server acknowledged (INDEXED) are kept, so that
`make chaos` can check afterwards that Milvus holds every one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from dedup.v1 import dedup_pb2, dedup_pb2_grpc
from tqdm import tqdm

from .report import OK, LoadReport, RpcStats
from .workload import Workload

CHECK, STREAM = "CheckDuplicate", "IndexStream"
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# After an error a client waits a little, as a real one would, instead of spinning on a refusing server.
_PAUSE_AFTER_S = {"RESOURCE_EXHAUSTED": 0.02}
_PAUSE_AFTER_OTHER_ERRORS_S = 0.1


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadConfig:
    target: str
    targets: tuple[str, ...] = ()  # several fronts to spread the clients over (default: target alone)
    clients: int = 32
    duration_s: float = 60.0
    check_share: float = 0.7  # of operations; the rest are IndexStreams
    stream_items: int = 8
    collection: str = "load"
    timeout_s: float = 30.0  # deadline of each call (of each whole stream)
    seed: int = 0
    run_id: str = dataclasses.field(default_factory=lambda: f"{int(time.time())}")

    def __post_init__(self) -> None:
        if self.clients < 1 or self.duration_s <= 0 or self.stream_items < 1 or not 0 <= self.check_share <= 1:
            raise ValueError(f"invalid load configuration: {self}")

    @property
    def fronts(self) -> tuple[str, ...]:
        return self.targets or (self.target,)


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    at: float  # time.monotonic()
    rpc: str
    code: str
    target: str = ""  # the front that answered (or failed to)


def group_rss_mb(groups: tuple[int, ...]) -> float:
    """Resident memory of every process in these process groups (a front, its workers), MB; 0 when none is left."""
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rfind(")") + 2 :].split()[2]) not in groups:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return round(total_kb / 1024, 1)


class LoadRun:
    def __init__(
        self, config: LoadConfig, workload: Workload, *, front_pid: int | None = None,
        front_pids: tuple[int, ...] = (),
    ) -> None:
        """`front_pid`/`front_pids`: fronts whose memory to sample (each with its workers: its process group)."""
        self.config = config
        self._workload = workload
        self._front_pids = front_pids or ((front_pid,) if front_pid is not None else ())
        self.stats = {CHECK: RpcStats(), STREAM: RpcStats()}
        self.per_front = {target: {CHECK: RpcStats(), STREAM: RpcStats()} for target in config.fronts}
        self.acked: set[str] = set()  # ids IndexStream answered INDEXED (or CheckDuplicate stored)
        self.events: list[Event] = []
        self.rss_mb: list[float] = []
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """End the run early (each client finishes its current call)."""
        self._stopping.set()

    async def run(self, *, mode: str = "normal", progress: bool = True) -> LoadReport:
        fronts = self.config.fronts
        targets = [fronts[n % len(fronts)] for n in range(self.config.clients)]
        channels = [
            grpc.aio.insecure_channel(
                target,
                options=[
                    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                    # A connection of its own (gRPC shares one between channels to a target otherwise): on a front
                    # of several workers, the kernel spreads connections, not calls.
                    ("grpc.use_local_subchannel_pool", 1),
                ],
            )
            for target in targets
        ]
        try:
            stubs = [dedup_pb2_grpc.DeduplicationStub(channel) for channel in channels]
            await self._create_collection(stubs[0])
            started = time.monotonic()
            end = started + self.config.duration_s
            watchers = [asyncio.create_task(self._sample_rss(end)), asyncio.create_task(self._progress(end, progress))]
            await asyncio.gather(*(self._client(n, stub, end, target)
                                   for n, (stub, target) in enumerate(zip(stubs, targets, strict=True))))
            duration = time.monotonic() - started
            for watcher in watchers:
                watcher.cancel()
        finally:
            await asyncio.gather(*(channel.close() for channel in channels))
        return LoadReport(
            mode=mode,
            target=self.config.target,
            clients=self.config.clients,
            duration_s=duration,
            rpcs={name: stats.summary(duration) for name, stats in self.stats.items()},
            front_rss_mb=tuple(self.rss_mb),
            fronts={
                target: {name: stats.summary(duration) for name, stats in rpcs.items()}
                for target, rpcs in self.per_front.items()
            } if len(self.per_front) > 1 else {},
        )

    async def _create_collection(self, stub: dedup_pb2_grpc.DeduplicationStub) -> None:
        """Store one photo first: creating the collection takes seconds and is no part of the load."""
        request = dedup_pb2.CheckDuplicateRequest(
            image=self._workload.images[0], collection=self.config.collection, insert_if_unique=True,
            id=f"{self.config.run_id}-first",
        )
        await stub.CheckDuplicate(request, timeout=120, wait_for_ready=True)

    async def _client(self, n: int, stub: dedup_pb2_grpc.DeduplicationStub, end: float, target: str) -> None:
        rng = random.Random(f"{self.config.seed}-{n}")
        counter = itertools.count()
        while time.monotonic() < end and not self._stopping.is_set():
            if rng.random() < self.config.check_share:
                code = await self._check(stub, rng, target)
            else:
                ids = [f"{self.config.run_id}-{n}-{next(counter)}" for _ in range(self.config.stream_items)]
                code = await self._stream(stub, rng, ids, target)
            if code != OK:
                await asyncio.sleep(_PAUSE_AFTER_S.get(code, _PAUSE_AFTER_OTHER_ERRORS_S))

    async def _check(self, stub: dedup_pb2_grpc.DeduplicationStub, rng: random.Random, target: str) -> str:
        request = dedup_pb2.CheckDuplicateRequest(image=self._workload.pick(rng), collection=self.config.collection)
        started = time.monotonic()
        code, details = OK, ""
        try:
            await stub.CheckDuplicate(request, timeout=self.config.timeout_s)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code().name, exc.details() or ""
        self._record(CHECK, code, started, details, target)
        return code

    async def _stream(
        self, stub: dedup_pb2_grpc.DeduplicationStub, rng: random.Random, ids: list[str], target: str
    ) -> str:
        requests = [
            dedup_pb2.IndexRequest(id=image_id, image=self._workload.pick(rng), collection=self.config.collection)
            for image_id in ids
        ]
        items, front_items = self.stats[STREAM].items, self.per_front[target][STREAM].items
        started = time.monotonic()
        code, details = OK, ""
        try:
            accepted: list[grpc.aio.StreamStreamCall] = []
            call = stub.IndexStream(_once_accepted(accepted, requests), timeout=self.config.timeout_s)
            accepted.append(call)
            async for response in call:
                status = dedup_pb2.IndexResponse.Status.Name(response.status)
                items[status] += 1
                front_items[status] += 1
                if status == "INDEXED":
                    self.acked.add(response.id)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code().name, exc.details() or ""
        self._record(STREAM, code, started, details, target)
        return code

    def _record(self, rpc: str, code: str, started: float, details: str, target: str) -> None:
        now = time.monotonic()
        self.stats[rpc].record(code, now - started, details)
        self.per_front[target][rpc].record(code, now - started, details)
        self.events.append(Event(now, rpc, code, target))

    async def _sample_rss(self, end: float) -> None:
        if not self._front_pids:
            return
        while time.monotonic() < end:
            rss = group_rss_mb(self._front_pids)
            if rss:
                self.rss_mb.append(rss)
            await asyncio.sleep(1.0)

    async def _progress(self, end: float, enabled: bool) -> None:
        with tqdm(total=round(self.config.duration_s), unit="s", desc="load", disable=not enabled) as bar:
            while (left := end - time.monotonic()) > 0:
                await asyncio.sleep(min(1.0, left))
                bar.n = min(bar.total, round(self.config.duration_s - max(0.0, end - time.monotonic())))
                bar.set_postfix(
                    {name: stats.codes[OK] for name, stats in self.stats.items()}
                    | {"errors": sum(sum(s.codes.values()) - s.codes[OK] for s in self.stats.values())},
                    refresh=True,
                )


async def _once_accepted(
    call: list[grpc.aio.StreamStreamCall], requests: list[dedup_pb2.IndexRequest]
) -> AsyncIterator[dedup_pb2.IndexRequest]:
    """A stream's requests, sent once the front has accepted it (its headers came; the front sends them first).

    A front over its RPC limit refuses a stream at once; a grpc.aio write that meets that refusal turns the
    front's RESOURCE_EXHAUSTED into INTERNAL "Internal error from Core" (grpc/grpc#36066). Waiting costs one round
    trip per stream; a front that sends no early headers is written to after a second anyway.
    """
    (stream,) = call  # filled in before gRPC starts reading this generator (in a task of its own)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(stream.initial_metadata()), 1.0)
    for request in requests:
        if stream.done():
            return
        yield request
