"""The measurements: model alone, decode, the naive loop, IndexStream ingest, CheckDuplicate latency.

Each returns plain numbers; __main__ runs them in one process against one stack so their ratios are fair.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
from dedup.v1 import dedup_pb2, dedup_pb2_grpc
from dedup_client import DedupClient, IndexItem
from dedup_server.decode import DecodeLimits, decode_image
from dedup_server.embedder import input_colour
from tqdm import tqdm

DECODE_LIMITS = DecodeLimits()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Latency:
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    rps: float = 0.0

    @classmethod
    def of(cls, seconds: Sequence[float], *, errors: int = 0, wall_s: float = 0.0) -> Latency:
        ordered = sorted(seconds)
        if not ordered:
            return cls(p50_ms=float("nan"), p99_ms=float("nan"), requests=0, errors=errors)
        p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
        return cls(
            p50_ms=round(1000 * statistics.median(ordered), 2),
            p99_ms=round(1000 * p99, 2),
            requests=len(ordered) + errors,
            errors=errors,
            rps=round(len(ordered) / wall_s, 1) if wall_s else 0.0,
        )


def cpu_session(model_path: Path, *, threads: int = 0) -> ort.InferenceSession:
    """The served file with the python-backend model's session options (same threads, no spin-waiting)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


def reads_luma(config_pbtxt: Path) -> bool:
    """True when the served model declares input_colour "luma": the front then decodes JPEGs to grey, and so do
    the bench's own decodes (the naive loop included), so that every measure decodes alike."""
    from dedup_modelbuild.render import parse_config

    parameters = parse_config(config_pbtxt.read_text()).parameters
    return input_colour({key: value.string_value for key, value in parameters.items()}) == "luma"


def decode_all(jpegs: Sequence[bytes], *, threads: int, grey: bool) -> tuple[np.ndarray, float]:
    """Decode every JPEG as the front does; returns the uint8 batch and images/s with ``threads`` threads."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        arrays = list(pool.map(lambda data: decode_image(data, DECODE_LIMITS, grey=grey), jpegs))
    return np.stack(arrays), len(jpegs) / (time.perf_counter() - started)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelRun:
    img_s: float
    cpu_ms_per_img: float  # this process's CPU (ONNX Runtime's threads) per image, the warm-up included


def model_throughput(session: ort.InferenceSession, images: np.ndarray, *, batch: int, passes: int = 3) -> ModelRun:
    """Images/s of ONNX Runtime alone at ``batch`` (median over passes through ``images``, after a warm-up), and its
    CPU cost per image (this process runs nothing else meanwhile)."""
    cpu_started = time.process_time()
    session.run(None, {"images": images[:batch]})
    rates = []
    done = (len(images) // batch) * batch
    for _ in range(passes):
        started = time.perf_counter()
        for start in range(0, len(images) - batch + 1, batch):
            session.run(None, {"images": images[start : start + batch]})
        rates.append(done / (time.perf_counter() - started))
    cpu_ms = 1000 * (time.process_time() - cpu_started) / (batch + passes * done)
    return ModelRun(img_s=statistics.median(rates), cpu_ms_per_img=cpu_ms)


def model_latency_b1(session: ort.InferenceSession, images: np.ndarray, *, runs: int = 60) -> Latency:
    session.run(None, {"images": images[:1]})
    times = []
    for i in range(runs):
        started = time.perf_counter()
        session.run(None, {"images": images[i % len(images)][None]})
        times.append(time.perf_counter() - started)
    return Latency.of(times)


def embed_all(session: ort.InferenceSession, images: np.ndarray, *, batch: int = 32) -> np.ndarray:
    parts = [session.run(None, {"images": images[i : i + batch]})[0] for i in range(0, len(images), batch)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def naive_loop(
    jpegs: Sequence[bytes], *, triton_url: str, milvus_uri: str, model: str, budget_s: float, grey: bool
) -> float:
    """A seed-style loop, one image at a time: decode, one Triton call over gRPC, one Milvus insert.

    Runs for at most ``budget_s`` (it is slow on purpose); returns images/s.
    """
    import tritonclient.grpc as triton_grpc
    from pymilvus import MilvusClient

    triton = triton_grpc.InferenceServerClient(triton_url)
    milvus = MilvusClient(uri=milvus_uri)
    collection = f"bench_naive_{uuid.uuid4().hex[:8]}"
    try:
        first = decode_image(jpegs[0], DECODE_LIMITS, grey=grey)[None]
        probe = triton_grpc.InferInput("images", list(first.shape), "UINT8")
        probe.set_data_from_numpy(first)
        dim = triton.infer(model, [probe]).as_numpy("embeddings").shape[1]
        milvus.create_collection(collection, dimension=dim, metric_type="COSINE", auto_id=True)
        done = 0
        started = time.perf_counter()
        for data in tqdm(jpegs, desc="naive loop", unit="img", leave=False):
            pixels = decode_image(data, DECODE_LIMITS, grey=grey)[None]
            request = triton_grpc.InferInput("images", list(pixels.shape), "UINT8")
            request.set_data_from_numpy(pixels)
            vector = triton.infer(model, [request]).as_numpy("embeddings")[0]
            milvus.insert(collection, [{"vector": vector.tolist()}])
            done += 1
            if time.perf_counter() - started > budget_s:
                break
        return done / (time.perf_counter() - started)
    finally:
        try:
            milvus.drop_collection(collection)
        finally:
            milvus.close()
            triton.close()


def ingest(client: DedupClient, jpegs: Sequence[bytes], *, collection: str) -> tuple[float, dict[str, int]]:
    """IndexStream every JPEG into a fresh collection (created by one warm-up item first); images/s, statuses."""
    list(client.index([IndexItem(id="warm-up", image=jpegs[0], collection=collection)]))
    items = (IndexItem(id=f"img{i:05d}", image=data, collection=collection) for i, data in enumerate(jpegs))
    statuses: dict[str, int] = {}
    started = time.perf_counter()
    for result in tqdm(client.index(items), total=len(jpegs), desc=f"ingest {collection}", unit="img", leave=False):
        statuses[result.status] = statuses.get(result.status, 0) + 1
    return len(jpegs) / (time.perf_counter() - started), statuses


def check_sequential(client: DedupClient, queries: Sequence[bytes], *, collection: str) -> Latency:
    times, errors = [], 0
    started = time.perf_counter()
    for data in tqdm(queries, desc="check c=1", unit="req", leave=False):
        begin = time.perf_counter()
        try:
            client.check(data, collection=collection)
        except Exception:  # counted, not fatal: the report says how many failed
            errors += 1
            continue
        times.append(time.perf_counter() - begin)
    return Latency.of(times, errors=errors, wall_s=time.perf_counter() - started)


def check_concurrent(target: str, queries: Sequence[bytes], *, collection: str, concurrency: int) -> Latency:
    """``concurrency`` callers at once (asyncio gRPC, one channel), each sending its share of ``queries``."""

    async def run() -> Latency:
        times: list[float] = []
        errors = 0
        async with grpc.aio.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 << 20)]
        ) as channel:
            stub = dedup_pb2_grpc.DeduplicationStub(channel)
            progress = tqdm(total=len(queries), desc=f"check c={concurrency}", unit="req", leave=False)

            async def caller(share: Sequence[bytes]) -> None:
                nonlocal errors
                for data in share:
                    begin = time.perf_counter()
                    try:
                        await stub.CheckDuplicate(
                            dedup_pb2.CheckDuplicateRequest(image=data, collection=collection), timeout=30
                        )
                        times.append(time.perf_counter() - begin)
                    except grpc.aio.AioRpcError:
                        errors += 1
                    progress.update()

            started = time.perf_counter()
            await asyncio.gather(*(caller(queries[i::concurrency]) for i in range(concurrency)))
            wall = time.perf_counter() - started
            progress.close()
        return Latency.of(times, errors=errors, wall_s=wall)

    return asyncio.run(run())
