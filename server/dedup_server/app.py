"""Assemble and run the gRPC server: servicer + health + reflection + tracing + metrics, with clean shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
from dedup.v1 import dedup_pb2, dedup_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

from .auth import BearerTokenInterceptor
from .config import ServerConfig
from .coordination import EtcdCoordinator, coordinator_for
from .embedder import TritonEmbedder
from .health import BackendMonitor
from .index import MilvusIndex
from .metrics import MetricsServer, RequestMetricsInterceptor, start_metrics_server
from .service import DedupService
from .servicer import DedupServicer
from .tls import server_credentials

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RunningServer:
    server: grpc.aio.Server
    port: int
    service: DedupService
    monitor: BackendMonitor
    metrics_port: int | None  # None: metrics are off


@contextlib.asynccontextmanager
async def running_server(config: ServerConfig, *, reuse_port: bool = False) -> AsyncIterator[RunningServer]:
    """Start the server (port 0 picks a free one); on exit: NOT_SERVING, drain, close backends.

    `reuse_port`: a worker, sharing the port with the supervisor's other workers (SO_REUSEPORT).
    """
    decode_pool = ThreadPoolExecutor(max_workers=config.decode_threads, thread_name_prefix="decode")
    embedder = TritonEmbedder(
        url=config.triton_url,
        model=config.triton_model,
        timeout_s=config.triton_timeout_s,
        max_message_bytes=config.limits.max_message_bytes,
        shared_memory=config.triton_shared_memory,
        max_batch=config.embed_batch.max_batch_size,
        shared_memory_regions=config.embed_batch.max_in_flight + 1,
    )
    index = await asyncio.to_thread(
        MilvusIndex, uri=config.milvus_uri, token=config.milvus_token, prefix=config.collection_prefix,
        index=config.index, call_timeout_s=config.milvus_timeout_s,
    )
    # Writes of a collection take turns across fronts through etcd (DEDUP_ETCD_ENDPOINTS), else only locally.
    # Nothing is asked of etcd here: a front starts (and answers checks) while etcd is down; writes need it.
    coordinator = coordinator_for(config.coordination)
    if isinstance(coordinator, EtcdCoordinator):
        logger.info("writes coordinated through etcd at %s (front %s, lease TTL %d s)", coordinator.target,
                    coordinator.front_id, config.coordination.lease_ttl_s)
    service = DedupService(config, embedder=embedder, index=index, decode_pool=decode_pool, coordinator=coordinator)
    # Outermost, the OTel interceptor opens the RPC span (health probes are left out of traces); the
    # service's decode/infer/search/insert spans nest in it. Inside it, every RPC is counted and timed.
    interceptors: list[grpc.aio.ServerInterceptor] = [
        aio_server_interceptor(filter_=filters.negate(filters.health_check())),
        RequestMetricsInterceptor(),
    ]
    if config.security.token_required:
        # Innermost: calls refused for a missing or wrong token are still traced and counted
        # (as UNAUTHENTICATED) by the interceptors outside it, and none reaches a handler.
        interceptors.append(BearerTokenInterceptor(config.security.accepted_tokens()))
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", config.limits.max_message_bytes),
            ("grpc.max_send_message_length", config.limits.max_message_bytes),
            *([("grpc.so_reuseport", 1)] if reuse_port else []),
        ],
        maximum_concurrent_rpcs=config.limits.max_concurrent_rpcs,
    )
    dedup_pb2_grpc.add_DeduplicationServicer_to_server(DedupServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            dedup_pb2.DESCRIPTOR.services_by_name["Deduplication"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    credentials = server_credentials(config.security)
    address = f"{config.host}:{config.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {config.host}:{config.port}")
    monitor = BackendMonitor(
        embedder=embedder, index=index, health_servicer=health_servicer, interval_s=config.health_interval_s
    )
    metrics_server: MetricsServer | None = None
    if config.metrics_port is not None:
        metrics_server = start_metrics_server(config.metrics_host, config.metrics_port)
        logger.info("Prometheus metrics on http://%s:%d/metrics", config.metrics_host, metrics_server.port)
    service.start()
    await server.start()
    monitor.start()
    logger.info(
        "dedup gRPC server listening on %s:%d (%s, %s)", config.host, port,
        ("mutual TLS" if config.security.mutual_tls else "TLS") if config.security.tls else "plaintext",
        "bearer token required" if config.security.token_required else "no token",
    )
    try:
        yield RunningServer(
            server=server, port=port, service=service, monitor=monitor,
            metrics_port=None if metrics_server is None else metrics_server.port,
        )
    finally:
        logger.info("shutting down (grace %.0f s)", config.shutdown_grace_s)
        await monitor.stop()  # NOT_SERVING first, so balancers stop sending
        service.drain()  # open streams answer what they read, then end UNAVAILABLE (send the rest again)
        await server.stop(config.shutdown_grace_s)
        await service.close()
        await coordinator.close()  # after the last write batch: revoking the lease hands every lock over at once
        for batcher in (service.embed_batcher, service.search_batcher, service.write_batcher):
            logger.info(
                "%s batches: %d, items %d, mean size %.1f, largest %d", batcher.name, batcher.stats.batches,
                batcher.stats.items, batcher.stats.mean_batch_size, batcher.stats.largest_batch,
            )
        await embedder.close()
        await asyncio.to_thread(index.close)
        decode_pool.shutdown(wait=True)
        if metrics_server is not None:
            metrics_server.close()
        logger.info("stopped")


async def serve(
    config: ServerConfig, *, reuse_port: bool = False, on_serving: Callable[[], None] | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; `on_serving` is called once, the first time health says SERVING (workers)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with running_server(config, reuse_port=reuse_port) as running:
        if on_serving is None:
            await stop.wait()
            return
        report = asyncio.create_task(_when_serving(running.monitor, on_serving), name="report-serving")
        try:
            await stop.wait()
        finally:
            report.cancel()


async def _when_serving(monitor: BackendMonitor, callback: Callable[[], None]) -> None:
    while not await monitor.wait_ready(3600):
        pass
    callback()
