"""Overload: more clients than the front's limits allow get RESOURCE_EXHAUSTED at once, while the front keeps
serving the others and its memory stays flat (bounded queues, a bounded number of concurrent RPCs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from dedup_load.__main__ import OVERLOAD_LIMITS
from dedup_load.runner import CHECK, STREAM, LoadConfig, LoadRun
from dedup_load.workload import Workload
from dedup_stack.killable import KillableStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]



def test_overload_answers_resource_exhausted_and_memory_stays_flat(tmp_path: Path, eval_dir: Path) -> None:
    with KillableStack(tmp_path, front_overrides=OVERLOAD_LIMITS) as stack:
        load = LoadRun(
            LoadConfig(target=stack.target, clients=64, duration_s=12, timeout_s=10),
            Workload(eval_dir),
            front_pid=stack.child("front").pid,
        )
        report = asyncio.run(load.run(mode="overload", progress=False))
    print(report.table())
    checks, streams = load.stats[CHECK], load.stats[STREAM]
    assert checks.codes["RESOURCE_EXHAUSTED"] > 0 and streams.codes["RESOURCE_EXHAUSTED"] > 0
    assert checks.codes["OK"] > 0 and streams.items["INDEXED"] > 0, "the front must keep serving within its limits"
    assert set(checks.codes) <= {"OK", "RESOURCE_EXHAUSTED"}, checks.error_samples
    # Not INTERNAL: the load's streams wait for the front's headers before writing (grpc/grpc#36066).
    assert set(streams.codes) <= {"OK", "RESOURCE_EXHAUSTED"}, streams.error_samples
    assert set(streams.items) == {"INDEXED"}, "an item the front accepted is never dropped for overload"
    # Memory: after the first seconds of ramp-up, RSS stays flat under a load that never lets up.
    rss = load.rss_mb[3:]
    assert len(rss) >= 6, load.rss_mb
    half = len(rss) // 2
    assert max(rss[half:]) - max(rss[:half]) < 40, f"front RSS grows under overload: {load.rss_mb} MB"
    assert max(rss) < 600, f"front RSS {max(rss)} MB"
