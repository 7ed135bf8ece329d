"""`--workers 1,2`: one front of DEDUP_WORKERS=W on a stack of its own (with etcd), for each W in turn: IndexStream
ingest through several streams at once, CheckDuplicate at concurrency 32, the front's CPU per image, and what the
etcd coordination cost each write batch (the front's own dedup_write_coordination_seconds, scraped from /metrics).

Every stream and every concurrent caller has a connection of its own: the kernel spreads connections (not calls)
over the workers of a port, so one channel would reach one worker only. With W=1 the front fences each write batch
in etcd as any coordinated front does; with W=2 its workers are two fronts writing the same collection, taking
turns (each turn: a lock hand-over in etcd, and a Strong search in Milvus). scripts/coordination_cost.py measures
the same costs in isolation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import grpc
from dedup.v1 import dedup_pb2, dedup_pb2_grpc
from dedup_stack.killable import KillableStack
from dedup_stack.ports import pick_free_ports
from prometheus_client.parser import text_string_to_metric_families

from . import cpu
from .measure import Latency

logger = logging.getLogger(__name__)

_OWN_CONNECTION = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkersRun:
    workers: int
    ingest_img_s: float
    ingest_streams: int
    check_rps_c32: float
    check_p50_ms_c32: float
    check_p99_ms_c32: float
    check_errors_c32: int
    front_cpu_ms_per_img: float  # supervisor and workers, during the ingest
    write_batches: int  # write turns during the ingest
    lock_acquisitions: int  # of them, turns that took the lock (the others only fenced)
    coordination_ms_per_batch: float  # etcd time per write batch (fence or take the lock), waits excluded
    lock_wait_ms_per_batch: float  # waiting for the other worker's turn, per write batch


def parse_args(value: str) -> list[int]:
    counts = [int(part) for part in value.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise ValueError(f"--workers wants worker counts like 1,2, got {value!r}")
    return counts


def compare(
    root: Path, jpegs: Sequence[bytes], queries: Sequence[bytes], *, workers: Sequence[int], model_repository: Path,
    streams: int = 8, check_requests: int = 320,
) -> list[WorkersRun]:
    """One run per worker count, each on a fresh stack under root/workers-W (stopped after)."""
    runs = []
    for count in workers:
        (metrics_port,) = pick_free_ports(1)
        overrides = {"DEDUP_METRICS_PORT": str(metrics_port)}
        with KillableStack(root / f"workers-{count}", workers=count, etcd=True, model_repository=model_repository,
                           front_overrides=overrides) as stack:
            runs.append(_measure(stack, count, metrics_port, root / f"workers-{count}", jpegs, queries,
                                 streams=streams, check_requests=check_requests))
        logger.info("workers %d: %s", count, runs[-1])
    return runs


def _measure(
    stack: KillableStack, count: int, metrics_port: int, run_dir: Path, jpegs: Sequence[bytes],
    queries: Sequence[bytes], *, streams: int, check_requests: int,
) -> WorkersRun:
    collection = f"bench_workers_{count}"
    asyncio.run(_ingest(stack.target, jpegs[:streams], collection, streams=streams, prefix="warm"))  # every worker
    before_metrics, before_cpu = _coordination(metrics_port), cpu.cpu_seconds(run_dir)
    started = time.perf_counter()
    asyncio.run(_ingest(stack.target, jpegs, collection, streams=streams, prefix="img"))
    ingest_s = time.perf_counter() - started
    after_cpu, after_metrics = cpu.cpu_seconds(run_dir), _coordination(metrics_port)
    check = asyncio.run(_checks(stack.target, [queries[i % len(queries)] for i in range(check_requests)],
                                collection, concurrency=32))
    turns = after_metrics["turns"] - before_metrics["turns"]
    return WorkersRun(
        workers=count,
        ingest_img_s=round(len(jpegs) / ingest_s, 1),
        ingest_streams=streams,
        check_rps_c32=check.rps,
        check_p50_ms_c32=check.p50_ms,
        check_p99_ms_c32=check.p99_ms,
        check_errors_c32=check.errors,
        front_cpu_ms_per_img=round(1000 * (after_cpu.get("front", 0.0) - before_cpu.get("front", 0.0)) / len(jpegs),
                                   2),
        write_batches=int(turns),
        lock_acquisitions=int(after_metrics["acquisitions"] - before_metrics["acquisitions"]),
        coordination_ms_per_batch=round(
            1000 * (after_metrics["etcd_s"] - before_metrics["etcd_s"]) / turns, 2) if turns else 0.0,
        lock_wait_ms_per_batch=round(
            1000 * (after_metrics["wait_s"] - before_metrics["wait_s"]) / turns, 2) if turns else 0.0,
    )


def _coordination(metrics_port: int) -> dict[str, float]:
    """Totals so far of the front's write coordination metrics (every worker's, summed by the supervisor)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    totals = {"turns": 0.0, "acquisitions": 0.0, "etcd_s": 0.0, "wait_s": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dedup_write_coordination_seconds_count":
                totals["turns"] += sample.value
                if sample.labels.get("step") == "acquire":
                    totals["acquisitions"] += sample.value
            elif sample.name == "dedup_write_coordination_seconds_sum":
                totals["etcd_s"] += sample.value
            elif sample.name == "dedup_write_lock_wait_seconds_sum":
                totals["wait_s"] += sample.value
    return totals


async def _ingest(target: str, jpegs: Sequence[bytes], collection: str, *, streams: int, prefix: str) -> None:
    """IndexStream every JPEG, `streams` streams at once (each on its own connection); any item not INDEXED fails."""

    async def stream(channel: grpc.aio.Channel, share: list[tuple[int, bytes]]) -> None:
        requests = [dedup_pb2.IndexRequest(id=f"{prefix}{i:05d}", image=data, collection=collection)
                    for i, data in share]
        async for response in dedup_pb2_grpc.DeduplicationStub(channel).IndexStream(iter(requests), timeout=600):
            if response.status != dedup_pb2.IndexResponse.INDEXED:
                raise RuntimeError(f"{response.id}: {dedup_pb2.IndexResponse.Status.Name(response.status)} "
                                   f"{response.error}")

    items = list(enumerate(jpegs))
    channels = [grpc.aio.insecure_channel(target, options=_OWN_CONNECTION) for _ in range(streams)]
    try:
        await asyncio.gather(*(stream(channel, items[n::streams]) for n, channel in enumerate(channels)))
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


async def _checks(target: str, queries: Sequence[bytes], collection: str, *, concurrency: int) -> Latency:
    times: list[float] = []
    errors = 0
    channels = [grpc.aio.insecure_channel(target, options=_OWN_CONNECTION) for _ in range(concurrency)]

    async def caller(channel: grpc.aio.Channel, share: Sequence[bytes]) -> None:
        nonlocal errors
        stub = dedup_pb2_grpc.DeduplicationStub(channel)
        for data in share:
            begin = time.perf_counter()
            try:
                await stub.CheckDuplicate(dedup_pb2.CheckDuplicateRequest(image=data, collection=collection),
                                          timeout=30)
                times.append(time.perf_counter() - begin)
            except grpc.aio.AioRpcError:
                errors += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(caller(channel, queries[n::concurrency]) for n, channel in enumerate(channels)))
        wall = time.perf_counter() - started
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))
    return Latency.of(times, errors=errors, wall_s=wall)


def table(runs: Sequence[WorkersRun]) -> str:
    lines = [
        "workers (one front, DEDUP_WORKERS=W, etcd on; streams and callers on connections of their own)",
        f"{'W':>2} {'ingest img/s':>13} {'check c32 rps':>14} {'p50/p99 ms':>16} {'err':>4} {'front CPU ms/img':>17}"
        f" {'batches':>8} {'lock takes':>10} {'etcd ms/batch':>14} {'wait ms/batch':>14}",
    ]
    for r in runs:
        lines.append(
            f"{r.workers:>2} {r.ingest_img_s:>13.1f} {r.check_rps_c32:>14.1f} "
            f"{f'{r.check_p50_ms_c32:.0f}/{r.check_p99_ms_c32:.0f}':>16} {r.check_errors_c32:>4} "
            f"{r.front_cpu_ms_per_img:>17.2f} {r.write_batches:>8} {r.lock_acquisitions:>10} "
            f"{r.coordination_ms_per_batch:>14.2f} {r.lock_wait_ms_per_batch:>14.2f}"
        )
    return "\n".join(lines)
