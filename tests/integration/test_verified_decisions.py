"""Geometric verification through the real API, at the server's calibrated decision: a copy whose cosine falls in
the band below the threshold is a duplicate because its local features agree; with cosine_only (or a threshold of
the caller's own) the cosine alone decides, as before verification existed. Checks and the write path alike.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from dedup_client import DedupClient, IndexItem, IndexStatus
from PIL import Image


@pytest.fixture(scope="module")
def band(client: DedupClient) -> tuple[float, float, int]:
    stats = client.stats()
    calibration = stats.calibration
    assert calibration is not None
    if calibration.verify_below < 0.01:
        pytest.fail(f"the served calibration has no verification band below its threshold: {calibration}")
    return stats.default_threshold - calibration.verify_below, stats.default_threshold, calibration.verify_min_inliers


@pytest.fixture(scope="module")
def photos(client: DedupClient, eval_dir: Path) -> str:
    name = "verification_base"
    items = [IndexItem(id=p.stem, image=p.read_bytes(), collection=name)
             for p in sorted((eval_dir / "base_images").glob("*.jpg"))]
    assert all(r.status.ok for r in client.index(items))
    return name


def _hard_copy(path: Path) -> bytes:
    """Half the area, off-centre, grey, JPEG q40: a copy the embedding scores well below the threshold."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    width, height = rgb.size
    buffer = io.BytesIO()
    rgb.crop((0, height // 6, width * 7 // 10, height * 6 // 7)).convert("L").save(buffer, "JPEG", quality=40)
    return buffer.getvalue()


def _in_band_below(client: DedupClient, copy: bytes, collection: str, band: tuple[float, float, int],
                   expected: str) -> float:
    low, threshold, _ = band
    raw = client.check(copy, collection=collection, threshold=0.01, top_k=3, cosine_only=True)
    assert raw.matches[0].id == expected and not raw.matches[0].verified
    similarity = raw.matches[0].similarity
    assert low <= similarity < threshold, f"the copy scores {similarity:.3f}, outside [{low:.3f}, {threshold:.3f})"
    return similarity


def test_a_copy_in_the_band_is_verified_below_the_threshold(
    client: DedupClient, eval_dir: Path, photos: str, band: tuple[float, float, int]
) -> None:
    copy = _hard_copy(eval_dir / "base_images" / "ukbench00120.jpg")
    _in_band_below(client, copy, photos, band, "ukbench00120")

    assert not client.check(copy, collection=photos, cosine_only=True).is_duplicate
    assert not client.check(copy, collection=photos, threshold=band[1]).is_duplicate  # the caller's own: cosine
    verified = client.check(copy, collection=photos)
    assert [m.id for m in verified.matches] == ["ukbench00120"]
    assert verified.matches[0].verified and verified.matches[0].inliers >= band[2]


def test_a_different_photo_is_not_verified(client: DedupClient, eval_dir: Path, photos: str) -> None:
    other = (eval_dir / "base_images" / "ukbench01380.jpg").read_bytes()
    result = client.check(other, collection=photos)
    assert [m.id for m in result.matches] == ["ukbench01380"]  # itself (an identical upload), nothing else
    assert not any(m.verified for m in result.matches if m.id != "ukbench01380")


def test_the_write_path_verifies_too(
    client: DedupClient, eval_dir: Path, collection: str, band: tuple[float, float, int]
) -> None:
    original = eval_dir / "base_images" / "ukbench00120.jpg"
    first = [IndexItem(id="original", image=original.read_bytes(), collection=collection)]
    assert all(r.status is IndexStatus.INDEXED for r in client.index(first))
    copy = _hard_copy(original)
    _in_band_below(client, copy, collection, band, "original")

    results = list(client.index([IndexItem(id="copy", image=copy, collection=collection, skip_duplicates=True)]))
    assert results[0].status is IndexStatus.DUPLICATE, results
    assert results[0].matches[0].id == "original" and results[0].matches[0].verified
    inserted = client.check(copy, collection=collection, insert_if_unique=True, id="copy2")
    assert not inserted.inserted and inserted.matches[0].verified
    # A plain ingest stores it anyway: its matches are the cosine's, unverified.
    plain = list(client.index([IndexItem(id="copy3", image=copy, collection=collection)]))
    assert plain[0].status is IndexStatus.INDEXED and not plain[0].matches


def _screenshot(path: Path) -> bytes:
    """The photo at about 60 % of a desktop window's width, with title bar, sidebar, details pane (PNG)."""
    from dedup_eval.transforms import apply

    with Image.open(path) as image:
        return apply("screenshot", image.convert("RGB"), seed=1)


def test_a_screenshot_of_a_photo_is_found_through_its_framed_photo(
    client: DedupClient, eval_dir: Path, photos: str, collection: str
) -> None:
    original = eval_dir / "base_images" / "ukbench00120.jpg"
    copy = _screenshot(original)
    found = client.check(copy, collection=photos)
    assert [m.id for m in found.matches] == ["ukbench00120"] and found.matches[0].verified, found
    # The write path searches the framed photo too: the screenshot is not stored beside its original.
    first = [IndexItem(id="framed-original", image=original.read_bytes(), collection=collection)]
    assert all(r.status is IndexStatus.INDEXED for r in client.index(first))
    results = list(client.index([IndexItem(id="framed-copy", image=copy, collection=collection,
                                           skip_duplicates=True)]))
    assert results[0].status is IndexStatus.DUPLICATE and results[0].matches[0].id == "framed-original", results
    inserted = client.check(copy, collection=collection, insert_if_unique=True, id="framed-copy2")
    assert not inserted.inserted and inserted.matches[0].id == "framed-original"
