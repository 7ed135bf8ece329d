"""`make bench-scale` = `python -m dedup_bench_scale`: a million vectors on a Milvus standalone of its own.

    python -m dedup_bench_scale [--vectors 1000000] [--index-types HNSW,IVF_SQ8,IVF_PQ] [--no-groups] [--out DIR]

Prints the fit of the background, a table per index type and search setting, and as its last line one JSON
object (the shipped default index's numbers at top level; every index type under "indexes").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from dedup_bench.measure import reads_luma
from dedup_modelbuild.render import parse_config
from dedup_server.config import IndexConfig
from dedup_server.model_identity import ModelInfo, input_colour
from tqdm import tqdm

from . import background, corpus, milvus_run, service_search

logger = logging.getLogger("dedup_bench_scale")

REPO_DIR = Path(__file__).resolve().parents[2]
SHORTCUT = ("vectors are loaded through pymilvus, a benchmark shortcut: IndexStream of images is the API (its "
            "throughput is make bench's ingest_img_s)")
INSERT_BATCH = 2000
CHUNK = 10_000

#: Build parameters per index type (HNSW and IVF: the service's defaults, config.IndexConfig) and search sweeps.
SHIPPED = IndexConfig()
BUILDS: dict[str, dict[str, int]] = {
    "HNSW": SHIPPED.build_params() if SHIPPED.index_type == "HNSW" else {"M": 16, "efConstruction": 200},
    "IVF_SQ8": {"nlist": SHIPPED.ivf_nlist},
    "IVF_PQ": {"nlist": SHIPPED.ivf_nlist, "m": 32, "nbits": 8},
    "IVF_FLAT": {"nlist": SHIPPED.ivf_nlist},
    "FLAT": {},  # a check of the measurement itself: its hit@1 must be 1
}
SWEEPS: dict[str, tuple[dict[str, int], ...]] = {
    "HNSW": ({"ef": 16}, {"ef": 32}, {"ef": 64}, {"ef": 128}, {"ef": 256}, {"ef": 512}),
    "IVF_SQ8": ({"nprobe": 8}, {"nprobe": 16}, {"nprobe": 32}, {"nprobe": 64}),
    "IVF_PQ": ({"nprobe": 8}, {"nprobe": 16}, {"nprobe": 32}, {"nprobe": 64}),
    "IVF_FLAT": ({"nprobe": 8}, {"nprobe": 16}, {"nprobe": 32}, {"nprobe": 64}),
    "FLAT": ({},),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dedup_bench_scale", description=__doc__.split("\n")[0])
    parser.add_argument("--vectors", type=int, default=1_000_000, help="rows in the collection, all kinds")
    parser.add_argument("--photos", type=int, default=1000, help="real photos to use (at most the corpus's 468+)")
    parser.add_argument("--index-types", default="HNSW,IVF_SQ8,IVF_PQ", help="built in turn on the same rows")
    parser.add_argument("--c1-requests", type=int, default=200)
    parser.add_argument("--c32-requests", type=int, default=640)
    parser.add_argument("--sweep-requests", type=int, default=60, help="c1 searches per swept setting")
    parser.add_argument("--no-groups", dest="groups", action="store_false", help="skip FindDuplicateGroups")
    parser.add_argument("--groups-timeout-s", type=float, default=3600.0,
                        help="stop FindDuplicateGroups after this long (reported as timed out)")
    parser.add_argument("--no-restart", dest="restart", action="store_false",
                        help="measure Milvus memory without restarting it after each build (faster, less clean)")
    parser.add_argument("--eval-cache", type=Path, default=REPO_DIR / ".dedup-data" / "eval-cache")
    parser.add_argument("--cache", type=Path, default=REPO_DIR / ".dedup-data" / "bench-scale-cache",
                        help="real embeddings, kept between runs")
    parser.add_argument("--out", type=Path, default=REPO_DIR / ".dedup-data" / "bench-scale",
                        help="Milvus' data and logs (removed after the run) and bench-scale.json")
    parser.add_argument("--model-repository", type=Path, default=REPO_DIR / "triton_models")
    layout = milvus_run.SegmentLayout()
    parser.add_argument("--segment-max-size-mb", type=int, default=layout.max_size_mb,
                        help="Milvus dataCoord.segment.maxSize (default: 2.3.5's own)")
    parser.add_argument("--segment-seal-proportion", type=float, default=layout.seal_proportion,
                        help="share of maxSize at which a growing segment is sealed")
    parser.add_argument("--segment-max-binlog-files", type=int, default=layout.max_binlog_files,
                        help="binlog files (16 MB each) at which a growing segment is sealed")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def served_model(repository: Path) -> ModelInfo:
    """The served model's identity, read from its Triton config as the front reads it from Triton."""
    config = parse_config((repository / "embedder" / "config.pbtxt").read_text())
    params = {key: value.string_value for key, value in config.parameters.items()}
    return ModelInfo(name=params["model_id"], version=params["model_version"],
                     embedding_dim=int(params["embedding_dim"]), input_size=224,
                     fallback=params.get("fallback", "false") == "true", warning="",
                     precision=params.get("precision", "fp32"), input_colour=input_colour(params))


def _index_config(index_type: str, search: dict[str, int]) -> IndexConfig:
    build = BUILDS[index_type]
    if index_type == "FLAT":
        return IndexConfig(index_type="FLAT")
    if index_type == "HNSW":
        return IndexConfig(index_type="HNSW", hnsw_m=build["M"], hnsw_ef_construction=build["efConstruction"],
                           hnsw_ef=search.get("ef", SHIPPED.hnsw_ef))
    return IndexConfig(index_type=index_type, ivf_nlist=build["nlist"], ivf_nprobe=search.get("nprobe", 16))


def _shipped_search(index_type: str) -> dict[str, int]:
    return _index_config(index_type, {}).search_params(milvus_run.TOP_K)


def _load_rows(args: argparse.Namespace, milvus: milvus_run.Milvus, name: str, model: ModelInfo,
               real: corpus.RealSet, bg: background.BackgroundModel, queries: np.ndarray) -> dict[str, Any]:
    """Insert background and real rows, real ones spread over the run; exact top-1 (float32 and float16) on the way."""
    photos = len(real.originals)
    real_ids = [f"photo{i:04d}" for i in range(photos)] + [f"photo{i:04d}~planted" for i in range(photos)]
    real_vectors = np.concatenate([real.originals, real.planted])
    real_rows = milvus_run.rows(real_ids, real_vectors, model, real.original_signatures + real.planted_signatures,
                                real.original_layouts + real.planted_layouts)
    background_count = max(0, args.vectors - len(real_rows))
    exact, exact16 = milvus_run.ExactTop1(queries), milvus_run.ExactTop1(queries.astype(np.float16).astype(np.float32))
    exact.add(real_vectors, lambda i: real_ids[i])
    exact16.add(real_vectors.astype(np.float16).astype(np.float32), lambda i: real_ids[i])
    client = milvus_run.client(milvus.uri)
    # No index while loading: the service's collection comes with one, which Milvus would build on every sealed
    # segment during the insert (the build is measured on its own afterwards).
    milvus_run.drop_index(client, name)
    insert_s = 0.0
    chunks = max(1, -(-background_count // CHUNK))
    per_chunk = -(-len(real_rows) // chunks)
    try:
        progress = tqdm(total=args.vectors, desc="insert", unit="row", leave=False)
        for k, (start, vectors) in enumerate(bg.chunks(background_count, chunk=CHUNK, seed=1234)):
            exact.add(vectors, functools.partial(_background_id, start))
            exact16.add(vectors.astype(np.float16).astype(np.float32), functools.partial(_background_id, start))
            batch_rows = milvus_run.rows([f"bg{start + i:07d}" for i in range(len(vectors))], vectors, model)
            batch_rows += real_rows[k * per_chunk:(k + 1) * per_chunk]
            for offset in range(0, len(batch_rows), INSERT_BATCH):
                began = time.perf_counter()
                client.insert(name, batch_rows[offset:offset + INSERT_BATCH])
                insert_s += time.perf_counter() - began
            progress.update(len(batch_rows))
        if background_count == 0:
            began = time.perf_counter()
            client.insert(name, real_rows)
            insert_s += time.perf_counter() - began
        progress.close()
        began = time.perf_counter()
        client.flush(name)
        flush_s = time.perf_counter() - began
    finally:
        client.close()
    total = background_count + len(real_rows)
    return {"rows": total, "background": background_count, "real": len(real_rows), "exact": exact,
            "exact16": exact16, "insert_rows_s": round(total / (insert_s + flush_s), 1),
            "insert_s": round(insert_s, 1), "flush_s": round(flush_s, 1)}


def _background_id(start: int, row: int) -> str:
    return f"bg{start + row:07d}"


def _groups(milvus: milvus_run.Milvus, model: ModelInfo, index: IndexConfig, timeout_s: float) -> dict[str, Any]:
    """FindDuplicateGroups in a child process (its peak RSS is the front's)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_DIR / "server"), str(REPO_DIR / "clients" / "python"),
                                         str(REPO_DIR), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "dedup_bench_scale.groups_probe", "--uri", milvus.uri,
            "--model-json", json.dumps(dataclasses.asdict(model)),
            "--index-json", json.dumps(dataclasses.asdict(index))]
    try:
        completed = subprocess.run(argv, env=env, check=True, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as expired:
        # What it had scanned by then (its progress lines), for the rate.
        stderr = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        scanned = [line.split()[-1] for line in stderr.splitlines() if line.startswith("groups: scanned")]
        done, _, total = scanned[-1].partition("/") if scanned else ("0", "", "0")
        return {"groups_s": None, "groups_peak_rss_gb": None, "groups_timed_out_s": timeout_s,
                "groups_scanned_at_timeout": int(done), "groups_total": int(total or 0),
                "groups_scan_rows_s": round(int(done) / timeout_s, 1)}
    except subprocess.CalledProcessError as failed:
        # Reported, not fatal: the index measurements above are kept.
        logger.error("FindDuplicateGroups failed: %s", (failed.stderr or "")[-3000:])
        return {"groups_s": None, "groups_peak_rss_gb": None, "groups_error": (failed.stderr or "")[-500:]}
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = served_model(args.model_repository)
    grey = reads_luma(args.model_repository / "embedder" / "config.pbtxt")
    result: dict[str, Any] = {
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": model.label, "dim": model.embedding_dim, "cpu_count": os.cpu_count(), "load_path": SHORTCUT,
        "load_avg_start": round(os.getloadavg()[0], 2),
    }
    started = time.monotonic()
    real = corpus.real_set(args.model_repository / "embedder" / "1" / "model.onnx", args.eval_cache, args.cache,
                           photos=args.photos, grey=grey)
    result["real_embed_s"] = round(time.monotonic() - started, 1)
    bg, fit_report = background.fit(real.originals)
    result["background_fit"] = fit_report
    photos = len(real.originals)
    queries = np.concatenate([real.light, real.heavy])
    query_kind = ["light"] * photos + ["heavy"] * photos
    own = [f"photo{i:04d}" for i in range(photos)] * 2

    run_dir = args.out / f"run-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    layout = milvus_run.SegmentLayout(max_size_mb=args.segment_max_size_mb,
                                      seal_proportion=args.segment_seal_proportion,
                                      max_binlog_files=args.segment_max_binlog_files)
    result["segment_layout"] = dataclasses.asdict(layout)
    milvus = milvus_run.Milvus(run_dir / "milvus", REPO_DIR / ".dedup-data" / "milvus-install", layout)
    indexes: list[dict[str, Any]] = []
    try:
        result["milvus_start_s"] = round(milvus.start(), 1)
        result["milvus_idle_rss_gb"] = milvus.rss_gb()
        types = [t.strip() for t in args.index_types.split(",") if t.strip()]
        name = milvus_run.create_collection(milvus.uri, model, _index_config(types[0], {}))
        loaded = _load_rows(args, milvus, name, model, real, bg, queries)
        exact, exact16 = loaded.pop("exact"), loaded.pop("exact16")
        client = milvus_run.client(milvus.uri)
        try:
            result["segments_after_insert"] = milvus_run.segment_rows(client, name)
            result["compact_s"] = round(milvus_run.compact(client, name), 1)
            result["segments"] = milvus_run.segment_rows(client, name)
        finally:
            client.close()
        logger.info("segments: %d after the insert, %d after compaction (%s rows)",
                    len(result["segments_after_insert"]), len(result["segments"]), result["segments"])
        result.update({"vectors": loaded["rows"], "vectors_real": loaded["real"],
                       "vectors_background": loaded["background"], "insert_rows_s": loaded["insert_rows_s"],
                       "insert_s": loaded["insert_s"], "flush_s": loaded["flush_s"], "queries": len(queries)})
        logger.info("loaded: %s", {k: v for k, v in result.items() if k != "background_fit"})
        result["exact_top1_is_own_photo"] = round(float(np.mean(
            [hit.split("~")[0] == mine for hit, mine in zip(exact.ids, own, strict=True)])), 4)
        result["float16"] = {"hit_at_1": round(float(np.mean(np.array(exact16.ids) == np.array(exact.ids))), 4),
                             "vector_bytes": 2 * model.embedding_dim,
                             "note": "exact search over float16-rounded vectors vs float32 (numpy: Milvus 2.3 "
                                     "has no FLOAT16_VECTOR)"}
        client = milvus_run.client(milvus.uri)
        try:
            for index_type in types:
                entry: dict[str, Any] = {"index_type": index_type, "build_params": BUILDS[index_type]}
                entry["build_s"] = round(milvus_run.build_index(client, name, index_type, BUILDS[index_type],
                                                                loaded["rows"]), 1)
                if args.restart:
                    client.close()
                    milvus.stop()
                    milvus.start()
                    client = milvus_run.client(milvus.uri)
                entry["load_s"] = round(milvus_run.load(client, name), 1)
                entry["segments_searched"] = len(milvus_run.segment_rows(client, name, loaded=True))
                entry["milvus_rss_gb"] = milvus.rss_gb()
                entry["bytes_per_vector_rss"] = round(
                    (entry["milvus_rss_gb"] - result["milvus_idle_rss_gb"]) * 1024 ** 3 / loaded["rows"])
                sweep = []
                for params in SWEEPS[index_type]:
                    top = milvus_run.search_top1(client, name, queries, params)
                    hits = np.array(top) == np.array(exact.ids)
                    own_found = [hit.split("~")[0] == mine for hit, mine in zip(top, own, strict=True)]
                    lat = milvus_run.latency(milvus.uri, name, queries, params, concurrency=1,
                                             requests=args.sweep_requests)
                    sweep.append({"search_params": params, "hit_at_1": round(float(hits.mean()), 4),
                                  "hit_at_1_light": round(float(hits[:photos].mean()), 4),
                                  "hit_at_1_heavy": round(float(hits[photos:].mean()), 4), "p50_ms_c1": lat.p50_ms,
                                  "top1_is_own_photo": round(float(np.mean(own_found)), 4)})
                entry["sweep"] = sweep
                shipped = _shipped_search(index_type)
                entry["search_params"] = shipped
                entry["hit_at_1"] = next((s["hit_at_1"] for s in sweep if s["search_params"] == shipped),
                                         float("nan"))
                c1 = milvus_run.latency(milvus.uri, name, queries, shipped, concurrency=1, requests=args.c1_requests)
                c32 = milvus_run.latency(milvus.uri, name, queries, shipped, concurrency=32,
                                         requests=args.c32_requests)
                entry.update({"search_p50_ms_c1": c1.p50_ms, "search_p99_ms_c1": c1.p99_ms,
                              "search_p50_ms_c32": c32.p50_ms, "search_p99_ms_c32": c32.p99_ms,
                              "search_qps_c32": c32.rps, "search_errors": c1.errors + c32.errors})
                # The same queries as CheckDuplicate searches them: concurrent ones merged by the service.
                through = functools.partial(service_search.latency, milvus.uri, name, model,
                                            _index_config(index_type, {}), queries)
                s1 = through(concurrency=1, requests=args.c1_requests)
                s32 = through(concurrency=32, requests=args.c32_requests)
                entry.update({"service_search_p50_ms_c1": s1.p50_ms, "service_search_p99_ms_c1": s1.p99_ms,
                              "service_search_p50_ms_c32": s32.p50_ms, "service_search_p99_ms_c32": s32.p99_ms,
                              "service_search_qps_c32": s32.rps, "service_search_errors": s1.errors + s32.errors})
                logger.info("%s measured: %s", index_type, entry)
                if args.groups and index_type == (SHIPPED.index_type if SHIPPED.index_type in types else types[0]):
                    entry.update(_groups(milvus, model, _index_config(index_type, {}), args.groups_timeout_s))
                indexes.append(entry)
                logger.info("%s: %s", index_type, entry)
        finally:
            client.close()
    finally:
        milvus.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    result["indexes"] = indexes
    default = next((e for e in indexes if e["index_type"] == SHIPPED.index_type), indexes[0] if indexes else {})
    for key in ("index_type", "build_s", "milvus_rss_gb", "search_p50_ms_c1", "search_p99_ms_c32",
                "service_search_p50_ms_c1", "service_search_p99_ms_c32", "segments_searched", "hit_at_1",
                "groups_s", "groups_peak_rss_gb", "groups", "images_in_groups", "search_params", "build_params"):
        result[key] = default.get(key)
    result["query_kinds"] = {kind: query_kind.count(kind) for kind in ("light", "heavy")}
    result["load_avg_end"] = round(os.getloadavg()[0], 2)
    return result


def table(result: dict[str, Any]) -> str:
    fit = result["background_fit"]
    lines = [
        f"bench-scale: {result['vectors']:,} vectors of {result['dim']}-d ({result['model']}), {result['cpu_count']} "
        "cores",
        f"  {result['vectors_real']:,} real (embeddings of {result['vectors_real'] // 2} real photos of the eval "
        f"corpus, with signatures; each stored with one planted edit), {result['vectors_background']:,} background "
        "(synthetic: Gaussian in a PCA subspace of the real embeddings)",
        f"  queries: {result['queries']} real edits of the stored photos ({result['query_kinds']['light']} light, "
        f"{result['query_kinds']['heavy']} heavy); exact (FLAT) top-1 is the query's own photo for "
        f"{result['exact_top1_is_own_photo']:.1%}",
        f"  {SHORTCUT}",
        f"  background fit ({fit['photos']} photos, {fit['pca_components']} PCA directions, clusters of 1 + "
        f"Poisson({fit['cluster_extra']}), own part w={fit['within']}): top-1 neighbour similarity among "
        f"{fit['photos']} vectors",
        "    quantile " + " ".join(f"{q:>7}" for q in fit["real_top1"]),
        "    real     " + " ".join(f"{v:>7.4f}" for v in fit["real_top1"].values()),
        "    fitted   " + " ".join(f"{v:>7.4f}" for v in fit["fitted_top1"].values()),
        f"    mean pairwise cosine: real {fit['real_mean_cosine']}, fitted {fit['fitted_mean_cosine']}; best cosine to "
        f"{fit['background_size_for_that']:,} background vectors (p50): real photos "
        f"{fit['real_to_background_top1_p50']}, background vectors {fit['background_to_background_top1_p50']}",
        f"  insert {result['insert_rows_s']:,.0f} rows/s ({result['insert_s']} s + flush {result['flush_s']} s); "
        f"Milvus idle RSS {result['milvus_idle_rss_gb']} GiB",
        f"  segments: {len(result['segments_after_insert'])} sealed by the insert, {len(result['segments'])} after "
        f"compaction ({result['compact_s']} s; rows {', '.join(f'{n:,}' for n in result['segments'])}); "
        f"Milvus segment settings {result['segment_layout']}",
        f"  float16 vectors ({result['float16']['vector_bytes']} B): hit@1 {result['float16']['hit_at_1']} "
        "(exact search, numpy)",
        "",
        f"  {'index':<9} {'build':<26} {'search':<14} {'hit@1':>6} {'light':>6} {'heavy':>6} {'p50 c1':>8} "
        f"{'own@1':>6} {'build s':>8} {'RSS GiB':>8} {'B/vec':>7}",
    ]
    for entry in result["indexes"]:
        for k, row in enumerate(entry["sweep"]):
            shipped = "*" if row["search_params"] == entry["search_params"] else " "
            head = (f"{entry['build_s']:>8} {entry['milvus_rss_gb']:>8} {entry['bytes_per_vector_rss']:>7}"
                    if k == 0 else "")
            lines.append(
                f"  {entry['index_type']:<9} {json.dumps(entry['build_params']):<26} "
                f"{shipped}{json.dumps(row['search_params']):<13} {row['hit_at_1']:>6.4f} "
                f"{row['hit_at_1_light']:>6.4f} "
                f"{row['hit_at_1_heavy']:>6.4f} {row['p50_ms_c1']:>8.2f} {row['top1_is_own_photo']:>6.4f} {head}")
    lines.append("")
    lines.append("  * = the service's search setting; at it:")
    for entry in result["indexes"]:
        line = (f"  {entry['index_type']:<9} c1 p50 {entry['search_p50_ms_c1']} ms p99 {entry['search_p99_ms_c1']} ms"
                f"; c32 p50 {entry['search_p50_ms_c32']} ms p99 {entry['search_p99_ms_c32']} ms "
                f"({entry['search_qps_c32']} qps); errors {entry['search_errors']}; "
                f"{entry.get('segments_searched')} segments searched")
        if "service_search_p50_ms_c1" in entry:
            line += (f"; through the service's search batcher: c1 p50 {entry['service_search_p50_ms_c1']} ms p99 "
                     f"{entry['service_search_p99_ms_c1']} ms, c32 p50 {entry['service_search_p50_ms_c32']} ms p99 "
                     f"{entry['service_search_p99_ms_c32']} ms ({entry['service_search_qps_c32']} qps)")
        if entry.get("groups_error"):
            line += f"; FindDuplicateGroups failed: {entry['groups_error'].strip().splitlines()[-1]}"
        elif entry.get("groups_timed_out_s"):
            line += (f"; FindDuplicateGroups did not finish within {entry['groups_timed_out_s']} s: scanned "
                     f"{entry['groups_scanned_at_timeout']:,} of {entry['groups_total']:,} "
                     f"({entry['groups_scan_rows_s']} rows/s)")
        elif "groups_s" in entry:
            line += (f"; FindDuplicateGroups {entry['groups_s']} s, peak front RSS "
                     f"{entry['groups_peak_rss_gb']} GiB, {entry['groups']} groups / {entry['images_in_groups']} "
                     f"images (largest {entry['largest_group']})")
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    started = time.monotonic()
    result = run(args)
    result["bench_seconds"] = round(time.monotonic() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench-scale.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(table(result), flush=True)
    print(json.dumps({key: value for key, value in result.items() if key not in ("background_fit",)}, default=str),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
