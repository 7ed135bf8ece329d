"""`make bench-scale` at 20k vectors, so that the million-vector bench keeps working: its own Milvus standalone,
real embeddings planted among fitted background vectors, an index built and measured, FindDuplicateGroups run
through the service's code, and one JSON object as the last line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEYS = ("vectors", "index_type", "insert_rows_s", "build_s", "milvus_rss_gb", "search_p50_ms_c1",
        "search_p99_ms_c32", "service_search_p99_ms_c32", "segments_searched", "hit_at_1", "groups_s",
        "groups_peak_rss_gb")


def test_bench_scale_at_20k_vectors(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "server"), str(REPO / "clients" / "python"), str(REPO)])
    argv = [sys.executable, "-m", "dedup_bench_scale", "--vectors", "20000", "--photos", "100",
            "--index-types", "IVF_SQ8", "--no-restart", "--c1-requests", "30", "--c32-requests", "64",
            "--sweep-requests", "10", "--out", str(tmp_path / "out"),
            "--cache", str(REPO / ".dedup-data" / "bench-scale-cache")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert all(result.get(key) is not None for key in KEYS), {key: result.get(key) for key in KEYS}
    assert result["vectors"] == 20_000 and result["vectors_real"] == 200 and result["index_type"] == "IVF_SQ8"
    assert result["insert_rows_s"] > 0 and result["milvus_rss_gb"] > 0 and 0 <= result["hit_at_1"] <= 1
    # The planted edits are found: most of the 100 photos make a group with their stored edit.
    assert result["groups"] >= 50 and result["images_in_groups"] >= 100
    table = "\n".join(lines[:-1])
    assert "benchmark shortcut" in table and "background" in table and "real" in table  # labelled
    assert "fitted" in table and (tmp_path / "out" / "bench-scale.json").is_file()
    assert not list((tmp_path / "out").glob("run-*"))  # Milvus' data is removed
