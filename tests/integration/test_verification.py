"""Geometric verification through the real API: a copy inside the band is verified even below the threshold, a
different photo inside the band is rejected even above it, on checks and on the write path alike.

Each test places the pair inside the server's calibrated band by choosing the request's threshold from the raw
similarity (cosine_only), so it holds for whatever band `make eval CALIBRATE=1` shipped.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from dedup_client import DedupClient, IndexItem, IndexStatus
from PIL import Image


@pytest.fixture(scope="module")
def band(client: DedupClient) -> tuple[float, float, int]:
    calibration = client.stats().calibration
    assert calibration is not None
    if calibration.verify_below < 0.01 or calibration.verify_above < 0.01:
        pytest.fail(f"the served calibration has no verification band: {calibration}")
    return calibration.verify_below, calibration.verify_above, calibration.verify_min_inliers


@pytest.fixture(scope="module")
def photos(client: DedupClient, eval_dir: Path) -> str:
    name = "verification_base"
    items = [IndexItem(id=p.stem, image=p.read_bytes(), collection=name)
             for p in sorted((eval_dir / "base_images").glob("*.jpg"))]
    assert all(r.status.ok for r in client.index(items))
    return name


def _half_area_crop(path: Path) -> bytes:
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    width, height = rgb.size
    buffer = io.BytesIO()
    rgb.crop((0, height // 6, width * 7 // 10, height * 6 // 7)).save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def test_a_copy_in_the_band_is_verified_below_the_threshold(
    client: DedupClient, eval_dir: Path, photos: str, band: tuple[float, float, int]
) -> None:
    below, _, min_inliers = band
    copy = _half_area_crop(eval_dir / "base_images" / "ukbench00120.jpg")
    raw = client.check(copy, collection=photos, threshold=0.01, top_k=3, cosine_only=True)
    assert raw.matches[0].id == "ukbench00120" and not raw.matches[0].verified
    threshold = raw.matches[0].similarity + min(0.01, below / 2)  # the copy scores just under it

    cosine = client.check(copy, collection=photos, threshold=threshold, cosine_only=True)
    assert not cosine.is_duplicate
    verified = client.check(copy, collection=photos, threshold=threshold)
    assert [m.id for m in verified.matches] == ["ukbench00120"]
    assert verified.matches[0].verified and verified.matches[0].inliers >= min_inliers


def test_a_different_photo_in_the_band_is_rejected_above_the_threshold(
    client: DedupClient, eval_dir: Path, photos: str, band: tuple[float, float, int]
) -> None:
    _, above, _ = band
    other = (eval_dir / "base_images" / "ukbench01380.jpg").read_bytes()
    raw = client.check(other, collection="verification_base", threshold=0.01, top_k=3, cosine_only=True)
    nearest = next(m for m in raw.matches if m.id != "ukbench01380")
    threshold = nearest.similarity - min(0.01, above / 2)  # the other photo scores just over it

    assert nearest.id in [m.id for m in client.check(other, collection=photos, threshold=threshold,
                                                      cosine_only=True).matches]
    verified = client.check(other, collection=photos, threshold=threshold)
    assert nearest.id not in [m.id for m in verified.matches], verified.matches


def test_the_write_path_verifies_too(
    client: DedupClient, eval_dir: Path, collection: str, band: tuple[float, float, int]
) -> None:
    below, _, _ = band
    original = eval_dir / "base_images" / "ukbench09268.jpg"
    first = [IndexItem(id="original", image=original.read_bytes(), collection=collection)]
    assert all(r.status is IndexStatus.INDEXED for r in client.index(first))
    copy = _half_area_crop(original)
    raw = client.check(copy, collection=collection, threshold=0.01, top_k=1, cosine_only=True)
    threshold = raw.matches[0].similarity + min(0.01, below / 2)

    results = list(client.index([IndexItem(id="copy", image=copy, collection=collection, skip_duplicates=True,
                                           threshold=threshold)]))
    assert results[0].status is IndexStatus.DUPLICATE, results
    assert results[0].matches[0].id == "original" and results[0].matches[0].verified
    inserted = client.check(copy, collection=collection, threshold=threshold, insert_if_unique=True, id="copy2")
    assert not inserted.inserted and inserted.matches[0].verified
