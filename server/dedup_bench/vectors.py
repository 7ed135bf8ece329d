"""Milvus: index parameters ranked by hit@1 on real embeddings, and search latency at 10k and 100k vectors.

hit@1 = how often the index's top hit is the exact (FLAT, brute-force) top hit, for queries that are lightly
re-encoded copies of stored images: the only search a dedup service must get right.

The real embeddings are those of seeded crops of real photos (a few thousand: the model runs at ~100-300
images/s here). 100k real embeddings would take ~10 minutes to compute, so the latency collections are filled
up with SYNTHETIC vectors derived from the real ones (normalised mixtures of two real embeddings plus noise),
which keeps their distribution close to real embeddings; the report says how many of each were used.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
import uuid
from collections.abc import Iterator, Sequence

import numpy as np
import onnxruntime as ort
from dedup_modelbuild.photos import to_input
from dedup_server.config import IndexConfig
from PIL import Image
from pymilvus import DataType, MilvusClient
from tqdm import tqdm

from .measure import Latency, embed_all
from .photos import variant

logger = logging.getLogger(__name__)

TOP_K = 10
INSERT_BATCH = 2000


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepResult:
    index_type: str
    build_params: dict[str, int]
    search_params: dict[str, int]
    hit_at_1: float
    """Light copies (re-encoded at JPEG q=60, exposure +5 %)."""
    hit_at_1_heavy: float
    """Heavy edits (another crop of 45-100 %, maybe mirrored, exposure and contrast changed): the exact top hit
    is often another image, so this is where an approximate index loses."""
    search_p50_ms: float
    build_s: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class SizeResult:
    vectors: int
    real_vectors: int
    synthetic_vectors: int
    index_type: str
    build_params: dict[str, int]
    search_params: dict[str, int]
    search: Latency
    hit_at_1: float
    """Heavy-edit queries (see SweepResult.hit_at_1_heavy) against exact search over the whole collection."""
    insert_rows_s: float
    index_wait_s: float
    search_sweep: list[dict[str, object]] = dataclasses.field(default_factory=list)
    """At the largest size only: hit@1 and p50 for other search parameters of the same index (no rebuild)."""


SEARCH_SWEEP: dict[str, tuple[dict[str, int], ...]] = {
    "HNSW": ({"ef": 16}, {"ef": 32}, {"ef": 64}, {"ef": 128}, {"ef": 256}),
    "IVF_FLAT": ({"nprobe": 4}, {"nprobe": 8}, {"nprobe": 16}, {"nprobe": 32}, {"nprobe": 64}),
    "IVF_SQ8": ({"nprobe": 4}, {"nprobe": 8}, {"nprobe": 16}, {"nprobe": 32}, {"nprobe": 64}),
}


@dataclasses.dataclass(frozen=True)
class RealEmbeddings:
    stored: np.ndarray
    light: np.ndarray
    """Queries: light copies of the first stored images."""
    heavy: np.ndarray
    """Queries: heavy edits of the first stored images."""


def real_embeddings(
    session: ort.InferenceSession, photos: Sequence[Image.Image], *, count: int, queries: int, seed: int = 7
) -> RealEmbeddings:
    """Embeddings of ``count`` seeded crops of real photos, and of light and heavy copies of ``queries`` of them."""
    rng = np.random.default_rng(seed)
    crops = [variant(photos[i % len(photos)], rng) for i in tqdm(range(count), desc="crops", unit="img", leave=False)]
    stored = np.stack([to_input(crop) for crop in crops])
    light, heavy = [], []
    for crop in crops[:queries]:
        out = io.BytesIO()
        crop.point(lambda v: min(255, int(v * 1.05))).save(out, format="JPEG", quality=60)
        light.append(to_input(Image.open(io.BytesIO(out.getvalue()))))
        heavy.append(to_input(variant(crop, rng)))
    logger.info("embedding %d real crops and 2 x %d query copies", count, queries)
    return RealEmbeddings(
        stored=embed_all(session, stored), light=embed_all(session, np.stack(light)),
        heavy=embed_all(session, np.stack(heavy)),
    )


def synthetic_from_real(real: np.ndarray, count: int, *, seed: int = 11) -> np.ndarray:
    """``count`` unit vectors, each a random mixture of two real embeddings plus noise of norm ~0.05 (labelled
    synthetic in the report)."""
    rng = np.random.default_rng(seed)
    weight = rng.uniform(0.2, 0.8, size=(count, 1)).astype(np.float32)
    mixed = weight * real[rng.integers(0, len(real), count)] + (1 - weight) * real[rng.integers(0, len(real), count)]
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    mixed += rng.normal(0, 0.05 / np.sqrt(real.shape[1]), size=mixed.shape).astype(np.float32)
    return (mixed / np.linalg.norm(mixed, axis=1, keepdims=True)).astype(np.float32)


def exact_top1(stored: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row index of each query's exact nearest stored vector (cosine = dot product on unit vectors)."""
    best = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), 256):
        best[start : start + 256] = np.argmax(queries[start : start + 256] @ stored.T, axis=1)
    return best


class _Collection:
    """A throwaway collection: int64 ids = row numbers, one float vector, the given index."""

    def __init__(self, client: MilvusClient, dim: int, index_type: str, build_params: dict[str, int]) -> None:
        self.client = client
        self.name = f"bench_vec_{uuid.uuid4().hex[:8]}"
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        index = client.prepare_index_params()
        index.add_index(field_name="vector", index_type=index_type, metric_type="COSINE",
                        params={"params": build_params})
        # Session (as the service): this client's inserts are visible, and a search does not wait for the ~200 ms
        # time tick that Strong waits for.
        client.create_collection(self.name, schema=schema, index_params=index, consistency_level="Session")
        self.rows = 0

    def insert(self, vectors: np.ndarray, *, desc: str) -> float:
        """Insert ``vectors`` (ids continue from the last insert); returns rows/s."""
        started = time.perf_counter()
        for start in tqdm(range(0, len(vectors), INSERT_BATCH), desc=desc, unit="batch", leave=False):
            chunk = vectors[start : start + INSERT_BATCH]
            self.client.insert(
                self.name, [{"id": self.rows + i, "vector": row.tolist()} for i, row in enumerate(chunk)]
            )
            self.rows += len(chunk)
        return len(vectors) / (time.perf_counter() - started)

    def wait_indexed(self, timeout_s: float = 900) -> float:
        """Flush, then wait until every row is in a built index segment and loaded; returns seconds waited."""
        started = time.perf_counter()
        self.client.flush(self.name)
        while time.perf_counter() - started < timeout_s:
            info = self.client.describe_index(self.name, index_name="vector") or {}
            if int(info.get("indexed_rows", 0)) >= self.rows and int(info.get("pending_index_rows", 0)) == 0:
                break
            time.sleep(0.5)
        else:
            logger.warning("index of %s not finished after %.0f s", self.name, timeout_s)
        # The collection was loaded at creation, so right after the build the query node still searches the new
        # segments as raw data, brute force, until the query coordinator hands the indexed ones over: within 15 s
        # on 2.3.5 (IVF nprobe=1 found the exact top hit for 100 % of random queries just after the build, 90.5 %
        # 15 s later and after a reload alike). The service needs nothing for that; the sweep reloads so as not to
        # wait, or it would measure brute force.
        self.client.release_collection(self.name)
        self.client.load_collection(self.name)
        return time.perf_counter() - started

    def search(self, queries: np.ndarray, search_params: dict[str, int], *, batch: int = 100) -> np.ndarray:
        top = np.full(len(queries), -1, dtype=np.int64)
        for start in range(0, len(queries), batch):
            results = self.client.search(
                self.name, data=[q.tolist() for q in queries[start : start + batch]], limit=1, anns_field="vector",
                search_params={"metric_type": "COSINE", "params": search_params},
            )
            for i, hits in enumerate(results):
                if hits:
                    top[start + i] = int(hits[0]["id"])
        return top

    def latency(self, queries: np.ndarray, search_params: dict[str, int], *, count: int = 100) -> Latency:
        """One query per call, as CheckDuplicate searches (top 10)."""
        times = []
        for query in queries[:count]:
            begin = time.perf_counter()
            self.client.search(
                self.name, data=[query.tolist()], limit=TOP_K, anns_field="vector",
                search_params={"metric_type": "COSINE", "params": search_params},
            )
            times.append(time.perf_counter() - begin)
        return Latency.of(times)

    def drop(self) -> None:
        self.client.drop_collection(self.name)


def _client(uri: str) -> MilvusClient:
    # Long index builds otherwise die with GOAWAY too_many_pings (shared/notes/milvus.md, trap 3).
    return MilvusClient(uri=uri, timeout=600, grpc_options={"grpc.keepalive_time_ms": 600_000})


SWEEP: tuple[tuple[str, dict[str, int], tuple[dict[str, int], ...]], ...] = (
    ("HNSW", {"M": 8, "efConstruction": 100}, ({"ef": 16}, {"ef": 32}, {"ef": 64}, {"ef": 128})),
    ("HNSW", {"M": 16, "efConstruction": 200}, ({"ef": 16}, {"ef": 32}, {"ef": 64}, {"ef": 128})),
    ("HNSW", {"M": 32, "efConstruction": 200}, ({"ef": 16}, {"ef": 32}, {"ef": 64})),
    ("IVF_FLAT", {"nlist": 64}, ({"nprobe": 2}, {"nprobe": 4}, {"nprobe": 8}, {"nprobe": 16})),
    ("IVF_FLAT", {"nlist": 256}, ({"nprobe": 4}, {"nprobe": 8}, {"nprobe": 16}, {"nprobe": 32})),
    ("IVF_SQ8", {"nlist": 256}, ({"nprobe": 8}, {"nprobe": 16}, {"nprobe": 32})),
)


def sweep(uri: str, real: RealEmbeddings) -> list[SweepResult]:
    """hit@1 against exact search for each (index, build, search) setting, on real embeddings."""
    stored = real.stored
    truth, truth_heavy = exact_top1(stored, real.light), exact_top1(stored, real.heavy)
    client = _client(uri)
    results = []
    try:
        for index_type, build, searches in tqdm(SWEEP, desc="index sweep", unit="index", leave=False):
            collection = _Collection(client, stored.shape[1], index_type, build)
            try:
                collection.insert(stored, desc=f"insert {index_type}")
                started = time.perf_counter()
                collection.wait_indexed()
                build_s = time.perf_counter() - started
                for params in searches:
                    top, top_heavy = collection.search(real.light, params), collection.search(real.heavy, params)
                    results.append(SweepResult(
                        index_type=index_type, build_params=build, search_params=params,
                        hit_at_1=round(float(np.mean(top == truth)), 4),
                        hit_at_1_heavy=round(float(np.mean(top_heavy == truth_heavy)), 4),
                        search_p50_ms=collection.latency(real.heavy, params, count=40).p50_ms,
                        build_s=round(build_s, 1),
                    ))
            finally:
                collection.drop()
    finally:
        client.close()
    return results


def _sizes(sizes: Sequence[int]) -> Iterator[tuple[int, int]]:
    previous = 0
    for size in sorted(sizes):
        yield previous, size
        previous = size


def search_at_sizes(
    uri: str, embeddings: RealEmbeddings, *, sizes: Sequence[int], index: IndexConfig
) -> list[SizeResult]:
    """Grow one collection (the service's index settings) through ``sizes``; measure single-query search at each."""
    real, queries = embeddings.stored, embeddings.heavy
    total = max(sizes)
    synthetic = synthetic_from_real(real, max(0, total - len(real)))
    vectors = np.concatenate([real, synthetic])[:total]
    order = np.random.default_rng(3).permutation(total)  # real vectors spread over every size
    vectors = vectors[order]
    is_real = order < len(real)
    build, search_params = index.build_params(), index.search_params(TOP_K)
    client = _client(uri)
    collection = _Collection(client, vectors.shape[1], index.index_type, build)
    results = []
    try:
        for start, size in _sizes(sizes):
            rate = collection.insert(vectors[start:size], desc=f"insert to {size // 1000}k")
            waited = collection.wait_indexed()
            truth = exact_top1(vectors[:size], queries)
            top = collection.search(queries, search_params)
            others = []
            if size == total:
                for params in SEARCH_SWEEP.get(index.index_type, ()):
                    hit = float(np.mean(collection.search(queries, params) == truth))
                    others.append({"search_params": params, "hit_at_1": round(hit, 4),
                                   "p50_ms": collection.latency(queries, params, count=40).p50_ms})
            results.append(SizeResult(
                vectors=size, real_vectors=int(is_real[:size].sum()), synthetic_vectors=int((~is_real[:size]).sum()),
                index_type=index.index_type, build_params=build, search_params=search_params,
                search=collection.latency(queries, search_params), hit_at_1=round(float(np.mean(top == truth)), 4),
                insert_rows_s=round(rate, 1), index_wait_s=round(waited, 1), search_sweep=others,
            ))
    finally:
        collection.drop()
        client.close()
    return results


def tolist_cost_us(dim: int) -> dict[str, float]:
    """What pymilvus' float-vector path costs per vector: our .tolist() and its struct packing (microseconds)."""
    from pymilvus.client import blob

    vector = np.random.default_rng(0).random(dim, dtype=np.float32)
    runs = 2000
    started = time.perf_counter()
    for _ in range(runs):
        values = vector.tolist()
    tolist_us = (time.perf_counter() - started) / runs * 1e6
    started = time.perf_counter()
    for _ in range(runs):
        blob.vector_float_to_bytes(values)
    pack_us = (time.perf_counter() - started) / runs * 1e6
    return {"tolist_us": round(tolist_us, 1), "pack_us": round(pack_us, 1)}


def best_setting(results: Sequence[SweepResult], *, min_hit: float = 0.99) -> SweepResult | None:
    """The fastest setting whose hit@1 (light and heavy) is at least ``min_hit``, else the most accurate."""
    good = [r for r in results if min(r.hit_at_1, r.hit_at_1_heavy) >= min_hit]
    if good:
        return min(good, key=lambda r: (r.search_p50_ms, -r.hit_at_1_heavy))
    return max(results, key=lambda r: (r.hit_at_1_heavy, r.hit_at_1)) if results else None
