"""The same front on Milvus Lite (a local database path instead of a server URI)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from dedup_client import DedupClient, IndexItem, IndexStatus
from dedup_server.config import ServerConfig

from tests.conftest import transformed_copies
from tests.integration.conftest import FrontThread

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lite_client(front_config: ServerConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DedupClient]:
    database = tmp_path_factory.mktemp("lite") / "dedup.db"
    front = FrontThread(dataclasses.replace(front_config, milvus_uri=str(database)))
    front.start()
    with DedupClient(f"127.0.0.1:{front.port}", timeout=60) as client:
        yield client
    front.stop()


def test_index_and_check_on_milvus_lite(lite_client: DedupClient, eval_dir: Path) -> None:
    photos = sorted((eval_dir / "base_images").glob("*.jpg"))[:4]
    results = list(lite_client.index(IndexItem(id=p.name, image=p.read_bytes()) for p in photos))
    assert {r.status for r in results} == {IndexStatus.INDEXED}
    copy = transformed_copies(photos[1], seed=3)["crop80"]
    result = lite_client.check(copy)
    assert result.is_duplicate and result.matches[0].id == photos[1].name
    stats = lite_client.stats()
    assert stats.collections[0].image_count == 4 and stats.collections[0].index.index_type == "HNSW"
