"""The human table and the one-line JSON (always the last line printed)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

# Targets of the service on this machine, checked on ratios measured in one run.
TARGETS: dict[str, tuple[str, str, float]] = {
    "ingest >= 0.8 x model alone": ("ratio_ingest_vs_model", ">=", 0.8),
    "ingest >= 6 x naive loop": ("ratio_ingest_vs_naive", ">=", 6.0),
    "check p50 (c=1) <= 1.5 x model b1": ("ratio_check_p50_c1_vs_model_b1", "<=", 1.5),
    "check p99 (c=32) <= 1500 ms": ("check_p99_ms_c32", "<=", 1500.0),
    "no errors at c=32": ("check_errors_c32", "<=", 0.0),
}


def targets(result: Mapping[str, Any]) -> dict[str, bool | None]:
    verdicts: dict[str, bool | None] = {}
    for name, (key, op, bound) in TARGETS.items():
        value = result.get(key)
        if not isinstance(value, int | float) or math.isnan(value):
            verdicts[name] = None
        else:
            verdicts[name] = value >= bound if op == ">=" else value <= bound
    return verdicts


def bounds(result: Mapping[str, Any]) -> dict[str, float]:
    """What the measured costs of this run allow at best, to read each missed target against.

    - Ingest ceiling: every core busy, each image costing the stack's measured CPU (front, Triton, its python stub,
      Milvus; the bench client excluded). Its ratio to the model alone is the best ingest/model this pipeline can
      show on this machine, whatever the batching.
    - Naive ceiling: ingest cannot outrun the model alone on the same cores, so ingest/naive is at most
      model alone / naive.
    - CheckDuplicate floor: decode + one Triton call + one Milvus search, each measured alone and back to back,
      before any gRPC or front work.
    """
    stack_ms = sum(v for k, v in result["ingest_cpu_ms_per_img"].items() if k != "bench_client")
    ceiling = (result["cpu_count"] or 1) * 1000 / stack_ms if stack_ms > 0 else float("nan")
    floor = sum(result["check_c1_parts"].values())
    return {
        "ingest_stack_cpu_ms_per_img": round(stack_ms, 2),
        "ingest_ceiling_img_s": round(ceiling, 1),
        "ratio_ingest_ceiling_vs_model": round(ceiling / result["model_img_s"], 3),
        "ratio_naive_ceiling": round(result["model_img_s"] / result["naive_img_s"], 2),
        "check_c1_floor_ms": round(floor, 2),
        "ratio_check_floor_vs_model_b1": round(floor / result["model_p50_ms_b1"], 2),
    }


def _table(title: str, header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * width for width in widths)
    out = [title, line, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([*out, line])


def table(result: Mapping[str, Any]) -> str:
    """The human-readable report (everything but the JSON line)."""
    rows = [
        ("model alone (ORT, served file)", f"{result['model_img_s']:.1f} img/s", f"batch {result['batch_size']}, "
         f"{result['precision']}, median of {result['model_runs']} (between the ingest runs)"),
        ("model alone b1 latency p50", f"{result['model_p50_ms_b1']:.1f} ms", ""),
        ("decode (front's decoder)", f"{result['decode_img_s']:.0f} img/s", f"{result['decode_threads']} threads"),
        ("Triton embed over the wire", f"{result['triton_wire_img_s']:.1f} img/s", "batch 32, sequential"),
        ("Triton embed via shared memory", f"{result['triton_shm_img_s']:.1f} img/s", "batch 32, sequential"),
        ("IndexStream ingest", f"{result['ingest_img_s']:.1f} img/s", f"median of {len(result['ingest_runs'])} "
         f"runs {result['ingest_runs']}"),
        ("naive loop (decode->model->insert)", f"{result['naive_img_s']:.1f} img/s", "one image at a time"),
        ("ingest / model", f"{result['ratio_ingest_vs_model']:.2f}", "target >= 0.8"),
        ("ingest / naive", f"{result['ratio_ingest_vs_naive']:.1f}", "target >= 6"),
        ("CheckDuplicate c=1 p50 / p99", f"{result['check_p50_ms_c1']:.1f} / {result['check_p99_ms_c1']:.1f} ms",
         f"{result['ratio_check_p50_c1_vs_model_b1']:.2f} x model b1 (target <= 1.5)"),
        ("  c=1 steps alone (p50)", f"{sum(result['check_c1_parts'].values()):.1f} ms",
         ", ".join(f"{k.removesuffix('_p50_ms')} {v:.1f}" for k, v in result["check_c1_parts"].items())
         + "; the rest is gRPC and the front"),
        ("CheckDuplicate c=32 p50 / p99", f"{result['check_p50_ms_c32']:.1f} / {result['check_p99_ms_c32']:.1f} ms",
         f"{result['check_errors_c32']} errors, {result['check_rps_c32']:.0f} req/s (target p99 <= 1500 ms)"),
        ("Triton mean batch / queue", f"{result['triton_mean_batch']:.1f} / {result['triton_queue_ms']:.1f} ms",
         f"during ingest; compute {result['triton_compute_ms_per_img']:.1f} ms/img"),
        ("CPU ms per ingested image", f"{sum(result['ingest_cpu_ms_per_img'].values()):.1f}",
         ", ".join(f"{k} {v:.1f}" for k, v in result["ingest_cpu_ms_per_img"].items())),
    ]
    if "ingest_ceiling_img_s" in result:
        model_cpu = result.get("model_cpu_ms_per_img")
        rows += [
            ("bound: ingest ceiling", f"{result['ingest_ceiling_img_s']:.1f} img/s",
             f"= {result['ratio_ingest_ceiling_vs_model']:.2f} x model: {result['cpu_count']} cores / "
             f"{result['ingest_stack_cpu_ms_per_img']:.1f} stack CPU-ms per image"
             + (f" (the model alone: {model_cpu:.1f})" if model_cpu else "")),
            ("bound: ingest / naive at best", f"{result['ratio_naive_ceiling']:.1f}",
             "model alone / naive loop: ingest cannot outrun the model on the same cores"),
            ("bound: CheckDuplicate c=1 floor", f"{result['check_c1_floor_ms']:.1f} ms",
             f"= {result['ratio_check_floor_vs_model_b1']:.2f} x model b1: decode + Triton b1 + search, no gRPC"),
        ]
    for size in result.get("search", []):
        rows.append((
            f"Milvus search at {size['vectors'] // 1000}k", f"{size['search']['p50_ms']:.1f} / "
            f"{size['search']['p99_ms']:.1f} ms",
            f"p50/p99, {size['index_type']} {size['build_params']} {size['search_params']}, hit@1 {size['hit_at_1']}, "
            f"{size['synthetic_vectors']} synthetic",
        ))
    for size in result.get("search", []):
        for other in size.get("search_sweep", []):
            rows.append((f"  at {size['vectors'] // 1000}k with {other['search_params']}",
                         f"{other['p50_ms']:.1f} ms", f"p50, hit@1 {other['hit_at_1']:.3f} (heavy edits vs exact)"))
    best = result.get("index_recommendation")
    if best:
        rows.append(("index by hit@1 (real embeddings)", f"{best['hit_at_1']:.3f} / {best['hit_at_1_heavy']:.3f}",
                     f"light/heavy copies; {best['index_type']} {best['build_params']} {best['search_params']}, "
                     f"{best['search_p50_ms']:.1f} ms"))
    parts = [_table("dedup benchmark (one run: every ratio under the same machine load)",
                    ("measure", "value", "note"), rows)]
    if result.get("sweep"):
        parts.append(_table(
            "index settings: hit@1 against exact search, real embeddings",
            ("index", "build", "search", "hit@1 light", "hit@1 heavy", "p50 ms", "build s"),
            [(r["index_type"], str(r["build_params"]), str(r["search_params"]), f"{r['hit_at_1']:.3f}",
              f"{r['hit_at_1_heavy']:.3f}", f"{r['search_p50_ms']:.1f}", f"{r['build_s']:.1f}")
             for r in result["sweep"]],
        ))
    parts.append("\n".join(
        f"  {'PASS' if ok else ('n/a ' if ok is None else 'FAIL')}  {name}" for name, ok in result["targets"].items()
    ))
    return "\n\n".join(parts)


def json_line(result: Mapping[str, Any]) -> str:
    return json.dumps(result, separators=(",", ":"), default=str, allow_nan=True)
