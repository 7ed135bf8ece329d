"""One collection of the service's schema on a Milvus standalone of the bench's own: load, build each index type,
measure memory, latency and hit@1 against exact search."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from dedup_bench.measure import Latency
from dedup_server.config import IndexConfig
from dedup_server.index import (
    ID_FIELD,
    INSERTED_AT_FIELD,
    LAYOUT_KEY,
    METADATA_FIELD,
    METRIC,
    MODEL_FIELD,
    SIGNATURE_FIELD,
    VECTOR_FIELD,
    MilvusIndex,
)
from dedup_server.model_identity import ModelInfo
from dedup_stack.milvus import MilvusConfig, MilvusPorts, MilvusProcess
from pymilvus import MilvusClient

logger = logging.getLogger(__name__)

TOP_K = 10
COLLECTION = "scale"
PREFIX = "benchscale_"


def client(uri: str) -> MilvusClient:
    # Long builds otherwise die with GOAWAY too_many_pings (shared/notes/milvus.md, trap 3).
    return MilvusClient(uri=uri, timeout=3600, grpc_options={"grpc.keepalive_time_ms": 600_000})


@dataclasses.dataclass(frozen=True)
class SegmentLayout:
    """How Milvus cuts the rows into sealed segments (MilvusConfig's defaults are 2.3.5's own). Every search visits
    every segment, each an index of its own, so their number sets a search's cost as much as their size."""

    max_size_mb: int = MilvusConfig.segment_max_size_mb
    seal_proportion: float = MilvusConfig.segment_seal_proportion
    max_binlog_files: int = MilvusConfig.segment_max_binlog_files


class Milvus:
    """The bench's own Milvus standalone; restartable on the same data (to measure memory after a fresh load)."""

    def __init__(self, base_dir: Path, install_dir: Path, segments: SegmentLayout) -> None:
        self.config = MilvusConfig(base_dir=base_dir, ports=MilvusPorts.pick_free(), install_dir=install_dir,
                                   startup_timeout_s=300, segment_max_size_mb=segments.max_size_mb,
                                   segment_seal_proportion=segments.seal_proportion,
                                   segment_max_binlog_files=segments.max_binlog_files)
        self.process: MilvusProcess | None = None

    @property
    def uri(self) -> str:
        return self.config.uri

    def start(self) -> float:
        started = time.monotonic()
        self.process = MilvusProcess(self.config)
        self.process.start()
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def rss_gb(self) -> float:
        """Resident memory of the milvus process (VmRSS), GiB."""
        child = self.process.child if self.process is not None else None
        if child is None or child.pid is None:
            return float("nan")
        for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024 / 1024, 3)
        return float("nan")


def create_collection(uri: str, model: ModelInfo, index: IndexConfig) -> str:
    """The service's own collection (MilvusIndex creates it: schema, model pinned, index); returns its Milvus name."""
    milvus_index = MilvusIndex(uri=uri, token="", prefix=PREFIX, index=index)
    try:
        return milvus_index.open_collection(COLLECTION, model, create=True)
    finally:
        milvus_index.close()


def rows(ids: Sequence[str], vectors: np.ndarray, model: ModelInfo, signatures: Sequence[str] | None = None,
         layouts: Sequence[str] | None = None) -> list[dict[str, object]]:
    now = int(time.time() * 1000)
    return [
        {ID_FIELD: image_id, VECTOR_FIELD: vector.tolist(),
         METADATA_FIELD: {LAYOUT_KEY: layouts[i]} if layouts else {}, MODEL_FIELD: model.label,
         INSERTED_AT_FIELD: now, SIGNATURE_FIELD: signatures[i] if signatures else ""}
        for i, (image_id, vector) in enumerate(zip(ids, vectors, strict=True))
    ]


def drop_index(milvus: MilvusClient, name: str) -> None:
    """Release the collection and drop its indexes."""
    milvus.release_collection(name)
    for existing in milvus.list_indexes(name):
        milvus.drop_index(name, existing)


#: How often a long index build logs how many rows it has indexed.
BUILD_PROGRESS_EVERY_S = 60.0


def build_index(milvus: MilvusClient, name: str, index_type: str, params: dict[str, int], total: int) -> float:
    """Drop whatever index the collection has, build ``index_type``, wait until every row is indexed; seconds."""
    drop_index(milvus, name)
    index = milvus.prepare_index_params()
    index.add_index(field_name=VECTOR_FIELD, index_type=index_type, metric_type=METRIC, params={"params": params})
    started = time.monotonic()
    milvus.create_index(name, index, sync=False)  # returns at once: this loop waits, and logs progress
    logged = started
    while True:
        info = milvus.describe_index(name, index_name=VECTOR_FIELD) or {}
        if time.monotonic() - logged >= BUILD_PROGRESS_EVERY_S:  # a build at 1M takes long: partial numbers
            logged = time.monotonic()
            logger.info("%s build: %s of %d rows indexed after %.0f s (pending %s)", index_type,
                        info.get("indexed_rows"), total, logged - started, info.get("pending_index_rows"))
        # 2.3.5 can keep reporting pending rows of segments compacted away once every row is indexed (seen at 300k:
        # indexed_rows 300000, pending 180576, state Finished): every row indexed and Finished is done too.
        finished = str(info.get("state", "")).endswith("Finished")
        if int(info.get("indexed_rows", 0)) >= total and (int(info.get("pending_index_rows", 0)) == 0 or finished):
            return time.monotonic() - started
        time.sleep(1.0)


def segment_rows(milvus: MilvusClient, name: str, *, loaded: bool = False) -> list[int]:
    """Rows of each sealed segment (stored, or as the query node has loaded them), largest first. Every search
    visits every segment, so their number sets the cost of a search as much as their size does."""
    segments = milvus.list_loaded_segments(name) if loaded else milvus.list_persistent_segments(name)
    return sorted((int(getattr(segment, "num_rows", 0)) for segment in segments), reverse=True)


#: How often a compaction logs the segments it has made so far.
COMPACTION_PROGRESS_EVERY_S = 30.0


def compact(milvus: MilvusClient, name: str) -> float:
    """Merge the small segments the insert sealed into larger ones (Milvus also does it in the background, later),
    before the index is built, so it is built once on the final segments; seconds."""
    started = logged = time.monotonic()
    job = milvus.compact(name)
    while milvus.get_compaction_state(job) != "Completed":
        if time.monotonic() - logged >= COMPACTION_PROGRESS_EVERY_S:
            logged = time.monotonic()
            logger.info("compaction after %.0f s: segments %s", logged - started, segment_rows(milvus, name))
        time.sleep(2.0)
    return time.monotonic() - started


def load(milvus: MilvusClient, name: str) -> float:
    started = time.monotonic()
    milvus.load_collection(name)
    return time.monotonic() - started


def search_top1(milvus: MilvusClient, name: str, queries: np.ndarray, params: dict[str, int]) -> list[str]:
    top: list[str] = []
    for start in range(0, len(queries), 100):
        results = milvus.search(name, data=[q.tolist() for q in queries[start:start + 100]], limit=1,
                                anns_field=VECTOR_FIELD, search_params={"metric_type": METRIC, "params": params},
                                consistency_level="Bounded")
        top.extend(str(hits[0]["id"]) if hits else "" for hits in results)
    return top


def _one(milvus: MilvusClient, name: str, query: np.ndarray, params: dict[str, int]) -> float:
    started = time.perf_counter()
    # As CheckDuplicate searches: one vector, top 10, the metadata of each hit.
    milvus.search(name, data=[query.tolist()], limit=TOP_K, anns_field=VECTOR_FIELD, output_fields=[METADATA_FIELD],
                  search_params={"metric_type": METRIC, "params": params}, consistency_level="Bounded")
    return time.perf_counter() - started


def latency(uri: str, name: str, queries: np.ndarray, params: dict[str, int], *, concurrency: int,
            requests: int) -> Latency:
    """Single-vector searches at ``concurrency`` (a client per thread), ``requests`` in all."""
    clients = [client(uri) for _ in range(concurrency)]
    times: list[float] = []
    lock = threading.Lock()
    errors = [0]

    def worker(k: int) -> None:
        for i in range(k, requests, concurrency):
            try:
                elapsed = _one(clients[k], name, queries[i % len(queries)], params)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                with lock:
                    errors[0] += 1
                continue
            with lock:
                times.append(elapsed)

    _one(clients[0], name, queries[0], params)  # warm-up
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    for each in clients:
        each.close()
    return Latency.of(times, errors=errors[0], wall_s=wall)


@dataclasses.dataclass
class ExactTop1:
    """The exact (FLAT) top-1 of each query over everything stored, fed chunk by chunk."""

    queries: np.ndarray
    best: np.ndarray = dataclasses.field(init=False)
    ids: list[str] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.best = np.full(len(self.queries), -np.inf, dtype=np.float32)
        self.ids = [""] * len(self.queries)

    def add(self, vectors: np.ndarray, id_of: Callable[[int], str]) -> None:
        sims = self.queries @ vectors.T
        top = sims.argmax(axis=1)
        value = sims[np.arange(len(top)), top]
        for q in np.flatnonzero(value > self.best):
            self.best[q] = value[q]
            self.ids[q] = id_of(int(top[q]))
