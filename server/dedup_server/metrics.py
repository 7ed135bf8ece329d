"""Prometheus metrics of the front, and the HTTP endpoint that serves them (/metrics).

gRPC request metrics use the names of go-grpc-prometheus (grpc_server_handled_total,
grpc_server_handling_seconds), so stock dashboards and alerts apply; the rest are dedup_*.
Metrics live in prometheus_client's default registry (one per process, with its process_* and
python_* collectors); the components record into them at the few places where things happen.

With DEDUP_WORKERS > 1 each worker records into files under PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode, chosen by that variable when prometheus_client is imported) and the supervisor alone serves
/metrics, summing every worker's files (multiprocess_registry); process_* and python_* are then left out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

_GRPC_LABELS = ("grpc_service", "grpc_method", "grpc_code")
# Whole RPCs, streams included: an IndexStream of a big folder runs for minutes.
_RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
_BACKEND_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

RPCS_HANDLED = Counter("grpc_server_handled_total", "RPCs completed, by method and status code", _GRPC_LABELS)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds", "Time from receiving an RPC to its status, by method and status code",
    _GRPC_LABELS, buckets=_RPC_BUCKETS,
)
BATCH_SIZE = Histogram(
    "dedup_batch_size", "Items per micro-batch", ("batcher",), buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
)
# Across workers: the sum over the live ones (a single process ignores the mode).
QUEUE_DEPTH = Gauge(
    "dedup_batch_queue_depth", "Jobs waiting in a micro-batcher's queue", ("batcher",), multiprocess_mode="livesum"
)
TRITON_INFER_SECONDS = Histogram(
    "dedup_triton_infer_seconds", "Triton ModelInfer round trip for one batch", buckets=_BACKEND_BUCKETS
)
MILVUS_SECONDS = Histogram(
    "dedup_milvus_request_seconds", "Milvus call time, by operation (one call serves a whole batch)",
    ("operation",), buckets=_BACKEND_BUCKETS,
)
INDEX_ITEMS = Counter("dedup_index_items_total", "IndexStream items answered, by item status", ("status",))
WRITE_COORDINATION_SECONDS = Histogram(
    "dedup_write_coordination_seconds",
    "etcd time a write batch pays for its turn (fence: the front held the lock; acquire: it took it), waits excluded",
    ("step",), buckets=_BACKEND_BUCKETS,
)
WRITE_LOCK_WAIT_SECONDS = Histogram(
    "dedup_write_lock_wait_seconds", "Time a write batch waited for other fronts to hand a collection's lock over",
    buckets=_BACKEND_BUCKETS,
)


@dataclasses.dataclass(frozen=True)
class MetricsServer:
    """The /metrics HTTP server (prometheus_client's, in a daemon thread)."""

    httpd: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.httpd.server_port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """A registry that sums what every worker wrote under `directory` (PROMETHEUS_MULTIPROC_DIR)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def start_metrics_server(host: str, port: int, registry: CollectorRegistry | None = None) -> MetricsServer:
    """Serve /metrics on host:port (0 picks a free port): the process's default registry, or `registry`."""
    try:
        httpd, thread = (
            start_http_server(port, addr=host) if registry is None else start_http_server(port, addr=host,
                                                                                         registry=registry)
        )
    except OSError as exc:
        raise OSError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror} (DEDUP_METRICS_PORT=off disables it)"
        ) from exc
    return MetricsServer(httpd, thread)


class RequestMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RPC and times it, labelled by service, method and the status code it ended with."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: gRPC answers UNIMPLEMENTED itself
            return handler
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        if handler.response_streaming:
            behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
            wrapped: Any = _observed_stream(behavior, service, method)
        else:
            behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary
            wrapped = _observed_unary(behavior, service, method)
        make_handler = _HANDLER_FACTORIES[(handler.request_streaming, handler.response_streaming)]
        return make_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


_HANDLER_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _observed_unary(behavior: Callable[..., Awaitable[Any]], service: str, method: str) -> Callable[..., Any]:
    async def observed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            _observe(service, method, _status_of_failure(exc, context), started)
            raise
        _observe(service, method, context.code() or grpc.StatusCode.OK, started)
        return response

    return observed


def _observed_stream(behavior: Callable[..., AsyncIterator[Any]], service: str, method: str) -> Callable[..., Any]:
    async def observed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        try:
            async for response in behavior(request, context):
                yield response
        except BaseException as exc:
            _observe(service, method, _status_of_failure(exc, context), started)
            raise
        _observe(service, method, context.code() or grpc.StatusCode.OK, started)

    return observed


def _status_of_failure(exc: BaseException, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """The status an RPC that raised ends with, as gRPC reports it to the client."""
    if isinstance(exc, asyncio.CancelledError):
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return grpc.StatusCode.DEADLINE_EXCEEDED
        return grpc.StatusCode.CANCELLED
    # abort() and set_code() leave their code on the context; any other exception becomes UNKNOWN.
    return context.code() or grpc.StatusCode.UNKNOWN


def _observe(service: str, method: str, code: grpc.StatusCode, started: float) -> None:
    labels = (service, method, code.name)
    RPCS_HANDLED.labels(*labels).inc()
    RPC_SECONDS.labels(*labels).observe(time.perf_counter() - started)
