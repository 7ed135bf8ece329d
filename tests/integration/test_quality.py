"""Decisions users rely on, through the real API: calibrated default, flip policy, duplicate groups."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from dedup.v1 import dedup_pb2, dedup_pb2_grpc
from dedup_client import (
    DedupClient,
    DedupError,
    DuplicateGroup,
    FlipPolicy,
    IndexItem,
    IndexStatus,
    ScanProgress,
)
from dedup_client.cli import main as cli_main

from tests.conftest import transformed_copies


@pytest.fixture(scope="module")
def base_collection(client: DedupClient, eval_dir: Path) -> str:
    name = "quality_base"
    items = [IndexItem(id=p.stem, image=p.read_bytes(), collection=name)
             for p in sorted((eval_dir / "base_images").glob("*.jpg"))]
    assert all(r.status is IndexStatus.INDEXED for r in client.index(items))
    return name


def test_stats_report_the_calibrated_threshold_and_what_it_was_measured_at(client: DedupClient) -> None:
    stats = client.stats()
    assert stats.calibration is not None, "the served model has no calibration: run make eval CALIBRATE=1"
    assert stats.calibration.model == stats.model.name
    assert stats.default_threshold == pytest.approx(stats.calibration.threshold)
    assert stats.calibration.precision >= 0.998 and stats.calibration.recall >= 0.97
    # Calibrated for a false-alarm budget at 1M images, with the verification band that makes it reachable.
    assert stats.calibration.false_alarm_rate_1m <= 0.01
    assert stats.calibration.verify_below > 0 and stats.calibration.verify_min_inliers >= 4
    assert stats.calibration.bytes_per_image > 0
    assert stats.calibration.queries > 0 and "make eval" in stats.calibration.measured_at
    assert stats.threshold_source.startswith("calibrated")


def test_mirrored_copy_counts_by_default_and_is_told_apart_on_request(
    client: DedupClient, eval_dir: Path, base_collection: str
) -> None:
    mirrored = (eval_dir / "mixed_images" / "ukbench00120_hflip.jpg").read_bytes()
    default = client.check(mirrored, collection=base_collection)
    assert [m.id for m in default.matches][:1] == ["ukbench00120"]
    assert default.matches[0].mirrored

    explicit = client.check(mirrored, collection=base_collection, flip_policy=FlipPolicy.MIRROR_IS_DUPLICATE)
    assert explicit.matches[0].id == "ukbench00120" and explicit.matches[0].mirrored

    distinct = client.check(mirrored, collection=base_collection, flip_policy=FlipPolicy.MIRROR_IS_DISTINCT)
    assert not distinct.is_duplicate, distinct.matches


@pytest.mark.parametrize("edit", ["gray", "crop80", "scale25", "brighter", "jpeg_q20"])
def test_unmirrored_copies_stay_duplicates_when_mirrors_are_distinct(
    client: DedupClient, eval_dir: Path, base_collection: str, edit: str
) -> None:
    copy = transformed_copies(eval_dir / "base_images" / "ukbench09268.jpg", seed=3)[edit]
    result = client.check(copy, collection=base_collection, flip_policy=FlipPolicy.MIRROR_IS_DISTINCT)
    assert result.matches and result.matches[0].id == "ukbench09268"
    assert not result.matches[0].mirrored


def test_stream_with_mirrors_distinct_indexes_the_mirror(client: DedupClient, eval_dir: Path, collection: str) -> None:
    original = eval_dir / "base_images" / "ukbench00120.jpg"
    mirrored = eval_dir / "mixed_images" / "ukbench00120_hflip.jpg"
    first = IndexItem(id="a", image=original.read_bytes(), collection=collection)
    assert all(r.status.ok for r in client.index([first]))
    results = list(client.index([
        IndexItem(id="mirror", image=mirrored.read_bytes(), collection=collection, skip_duplicates=True,
                  flip_policy=FlipPolicy.MIRROR_IS_DISTINCT),
        IndexItem(id="mirror-again", image=mirrored.read_bytes(), collection=collection, skip_duplicates=True),
    ]))
    by_id = {r.id: r for r in results}
    assert by_id["mirror"].status is IndexStatus.INDEXED
    assert by_id["mirror-again"].status is IndexStatus.DUPLICATE


def test_unknown_flip_policy_is_invalid_argument(front, base_collection: str, eval_dir: Path) -> None:  # noqa: ANN001
    image = (eval_dir / "base_images" / "ukbench00120.jpg").read_bytes()
    with grpc.insecure_channel(f"127.0.0.1:{front.port}") as channel:
        stub = dedup_pb2_grpc.DeduplicationStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.CheckDuplicate(dedup_pb2.CheckDuplicateRequest(image=image, collection=base_collection,
                                                                flip_policy=7), timeout=30)
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "flip_policy 7" in raised.value.details()


def test_duplicate_groups_of_a_collection(client: DedupClient, eval_dir: Path, collection: str) -> None:
    photos = sorted((eval_dir / "base_images").glob("*.jpg"))
    items = [IndexItem(id=p.stem, image=p.read_bytes(), collection=collection) for p in photos]
    copies = transformed_copies(eval_dir / "base_images" / "ukbench00120.jpg", seed=5)
    items += [IndexItem(id=f"ukbench00120_{edit}", image=copies[edit], collection=collection)
              for edit in ("gray", "crop80", "scale25")]
    items.append(IndexItem(id="ukbench00120_hflip",
                           image=(eval_dir / "mixed_images" / "ukbench00120_hflip.jpg").read_bytes(),
                           collection=collection))
    items.append(IndexItem(id="ukbench09268_gray", collection=collection,
                           image=transformed_copies(eval_dir / "base_images" / "ukbench09268.jpg", seed=1)["gray"]))
    assert all(r.status is IndexStatus.INDEXED for r in client.index(items))

    results = list(client.groups(collection=collection))
    progress = [r for r in results if isinstance(r, ScanProgress)]
    groups = [r for r in results if isinstance(r, DuplicateGroup)]
    assert progress and progress[-1].scanned == progress[-1].total == len(items)
    assert [g.ids for g in groups] == [
        ("ukbench00120", "ukbench00120_crop80", "ukbench00120_gray", "ukbench00120_hflip", "ukbench00120_scale25"),
        ("ukbench09268", "ukbench09268_gray"),
    ]
    assert all(len(g.pairs) >= len(g.ids) - 1 for g in groups)

    assert cli_main(["--target", client.target, "--collection", collection, "--json", "groups"]) == 0


def test_groups_cli_prints_groups(client: DedupClient, collection: str, eval_dir: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    photo = eval_dir / "base_images" / "ukbench09380.jpg"
    items = [IndexItem(id="one", image=photo.read_bytes(), collection=collection),
             IndexItem(id="two", image=transformed_copies(photo, seed=2)["scale50"], collection=collection)]
    assert all(r.status is IndexStatus.INDEXED for r in client.index(items))
    capsys.readouterr()
    assert cli_main(["--target", client.target, "--collection", collection, "--json", "groups"]) == 0
    groups = json.loads(capsys.readouterr().out)
    assert [g["ids"] for g in groups] == [["one", "two"]]


def test_groups_errors(client: DedupClient, base_collection: str) -> None:
    with pytest.raises(DedupError) as unknown:
        list(client.groups(collection="no_such_collection_here"))
    assert unknown.value.code == "NOT_FOUND"
