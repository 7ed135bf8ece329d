"""What cross-front coordination adds to one write batch, measured on a real etcd and a real Milvus.

    .venv/bin/python scripts/coordination_cost.py [--turns 200] [--no-milvus]

Starts its own etcd (Debian's etcd-server) and, unless --no-milvus, its own Milvus standalone, on free ports, and
prints one line per measure, then one JSON line:

- fence: a front that keeps the write lock between batches (alone, or the others idle) pays one etcd transaction
  per batch, checking its fencing token;
- hand-over: two fronts writing the same collection at once take turns; each turn then takes the lock (and
  releases it after the batch): the etcd time of that, waiting for the other front excluded;
- Strong search: the first batch of each turn searches Milvus with Strong consistency (another front may just
  have written); against Session, which a front that keeps the lock uses.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "server"), str(REPO / "clients" / "python")]

from dedup_server.config import CoordinationConfig  # noqa: E402
from dedup_server.coordination import EtcdCoordinator  # noqa: E402
from dedup_server.deadline import Deadline  # noqa: E402
from dedup_stack.etcd import EtcdConfig, EtcdProcess  # noqa: E402


def _summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 3),
        "n": len(ordered),
    }


async def _fence(endpoint: str, turns: int) -> dict[str, float]:
    config = CoordinationConfig(endpoints=(endpoint,), prefix="/cost-fence/")
    front = EtcdCoordinator(config, front_id="alone")
    try:
        async with front.turn("c", Deadline.after(10)):
            pass  # takes the lock once
        samples = []
        for _ in range(turns):
            started = time.perf_counter()
            async with front.turn("c", Deadline.after(10)):
                samples.append((time.perf_counter() - started) * 1000)
        return _summary(samples)
    finally:
        await front.close()


async def _handover(endpoint: str, turns: int) -> dict[str, float]:
    config = CoordinationConfig(endpoints=(endpoint,), prefix="/cost-handover/")
    fronts = [EtcdCoordinator(config, front_id=name) for name in ("a", "b")]

    async def write(front: EtcdCoordinator) -> None:
        for _ in range(turns // 2):
            async with front.turn("c", Deadline.after(10)):
                await asyncio.sleep(0.005)  # the batch's Milvus calls

    try:
        await asyncio.gather(*(write(front) for front in fronts))
        per_turn = [f.stats.mean_ms_per_turn for f in fronts]
        return {
            "etcd_ms_per_turn": round(statistics.mean(per_turn), 3),
            "acquisitions": sum(f.stats.acquisitions for f in fronts),
            "turns": sum(f.stats.turns for f in fronts),
        }
    finally:
        for front in fronts:
            await front.close()


def _milvus_searches(root: Path, batches: int) -> dict[str, dict[str, float]]:
    from dedup_stack.milvus import MilvusConfig, MilvusPorts, MilvusProcess
    from pymilvus import DataType, MilvusClient

    process = MilvusProcess(MilvusConfig(base_dir=root / "milvus", ports=MilvusPorts.pick_free(),
                                         install_dir=REPO / ".dedup-data" / "milvus-install"))
    process.start()
    try:
        writer, reader = (MilvusClient(uri=process.uri, dedicated=True) for _ in range(2))
        schema = writer.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=1280)
        index = writer.prepare_index_params()
        index.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE",
                        params={"params": {"M": 16, "efConstruction": 200}})
        writer.create_collection("cost", schema=schema, index_params=index, consistency_level="Session")
        rng = np.random.default_rng(0)
        writer.upsert("cost", [{"id": f"x{i}", "vector": rng.standard_normal(1280).tolist()} for i in range(2000)])
        results: dict[str, dict[str, float]] = {}
        for name, level, write_before in (
            ("session_after_own_write", "Session", True),  # a holder's next batch, as a single front today
            ("strong_after_other_write", "Strong", True),  # the first batch of a turn
            ("session_idle", "Session", False),
            ("strong_idle", "Strong", False),
        ):
            samples = []
            for i in range(batches):
                vectors = rng.standard_normal((32, 1280))
                if write_before:  # by the writer: for Strong, "another front" (Session would share its cache)
                    writer.upsert("cost", [{"id": f"{name}-{i}", "vector": vectors[0].tolist()}])
                started = time.perf_counter()
                (writer if level == "Session" else reader).search(
                    "cost", data=vectors.tolist(), limit=11, consistency_level=level,
                    search_params={"metric_type": "COSINE", "params": {"ef": 64}},
                )
                samples.append((time.perf_counter() - started) * 1000)
            results[name] = _summary(samples)
        writer.close()
        reader.close()
        return results
    finally:
        process.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=200, help="write batches per etcd measure")
    parser.add_argument("--batches", type=int, default=20, help="search batches (of 32) per Milvus measure")
    parser.add_argument("--no-milvus", action="store_true", help="etcd measures only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coordination-cost-") as tmp:
        root = Path(tmp)
        etcd = EtcdProcess(EtcdConfig.on_free_ports(root / "etcd"))
        etcd.start()
        try:
            report: dict[str, object] = {
                "fence": asyncio.run(_fence(etcd.endpoint, args.turns)),
                "handover": asyncio.run(_handover(etcd.endpoint, args.turns)),
            }
        finally:
            etcd.stop()
        if not args.no_milvus:
            report["milvus_search_batch32"] = _milvus_searches(root, args.batches)
    for name, value in report.items():
        print(f"{name}: {value}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
