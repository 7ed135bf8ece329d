"""FindDuplicateGroups through the service's own code, alone in this process, so its peak RSS is the front's.

    python -m dedup_bench_scale.groups_probe --uri URI --model-json JSON --index-type HNSW

Prints one JSON line: groups_s, groups_peak_rss_gb, scanned, groups, images in groups, largest group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dedup_server.config import IndexConfig, ServerConfig
from dedup_server.groups import DuplicateGroup
from dedup_server.index import MilvusIndex
from dedup_server.model_identity import ModelInfo
from dedup_server.service import DedupService, GroupsQuery, ScanProgress

from .milvus_run import COLLECTION, PREFIX


class KnownModel:
    """The embedder of a service that only scans or searches vectors: it knows the model, and never embeds."""

    def __init__(self, model: ModelInfo) -> None:
        self._model = model

    async def model_info(self) -> ModelInfo:
        return self._model

    def known_model_info(self) -> ModelInfo | None:
        return self._model

    async def embed(self, images: object, *, timeout_s: float | None = None) -> object:
        raise RuntimeError("the groups probe embeds nothing")

    async def is_ready(self) -> bool:
        return True

    def forget_model_info(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024 / 1024, 3)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024, 3)


async def _run(uri: str, model: ModelInfo, index: IndexConfig) -> dict[str, object]:
    pool = ThreadPoolExecutor(2)
    milvus_index = MilvusIndex(uri=uri, token="", prefix=PREFIX, index=index, call_timeout_s=600)
    config = ServerConfig(milvus_uri=uri, collection_prefix=PREFIX, index=index)
    service = DedupService(config, embedder=KnownModel(model), index=milvus_index,  # type: ignore[arg-type]
                           decode_pool=pool)
    before = _peak_rss_gb()
    started = time.monotonic()
    groups, members, largest, progress = 0, 0, 0, 0
    try:
        async for item in service.find_groups(GroupsQuery(collection=COLLECTION), time_remaining=None):
            if isinstance(item, ScanProgress):
                progress += 1
                print(f"groups: scanned {item.scanned}/{item.total}", file=sys.stderr, flush=True)
            elif isinstance(item, DuplicateGroup):
                groups += 1
                members += len(item.ids)
                largest = max(largest, len(item.ids))
    finally:
        await service.close()
        milvus_index.close()
        pool.shutdown()
    return {"groups_s": round(time.monotonic() - started, 1), "groups_peak_rss_gb": _peak_rss_gb(),
            "rss_before_gb": before, "groups": groups, "images_in_groups": members, "largest_group": largest,
            "progress_messages": progress}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup_bench_scale.groups_probe")
    parser.add_argument("--uri", required=True)
    parser.add_argument("--model-json", required=True)
    parser.add_argument("--index-json", required=True)
    args = parser.parse_args(argv)
    model = ModelInfo(**json.loads(args.model_json))
    index = IndexConfig(**json.loads(args.index_json))
    print(json.dumps(asyncio.run(_run(args.uri, model, index))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
