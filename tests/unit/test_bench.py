"""The benchmark's pure parts: percentiles, target verdicts, synthetic vectors, exact search, the JSON line."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from dedup_bench import report  # noqa: E402
from dedup_bench.measure import Latency  # noqa: E402
from dedup_bench.vectors import SweepResult, best_setting, exact_top1, synthetic_from_real  # noqa: E402


def test_latency_percentiles_and_errors() -> None:
    latency = Latency.of([i / 1000 for i in range(1, 101)], errors=2, wall_s=2.0)
    assert latency.p50_ms == pytest.approx(50.5) and latency.p99_ms == pytest.approx(99.0)
    assert (latency.requests, latency.errors, latency.rps) == (102, 2, 50.0)
    assert np.isnan(Latency.of([], errors=3).p50_ms)


def test_targets_need_every_ratio_and_say_unknown_when_missing() -> None:
    result = {
        "ratio_ingest_vs_model": 0.85, "ratio_ingest_vs_naive": 5.0, "ratio_check_p50_c1_vs_model_b1": 1.2,
        "check_p99_ms_c32": 900.0,
    }
    verdicts = report.targets(result)
    assert verdicts["ingest >= 0.8 x model alone"] is True
    assert verdicts["ingest >= 6 x naive loop"] is False
    assert verdicts["check p50 (c=1) <= 1.5 x model b1"] is True
    assert verdicts["no errors at c=32"] is None  # not measured is not a pass


def test_synthetic_vectors_are_unit_length_mixtures_near_the_real_ones() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(50, 64)).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    synthetic = synthetic_from_real(real, 500)
    assert synthetic.shape == (500, 64) and synthetic.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(synthetic, axis=1), 1.0, atol=1e-5)
    assert np.median((synthetic @ real.T).max(axis=1)) > 0.6  # each is close to one of its two parents


def test_exact_top1_and_best_setting() -> None:
    stored = np.eye(4, dtype=np.float32)
    queries = np.array([[0.1, 0.9, 0, 0], [0, 0, 0.2, 0.8]], dtype=np.float32)
    assert exact_top1(stored, queries).tolist() == [1, 3]
    def setting(search: dict[str, int], light: float, heavy: float, p50_ms: float) -> SweepResult:
        return SweepResult(index_type="HNSW", build_params={}, search_params=search, hit_at_1=light,
                           hit_at_1_heavy=heavy, search_p50_ms=p50_ms, build_s=1)

    slow_exact = setting({"ef": 128}, 1.0, 1.0, 5.0)
    fast_exact = setting({"ef": 32}, 0.995, 0.99, 2.0)
    fast_wrong = setting({"ef": 4}, 0.9, 0.8, 1.0)
    assert best_setting([slow_exact, fast_exact, fast_wrong]) == fast_exact
    assert best_setting([fast_wrong]) == fast_wrong


def test_json_line_is_one_line_of_json() -> None:
    line = report.json_line({"ingest_img_s": 1.5, "nested": {"a": [1, 2]}})
    assert "\n" not in line and json.loads(line)["nested"] == {"a": [1, 2]}


def test_bounds_from_the_run_costs() -> None:
    result = {
        "cpu_count": 2, "model_img_s": 250.0, "naive_img_s": 80.0, "model_p50_ms_b1": 5.0,
        "ingest_cpu_ms_per_img": {"front": 4.0, "triton_stub": 8.0, "milvus": 1.0, "triton_server": 0.0,
                                  "bench_client": 0.5},
        "check_c1_parts": {"decode_p50_ms": 1.5, "triton_b1_p50_ms": 6.0, "milvus_search_p50_ms": 2.5},
    }
    bounds = report.bounds(result)
    assert bounds["ingest_stack_cpu_ms_per_img"] == 13.0  # the bench client is not the stack's cost
    assert bounds["ingest_ceiling_img_s"] == pytest.approx(153.8)
    assert bounds["ratio_ingest_ceiling_vs_model"] == pytest.approx(0.615)
    assert bounds["ratio_naive_ceiling"] == pytest.approx(3.12)
    assert (bounds["check_c1_floor_ms"], bounds["ratio_check_floor_vs_model_b1"]) == (10.0, 2.0)
