"""Telemetry really comes out of the front: nested spans, Prometheus metrics over HTTP, trace ids in logs."""

from __future__ import annotations

import io
import json
import logging
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from dedup_client import DedupClient, DedupError, IndexItem, IndexStatus
from dedup_server.logs import LogConfig, log_handler
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import FrontThread

pytestmark = pytest.mark.integration

SERVICE = "dedup.v1.Deduplication"
TRITON_INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture
def photo(eval_dir: Path) -> Path:
    return sorted((eval_dir / "base_images").glob("*.jpg"))[0]


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The front's log records at INFO, formatted as DEDUP_LOG_FORMAT=json formats them."""
    stream = io.StringIO()
    handler = log_handler(LogConfig(format="json"), stream)
    logger = logging.getLogger("dedup_server")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _rpc_trace(spans: InMemorySpanExporter, method: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The server span of the one `method` call since the exporter was cleared, and the spans of its trace."""
    rpc_name = f"/{SERVICE}/{method}"
    # The server span ends as the handler returns, just before the status goes out: wait for it a moment.
    rpcs = _eventually(lambda: [s for s in spans.get_finished_spans() if s.name == rpc_name])
    assert len(rpcs) == 1, [s.name for s in spans.get_finished_spans()]
    rpc = rpcs[0]
    assert rpc.kind == trace.SpanKind.SERVER and rpc.context is not None
    same_trace = [s for s in spans.get_finished_spans() if s.context and s.context.trace_id == rpc.context.trace_id]
    return rpc, same_trace


def _children(parent: ReadableSpan, spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    assert parent.context is not None
    return {s.name: s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id}


def _eventually(read: Callable[[], list[ReadableSpan]], timeout_s: float = 5.0) -> list[ReadableSpan]:
    deadline = time.monotonic() + timeout_s
    while not (found := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_index_and_check_spans_nest_under_their_rpc_span(
    client: DedupClient, spans: InMemorySpanExporter, json_logs: io.StringIO, collection: str, photo: Path
) -> None:
    spans.clear()
    # A fresh collection: the write batch creates it and logs so, inside the IndexStream trace.
    [result] = client.index([IndexItem(id=photo.name, image=photo.read_bytes(), collection=collection)])
    assert result.status == IndexStatus.INDEXED

    index_rpc, index_trace = _rpc_trace(spans, "IndexStream")
    under_index_rpc = _children(index_rpc, index_trace)
    assert {"decode", "infer", "search_and_insert"} <= set(under_index_rpc), sorted(under_index_rpc)
    assert {"search", "insert"} <= set(_children(under_index_rpc["search_and_insert"], index_trace))
    [triton_call] = _children(under_index_rpc["infer"], index_trace).values()
    assert triton_call.name == TRITON_INFER and triton_call.kind == trace.SpanKind.CLIENT
    assert index_rpc.attributes is not None and index_rpc.attributes["rpc.grpc.status_code"] == 0

    assert index_rpc.context is not None
    created = [
        record for record in map(json.loads, json_logs.getvalue().splitlines())
        if record["message"].startswith("created collection") and collection in record["message"]
    ]
    assert len(created) == 1, json_logs.getvalue()
    assert created[0]["trace_id"] == trace.format_trace_id(index_rpc.context.trace_id)
    assert created[0]["level"] == "INFO" and created[0]["logger"] == "dedup_server.index"

    spans.clear()
    assert client.check(photo.read_bytes(), collection=collection).is_duplicate
    check_rpc, check_trace = _rpc_trace(spans, "CheckDuplicate")
    under_check_rpc = _children(check_rpc, check_trace)
    assert {"decode", "infer", "search"} <= set(under_check_rpc), sorted(under_check_rpc)
    assert [s.name for s in _children(under_check_rpc["infer"], check_trace).values()] == [TRITON_INFER]


def test_metrics_endpoint_counts_requests_batches_and_backend_calls(
    client: DedupClient, front: FrontThread, collection: str, photo: Path
) -> None:
    before = _scrape(front)
    [result] = client.index([IndexItem(id=photo.name, image=photo.read_bytes(), collection=collection)])
    assert result.status == IndexStatus.INDEXED
    assert client.check(photo.read_bytes(), collection=collection).is_duplicate
    with pytest.raises(DedupError) as unknown:
        client.check(photo.read_bytes(), collection=collection + "_missing")
    assert unknown.value.code == "NOT_FOUND"
    check = {"grpc_service": SERVICE, "grpc_method": "CheckDuplicate"}
    index = {"grpc_service": SERVICE, "grpc_method": "IndexStream"}
    # A failed RPC is counted just after its status goes out (context.abort sends it at once), so the client can
    # scrape a moment before the count lands: scrape again briefly, as a Prometheus scrape would be later anyway.
    not_found = _key("grpc_server_handled_total", {**check, "grpc_code": "NOT_FOUND"})
    deadline = time.monotonic() + 5
    while (after := _scrape(front)).get(not_found, 0.0) == before.get(not_found, 0.0) and time.monotonic() < deadline:
        time.sleep(0.05)

    def grew(name: str, **labels: str) -> float:
        return after.get(_key(name, labels), 0.0) - before.get(_key(name, labels), 0.0)

    assert grew("grpc_server_handled_total", **check, grpc_code="OK") == 1
    assert grew("grpc_server_handled_total", **check, grpc_code="NOT_FOUND") == 1
    assert grew("grpc_server_handled_total", **index, grpc_code="OK") == 1
    assert grew("grpc_server_handling_seconds_count", **check, grpc_code="OK") == 1
    assert grew("grpc_server_handling_seconds_sum", **check, grpc_code="OK") > 0
    assert grew("dedup_index_items_total", status="INDEXED") == 1
    # One image per batch here: the index item and the found check (the unknown collection fails before).
    assert grew("dedup_batch_size_count", batcher="embed") == 2
    assert grew("dedup_batch_size_sum", batcher="embed") == 2
    assert grew("dedup_batch_size_count", batcher="write") == 1
    assert _key("dedup_batch_queue_depth", {"batcher": "embed"}) in after
    assert grew("dedup_triton_infer_seconds_count") == 2
    assert grew("dedup_milvus_request_seconds_count", operation="search") == 2
    assert grew("dedup_milvus_request_seconds_count", operation="upsert") == 1


def _key(name: str, labels: dict[str, str]) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def _scrape(front: FrontThread) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample that GET /metrics serves, by name and labels."""
    assert front.metrics_port, "the test front serves metrics on a free port"
    with urllib.request.urlopen(f"http://127.0.0.1:{front.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        _key(sample.name, sample.labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
