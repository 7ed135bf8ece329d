"""Through the real gRPC API, against real Triton (EfficientNet-Lite0 or ResNet-50) and real Milvus."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from dedup_client import DedupClient, DedupError, IndexItem, IndexStatus
from dedup_client.cli import main as cli_main
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.conftest import transformed_copies

pytestmark = pytest.mark.integration

# Real photos that are NOT indexed: they must never come back as duplicates.
DISTRACTORS = [
    "formats_images/baboon.pgm",
    "formats_images/Iggy.1024.ppm",
    "formats_images/copyleft.tiff",
    "formats_images/marbles.pbm",
    "formats_images/giphy.gif",
]
# Edits so light that any two copies are duplicates of each other, not only of the original.
MILD_EDITS = ("scale50", "jpeg_q20", "png", "brighter")
# Copies shipped with the evaluation set, and the photo they copy.
SHIPPED_COPIES = {
    "mixed_images/ukbench00120_hflip.jpg": "ukbench00120.jpg",
    "mixed_images/ukbench00120_resize.jpg": "ukbench00120.jpg",
    "mixed_images/ukbench00120_rotation.jpg": "ukbench00120.jpg",
    "ukbench00120_gray.jpg": "ukbench00120.jpg",
    "alpha_channel_image.png": "ukbench00120.jpg",
    "formats_images/ukbench09380.bmp": "ukbench09380.jpg",
    "formats_images/ukbench09380.webp": "ukbench09380.jpg",
    "formats_images/ukbench09380.png": "ukbench09380.jpg",
}


@pytest.fixture(scope="module")
def indexed_base(client: DedupClient, eval_dir: Path) -> str:
    """The 10 base photos, indexed once through IndexStream into their own collection."""
    name = "e2e_base"
    photos = sorted((eval_dir / "base_images").glob("*.jpg"))
    items = [IndexItem(id=p.name, image=p.read_bytes(), metadata={"path": p.name}, collection=name) for p in photos]
    results = list(client.index(items))
    assert sorted(r.id for r in results) == sorted(p.name for p in photos)
    assert {r.status for r in results} == {IndexStatus.INDEXED}, results
    return name


def _photos(eval_dir: Path) -> list[Path]:
    return sorted((eval_dir / "base_images").glob("*.jpg"))


def test_seeded_transformed_copies_find_their_original(client: DedupClient, eval_dir: Path, indexed_base: str) -> None:
    misses = []
    for seed, photo in enumerate(_photos(eval_dir)):
        for transform, data in transformed_copies(photo, seed).items():
            result = client.check(data, collection=indexed_base)
            best = result.matches[0].id if result.matches else None
            if not result.is_duplicate or best != photo.name:
                misses.append((photo.name, transform, best, [round(m.similarity, 3) for m in result.matches]))
    assert misses == []


@pytest.mark.parametrize(("copy", "original"), sorted(SHIPPED_COPIES.items()))
def test_shipped_copies_find_their_original(
    client: DedupClient, eval_dir: Path, indexed_base: str, copy: str, original: str
) -> None:
    result = client.check((eval_dir / copy).read_bytes(), collection=indexed_base)
    assert result.is_duplicate and result.matches[0].id == original
    assert result.matches[0].metadata == {"path": original}
    assert result.model and 0 < result.threshold <= 1


@pytest.mark.parametrize("distractor", DISTRACTORS)
def test_unrelated_photos_are_not_duplicates(
    client: DedupClient, eval_dir: Path, indexed_base: str, distractor: str
) -> None:
    result = client.check((eval_dir / distractor).read_bytes(), collection=indexed_base)
    assert not result.is_duplicate and result.matches == ()


def test_corrupt_file_is_invalid_argument(client: DedupClient, eval_dir: Path, indexed_base: str) -> None:
    with pytest.raises(DedupError) as caught:
        client.check((eval_dir / "mixed_images/ukbench09268_corrupt.jpg").read_bytes(), collection=indexed_base)
    assert caught.value.code == "INVALID_ARGUMENT" and "image" in caught.value.details


def test_stream_with_skip_duplicates_reports_each_item(
    client: DedupClient, eval_dir: Path, indexed_base: str, collection: str
) -> None:
    photos = _photos(eval_dir)
    copies = transformed_copies(photos[0], seed=123)
    items = [IndexItem(id=p.name, image=p.read_bytes(), collection=collection, skip_duplicates=True) for p in photos]
    corrupt = eval_dir / "mixed_images/ukbench09268_corrupt.jpg"
    items.insert(3, IndexItem(id="corrupt", image=corrupt.read_bytes(), collection=collection))
    items.insert(5, IndexItem(id="", image=photos[1].read_bytes(), collection=collection))
    results = {r.id: r for r in client.index(items)}
    assert len(results) == len(items)  # exactly one answer per request; the stream went on
    assert results["corrupt"].status is IndexStatus.INVALID and results["corrupt"].error
    assert results[""].status is IndexStatus.INVALID and "id" in results[""].error
    for photo in photos:
        assert results[photo.name].status is IndexStatus.INDEXED
    # A second stream (items of one stream run concurrently, so originals go first, in their own).
    results = {
        r.id: r
        for r in client.index(
            IndexItem(id=f"copy-{t}", image=data, collection=collection, skip_duplicates=True)
            for t, data in copies.items()
        )
    }
    for transform in copies:
        result = results[f"copy-{transform}"]
        assert result.status is IndexStatus.DUPLICATE, (transform, result)
        assert result.matches[0].id == photos[0].name
    stats = client.stats(collection=collection)
    assert stats.collections[0].image_count == len(photos)


def test_duplicates_inside_one_stream_are_caught(client: DedupClient, eval_dir: Path, collection: str) -> None:
    photo = _photos(eval_dir)[2]
    # Mild edits only: whichever copy is stored first, every other one must be its duplicate.
    copies = {t: d for t, d in transformed_copies(photo, seed=7).items() if t in MILD_EDITS}
    items = [IndexItem(id="original", image=photo.read_bytes(), collection=collection, skip_duplicates=True)]
    items += [IndexItem(id=t, image=d, collection=collection, skip_duplicates=True) for t, d in copies.items()]
    results = list(client.index(items))
    assert sum(r.status is IndexStatus.INDEXED for r in results) == 1
    assert client.stats(collection=collection).collections[0].image_count == 1


def test_concurrent_insert_if_unique_inserts_once(client: DedupClient, eval_dir: Path, collection: str) -> None:
    photo = _photos(eval_dir)[4]
    mild = [d for t, d in transformed_copies(photo, seed=11).items() if t in MILD_EDITS]
    copies = mild + mild  # 8 concurrent callers; whichever wins, the rest are its duplicates

    def check(i: int) -> bool:
        return client.check(copies[i], collection=collection, insert_if_unique=True, id=f"c{i}").inserted

    with pytest.raises(DedupError) as caught:  # unknown collection before anything is inserted
        client.check(copies[0], collection=collection)
    assert caught.value.code == "NOT_FOUND"
    with ThreadPoolExecutor(len(copies)) as pool:
        inserted = list(pool.map(check, range(len(copies))))
    assert sum(inserted) == 1
    assert client.stats(collection=collection).collections[0].image_count == 1


def test_reindexing_an_id_replaces_it_and_delete_removes_it(
    client: DedupClient, eval_dir: Path, collection: str
) -> None:
    first, second = _photos(eval_dir)[5:7]
    list(client.index([IndexItem(id="x", image=first.read_bytes(), collection=collection)]))
    list(client.index([IndexItem(id="x", image=second.read_bytes(), collection=collection)]))
    assert not client.check(first.read_bytes(), collection=collection).is_duplicate
    assert client.check(second.read_bytes(), collection=collection).matches[0].id == "x"
    deleted = client.delete(["x", "never-indexed"], collection=collection)
    assert (deleted.deleted_count, deleted.not_found) == (1, ("never-indexed",))
    assert client.stats(collection=collection).collections[0].image_count == 0


def test_bad_request_fields_are_invalid_argument(client: DedupClient, eval_dir: Path, indexed_base: str) -> None:
    image = _photos(eval_dir)[0].read_bytes()
    for kwargs in ({"threshold": 1.5}, {"top_k": 1000}, {"insert_if_unique": True}, {"collection": "bad name!"}):
        with pytest.raises(DedupError) as caught:
            client.check(image, **({"collection": indexed_base} | kwargs))
        assert caught.value.code == "INVALID_ARGUMENT", kwargs


def test_stats_reports_model_index_and_threshold(client: DedupClient, indexed_base: str) -> None:
    stats = client.stats()
    assert stats.model.name and stats.model.embedding_dim in (1280, 2048)
    if stats.model.name.startswith("efficientnet"):
        assert stats.model.fallback and "ResNet-50" in stats.model.warning
    assert stats.index.index_type == "HNSW" and stats.index.metric == "COSINE"
    assert 0 < stats.default_threshold <= 1 and stats.threshold_source
    base = next(c for c in stats.collections if c.name == indexed_base)
    assert base.image_count == 10 and base.model == f"{stats.model.name}@{stats.model.version}"
    assert base.index.index_type == "HNSW"


def test_health_and_reflection(front) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "dedup.v1.Deduplication"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(reflection.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
        assert {"dedup.v1.Deduplication", "grpc.health.v1.Health"} <= names


def test_cli_index_check_stats_delete(
    front, eval_dir: Path, collection: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = ["--target", f"127.0.0.1:{front.port}", "--collection", collection]
    # The nested folder holds a photo, its copies and a corrupt file: exit 1 because of the corrupt one.
    code = cli_main([*target, "--json", "index", str(eval_dir / "mixed_nested_images")])
    summary = json.loads(capsys.readouterr().out)
    assert code == 1
    assert summary["counts"]["INVALID"] == 1 and summary["counts"]["INDEXED"] == 5
    assert cli_main([*target, "--json", "check", str(eval_dir / "ukbench00120_gray.jpg")]) == 0
    checked = json.loads(capsys.readouterr().out)
    assert checked["is_duplicate"] and checked["matches"][0]["id"] == "lvl1/ukbench00120.jpg"
    assert cli_main([*target, "--json", "stats"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["collections"][0]["image_count"] == 5
    assert cli_main([*target, "--json", "delete", "lvl1/ukbench00120.jpg", "nope"]) == 0
    deleted = json.loads(capsys.readouterr().out)
    assert deleted["deleted_count"] == 1 and deleted["not_found"] == ["nope"]
