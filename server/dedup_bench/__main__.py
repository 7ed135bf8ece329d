"""`make bench` = `python -m dedup_bench`: start a stack on free ports, measure, print a table then one JSON line.

    python -m dedup_bench [--images 600] [--ingest-runs 3] [--sizes 10000,100000] [--no-sweep] [--out DIR]
                          [--workers 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from dedup_client import DedupClient
from dedup_server.config import ServerConfig
from dedup_server.embedder import TritonEmbedder
from dedup_stack.ephemeral import ephemeral_stack

from . import cpu, measure, photos, report, vectors
from . import workers as workers_bench

logger = logging.getLogger("dedup_bench")

REPO_DIR = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_REPOSITORY = REPO_DIR / "triton_models"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dedup_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=600, help="distinct 640x480 JPEGs to ingest")
    parser.add_argument("--ingest-runs", type=int, default=3, help="IndexStream runs (median reported)")
    parser.add_argument("--check-requests", type=int, default=100, help="CheckDuplicate calls at concurrency 1")
    parser.add_argument("--c32-requests", type=int, default=640, help="CheckDuplicate calls at concurrency 32")
    parser.add_argument("--naive-budget-s", type=float, default=20.0, help="how long the naive loop runs")
    parser.add_argument("--sizes", default="10000,100000", help="collection sizes for Milvus search latency")
    parser.add_argument("--real-vectors", type=int, default=3000, help="real embeddings computed for Milvus")
    parser.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the index parameter sweep")
    parser.add_argument("--cache", type=Path, default=REPO_DIR / ".dedup-data" / "bench-cache",
                        help="where generated JPEGs are kept between runs")
    parser.add_argument("--eval-cache", type=Path, default=REPO_DIR / ".dedup-data" / "eval-cache",
                        help="the evaluation corpus cache (Debian photo packages)")
    parser.add_argument("--out", type=Path, default=REPO_DIR / ".dedup-data" / "bench",
                        help="where the stack's data and logs and the result JSON go")
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY,
                        help="the Triton model repository to serve and to measure alone (default: the built one)")
    parser.add_argument("--workers", type=workers_bench.parse_args, default=[],
                        help="also compare fronts of these DEDUP_WORKERS counts (e.g. 1,2), each on a stack of its own")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


async def _embed_ab(triton_url: str, images: np.ndarray, *, batch: int, rounds: int = 3) -> dict[str, float]:
    """Images/s of TritonEmbedder over the wire and through shared memory, interleaved (same load)."""
    embedders = {
        mode: TritonEmbedder(url=triton_url, model="embedder", timeout_s=120, max_message_bytes=256 << 20,
                             shared_memory=mode, max_batch=batch, shared_memory_regions=1)
        for mode in ("off", "on")
    }
    rates: dict[str, list[float]] = {mode: [] for mode in embedders}
    batches = [list(images[i : i + batch]) for i in range(0, len(images) - batch + 1, batch)][:8]
    try:
        for embedder in embedders.values():
            await embedder.embed(batches[0])  # warm-up, registers the region
        for _ in range(rounds):
            for mode, embedder in embedders.items():
                started = time.perf_counter()
                for chunk in batches:
                    await embedder.embed(chunk)
                rates[mode].append(len(batches) * batch / (time.perf_counter() - started))
    finally:
        for embedder in embedders.values():
            await embedder.close()
    return {mode: statistics.median(values) for mode, values in rates.items()}


async def _embed_b1(triton_url: str, images: np.ndarray, *, runs: int = 60) -> measure.Latency:
    """One image per Triton call, as CheckDuplicate at concurrency 1 sends it (shared memory when local)."""
    embedder = TritonEmbedder(url=triton_url, model="embedder", timeout_s=60, max_message_bytes=64 << 20,
                              shared_memory="auto", max_batch=1, shared_memory_regions=1)
    try:
        await embedder.embed([images[0]])
        times = []
        for i in range(runs):
            started = time.perf_counter()
            await embedder.embed([images[i % len(images)]])
            times.append(time.perf_counter() - started)
    finally:
        await embedder.close()
    return measure.Latency.of(times)


def _check_breakdown(stack_triton: str, stack_milvus: str, jpegs: list[bytes], pixels: np.ndarray,
                     config: ServerConfig, collection: str, served: Path, *, grey: bool) -> dict[str, float]:
    """p50 of each step of CheckDuplicate at concurrency 1, measured alone: decode, Triton (one image), search."""
    from dedup_server.decode import DecodeLimits, decode_image
    from dedup_server.index import CONSISTENCY, METADATA_FIELD, METRIC, VECTOR_FIELD
    from pymilvus import MilvusClient

    times = []
    for data in jpegs[:60]:
        started = time.perf_counter()
        decode_image(data, DecodeLimits(), grey=grey)
        times.append(time.perf_counter() - started)
    decode = measure.Latency.of(times)
    triton = asyncio.run(_embed_b1(stack_triton, pixels))
    session = measure.cpu_session(served)
    vectors_ = measure.embed_all(session, pixels[:60])
    client = MilvusClient(uri=stack_milvus)
    times = []
    try:
        for vector in vectors_:
            started = time.perf_counter()
            client.search(config.collection_prefix + collection, data=[vector.tolist()], limit=config.default_top_k,
                          anns_field=VECTOR_FIELD, output_fields=[METADATA_FIELD], consistency_level=CONSISTENCY,
                          search_params={"metric_type": METRIC,
                                         "params": config.index.search_params(config.default_top_k)})
            times.append(time.perf_counter() - started)
    finally:
        client.close()
    search = measure.Latency.of(times)
    return {"decode_p50_ms": decode.p50_ms, "triton_b1_p50_ms": triton.p50_ms, "milvus_search_p50_ms": search.p50_ms}


def _triton_counters(triton_url: str) -> tuple[int, int, int, int, int]:
    """(images, executions, requests, queue ns, compute ns) so far, from Triton's statistics."""
    import tritonclient.grpc as triton_grpc

    with triton_grpc.InferenceServerClient(triton_url) as client:
        stats = client.get_inference_statistics("embedder").model_stats[0]
    infer = stats.inference_stats
    return (stats.inference_count, stats.execution_count, infer.success.count, infer.queue.ns,
            infer.compute_infer.ns)


def _triton_stats(before: tuple[int, ...], after: tuple[int, ...]) -> dict[str, float]:
    images, executions, requests, queue_ns, compute_ns = (a - b for a, b in zip(after, before, strict=True))
    return {
        "triton_mean_batch": round(images / max(executions, 1), 1),
        "triton_queue_ms": round(queue_ns / max(requests, 1) / 1e6, 2),
        "triton_compute_ms_per_img": round(compute_ns / max(images, 1) / 1e6, 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = ServerConfig.from_env({k: v for k, v in os.environ.items() if k.startswith("DEDUP_")})
    batch = config.embed_batch.max_batch_size
    sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    card = json.loads((args.model_repository / "embedder" / "model_card.json").read_text())
    served = args.model_repository / "embedder" / "1" / "model.onnx"
    result: dict[str, Any] = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": f"{card['model_id']}@{card['model_version']}", "precision": card.get("precision", "fp32"),
        "batch_size": batch, "images": args.images, "cpu_count": os.cpu_count(),
        "load_avg_start": round(os.getloadavg()[0], 2),
    }

    jpegs = photos.bench_jpegs(args.cache, args.eval_cache, count=args.images)
    result["jpeg_kb_mean"] = round(statistics.mean(len(j) for j in jpegs) / 1024, 1)
    grey = measure.reads_luma(args.model_repository / "embedder" / "config.pbtxt")
    result["decode_grey"] = grey
    pixels, result["decode_img_s"] = measure.decode_all(jpegs, threads=config.decode_threads, grey=grey)
    result["decode_img_s"] = round(result["decode_img_s"], 1)
    result["decode_threads"] = config.decode_threads
    sources = photos.source_photos(args.eval_cache)
    # Queries: other crops of the same photos (near-duplicates of indexed images, and look-alikes).
    queries = [photos.encode_jpeg(photos.variant(sources[i % len(sources)], np.random.default_rng(1000 + i)))
               for i in range(64)]

    run_dir = args.out / f"run-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    with ephemeral_stack(run_dir, model_repository=args.model_repository) as stack:
        result["stack_startup_s"] = round(stack.startup_s, 1)
        session = measure.cpu_session(served)
        result["model_p50_ms_b1"] = measure.model_latency_b1(session, pixels).p50_ms
        ab = asyncio.run(_embed_ab(stack.triton_url, pixels, batch=batch))
        result["triton_wire_img_s"], result["triton_shm_img_s"] = round(ab["off"], 1), round(ab["on"], 1)

        with DedupClient(stack.target, timeout=60) as client:
            runs: list[float] = []
            statuses: dict[Any, int] = {}
            triton_before, cpu_before = _triton_counters(stack.triton_url), cpu.cpu_seconds(run_dir)
            model_runs: list[measure.ModelRun] = []
            for i in range(args.ingest_runs):
                # The model alone is measured between the ingest runs, not once before them: on a shared machine
                # the load changes within a minute, and the ratio must compare like with like.
                cpu_model = cpu.cpu_seconds(run_dir)
                model_runs.append(measure.model_throughput(session, pixels, batch=batch, passes=1))
                cpu_before = {k: v + cpu_before.get(k, 0.0) - cpu_model.get(k, 0.0)
                              for k, v in cpu.cpu_seconds(run_dir).items()}
                rate, statuses = measure.ingest(client, jpegs, collection=f"bench_ingest_{i}")
                runs.append(round(rate, 1))
            cpu_after = cpu.cpu_seconds(run_dir)
            model_runs.append(measure.model_throughput(session, pixels, batch=batch, passes=1))
            result["model_runs"] = [round(run.img_s, 1) for run in model_runs]
            result["model_img_s"] = statistics.median(result["model_runs"])
            # The model's own CPU cost per image: with the stack's CPU per ingested image it bounds what ingest can
            # reach on this machine (report.bounds).
            result["model_cpu_ms_per_img"] = round(statistics.median(run.cpu_ms_per_img for run in model_runs), 2)
            # Dynamic batching and CPU per image during the ingest runs only (warm-up items included).
            result.update(_triton_stats(triton_before, _triton_counters(stack.triton_url)))
            result["ingest_cpu_ms_per_img"] = cpu.per_image_ms(cpu_before, cpu_after, args.ingest_runs * len(jpegs))
            result["ingest_runs"] = runs
            result["ingest_statuses_last_run"] = {getattr(k, "name", str(k)): v for k, v in statuses.items()}
            result["ingest_img_s"] = statistics.median(runs)
            result["naive_img_s"] = round(measure.naive_loop(
                jpegs, triton_url=stack.triton_url, milvus_uri=stack.milvus_uri, model="embedder",
                budget_s=args.naive_budget_s, grey=grey), 1)
            check_queries = [queries[i % len(queries)] for i in range(args.check_requests)]
            c1 = measure.check_sequential(client, check_queries, collection="bench_ingest_0")
        c32_queries = [queries[i % len(queries)] for i in range(args.c32_requests)]
        c32 = measure.check_concurrent(stack.target, c32_queries, collection="bench_ingest_0", concurrency=32)
        result["check_c1_parts"] = _check_breakdown(stack.triton_url, stack.milvus_uri, list(jpegs), pixels, config,
                                                    "bench_ingest_0", served, grey=grey)
        for name, latency in (("c1", c1), ("c32", c32)):
            result[f"check_p50_ms_{name}"], result[f"check_p99_ms_{name}"] = latency.p50_ms, latency.p99_ms
            result[f"check_errors_{name}"], result[f"check_rps_{name}"] = latency.errors, latency.rps
        result["ratio_ingest_vs_model"] = round(result["ingest_img_s"] / result["model_img_s"], 3)
        result["ratio_ingest_vs_naive"] = round(result["ingest_img_s"] / result["naive_img_s"], 2)
        result["ratio_check_p50_c1_vs_model_b1"] = round(result["check_p50_ms_c1"] / result["model_p50_ms_b1"], 2)
        result.update(report.bounds(result))

        real = vectors.real_embeddings(session, sources, count=args.real_vectors, queries=300)
        if args.sweep:
            sweep = vectors.sweep(stack.milvus_uri, real)
            result["sweep"] = [dataclasses.asdict(r) for r in sweep]
            best = vectors.best_setting(sweep)
            result["index_recommendation"] = dataclasses.asdict(best) if best else None
        if sizes:
            at_sizes = vectors.search_at_sizes(stack.milvus_uri, real, sizes=sizes, index=config.index)
            result["search"] = [dataclasses.asdict(r) for r in at_sizes]
            for size in at_sizes:
                label = f"{size.vectors // 1000}k"
                result[f"search_p50_ms_{label}"] = size.search.p50_ms
                result[f"search_p99_ms_{label}"] = size.search.p99_ms
        result["milvus_vector_encoding"] = vectors.tolist_cost_us(real.stored.shape[1])
    shutil.rmtree(run_dir, ignore_errors=True)
    if args.workers:
        compared = workers_bench.compare(run_dir, jpegs, queries, workers=args.workers,
                                         model_repository=args.model_repository)
        result["workers"] = [dataclasses.asdict(r) for r in compared]
        shutil.rmtree(run_dir, ignore_errors=True)
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    result["targets"] = report.targets(result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    started = time.monotonic()
    result = run(args)
    result["bench_seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(report.table(result), flush=True)
    if args.workers:
        print(workers_bench.table([workers_bench.WorkersRun(**r) for r in result["workers"]]), flush=True)
    print(report.json_line(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
