"""Framed photos (framing.py): the photo inside UI chrome, bars or padding is found; an ordinary photo has none.

Real photos from ../shared/eval, framed here at known positions, so the found box can be compared with the truth.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest
from dedup_server import framing
from dedup_server.decision import COSINE_ONLY, decide, to_verify
from dedup_server.decode import DecodeLimits, decode_with_thumbnail
from dedup_server.flip import FlipPolicy
from dedup_server.index import Hit
from dedup_server.verification import geometry, signature
from dedup_server.verification.geometry import Evidence
from dedup_server.verification.rule import VerificationRule
from dedup_server.verification.verifier import QueryFeatures, Verified, choose
from PIL import Image, ImageDraw

LIMITS = DecodeLimits()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def photos(eval_dir: Path) -> list[Image.Image]:
    loaded = []
    for path in sorted((eval_dir / "base_images").glob("*.jpg")):
        with Image.open(path) as image:
            loaded.append(image.convert("RGB"))
    return loaded


def _screenshot(photo: Image.Image, dark: bool) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A desktop-like window: title bar, sidebar of buttons, a text pane beside the photo, a status bar."""
    width, height = 1000, 640
    background, panel, ink = ((30, 30, 32), (60, 60, 62), (128, 128, 130)) if dark else \
        ((255, 255, 255), (232, 232, 237), (142, 142, 147))
    canvas = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, width, 32), fill=panel)
    draw.rectangle((0, 32, 150, height), fill=panel)
    for k in range(10):
        draw.rectangle((16, 60 + 50 * k, 134, 84 + 50 * k), fill=ink)
    for k in range(14):
        draw.rectangle((820, 60 + 28 * k, 820 + 40 + 9 * k % 100, 72 + 28 * k), fill=panel)
    draw.text((400, 8), "IMG_0042.jpg - Photos", fill=ink)
    framed = photo.resize((640, round(640 * photo.height / photo.width)))
    left, top = 165, 50
    canvas.paste(framed, (left, top))
    return canvas, (left, top, framed.width, framed.height)


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def _box_at_full_size(data: bytes) -> tuple[int, int, int, int] | None:
    with Image.open(io.BytesIO(data)) as image:
        size = image.size
    thumbnail = decode_with_thumbnail(data, LIMITS, grey=True, thumbnail_side=signature.SIDE).thumbnail
    box = framing.photo_box(thumbnail)
    if box is None:
        return None
    scaled = box.scaled(size[0] / thumbnail.shape[1], size[1] / thumbnail.shape[0], *size)
    return scaled.left, scaled.top, scaled.width, scaled.height


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_a_photo_in_a_screenshot_is_found_where_it_is(photos: list[Image.Image], dark: bool) -> None:
    # One of the ten (ukbench01380) has large flat dark areas that read as frame: it is found short or not at all.
    overlaps = []
    for photo in photos:
        canvas, truth = _screenshot(photo, dark)
        found = _box_at_full_size(_png(canvas))
        overlaps.append(0.0 if found is None else _iou(found, truth))
    assert sum(overlap > 0.85 for overlap in overlaps) >= 9, overlaps


def test_letterbox_bars_frame_the_photo(photos: list[Image.Image]) -> None:
    overlaps = []
    for photo in photos:
        framed = photo.resize((400, 300))
        canvas = Image.new("RGB", (640, 300), (0, 0, 0))
        canvas.paste(framed, (120, 0))
        found = _box_at_full_size(_jpeg(canvas))
        overlaps.append(0.0 if found is None else _iou(found, (120, 0, 400, 300)))
    assert sum(overlap > 0.85 for overlap in overlaps) >= 9, overlaps


def test_ordinary_photos_have_no_frame(photos: list[Image.Image]) -> None:
    found = [_box_at_full_size(_jpeg(photo)) for photo in photos]
    assert sum(box is not None for box in found) <= 1, found


def test_flat_and_tiny_images_have_no_frame() -> None:
    assert framing.photo_box(np.full((200, 300), 128, np.uint8)) is None
    assert framing.photo_box(np.zeros((20, 20), np.uint8)) is None


def test_decode_gives_the_framed_photo_as_a_model_input(photos: list[Image.Image]) -> None:
    canvas, _ = _screenshot(photos[0], dark=False)
    decoded = decode_with_thumbnail(_png(canvas), LIMITS, grey=True, thumbnail_side=signature.SIDE, framed=True)
    assert decoded.framed is not None and decoded.framed.shape == (LIMITS.size, LIMITS.size, 3)
    plain = decode_with_thumbnail(_jpeg(photos[0]), LIMITS, grey=True, thumbnail_side=signature.SIDE, framed=True)
    assert plain.framed is None
    unasked = decode_with_thumbnail(_png(canvas), LIMITS, grey=True, thumbnail_side=signature.SIDE)
    assert unasked.framed is None


_PASS, _FAIL = Evidence(inliers=40, coverage=0.3, matches=60), Evidence(inliers=5, coverage=0.01, matches=30)
_RULE = VerificationRule(below=0.1, above=0.1, min_inliers=12, min_coverage=0.005)


@pytest.mark.parametrize(("plain", "framed", "mirrored", "expected"), [
    pytest.param(_PASS, _FAIL, _FAIL, Verified(_PASS, mirrored=False), id="whole-query"),
    pytest.param(_FAIL, _PASS, _FAIL, Verified(_PASS, mirrored=False), id="framed-photo"),
    pytest.param(_FAIL, Evidence.none(), _PASS, Verified(_PASS, mirrored=True), id="mirrored"),
    pytest.param(_FAIL, Evidence.none(), Evidence.none(), Verified(_FAIL, mirrored=False), id="none-strongest"),
])
def test_the_framed_photo_is_tried_after_the_whole_query_and_before_its_mirror(
    plain: Evidence, framed: Evidence, mirrored: Evidence, expected: Verified
) -> None:
    assert choose(plain, lambda: framed, lambda: mirrored, _RULE) == expected


def test_a_screenshot_verifies_through_its_framed_photo(photos: list[Image.Image]) -> None:
    stored = signature.signature_pixels(signature.make_signature(
        decode_with_thumbnail(_jpeg(photos[0]), LIMITS, grey=True, thumbnail_side=signature.SIDE).thumbnail))
    canvas, _ = _screenshot(photos[0], dark=True)
    decoded = decode_with_thumbnail(_png(canvas), LIMITS, grey=True, thumbnail_side=signature.SIDE, framed=True)
    assert stored is not None and decoded.framed_thumbnail is not None
    query = QueryFeatures(decoded.thumbnail, decoded.framed_thumbnail)
    framed_features = query.framed()
    assert framed_features is not None
    assert _RULE.passes(geometry.match(framed_features, geometry.extract(stored)))
    assert QueryFeatures(decoded.thumbnail).framed() is None


_BAND = VerificationRule(below=0.4, above=0.1, min_inliers=12, min_coverage=0.005)  # threshold 0.85: [0.45, 0.95)


@pytest.mark.parametrize(("similarity", "framed", "in_band"), [
    pytest.param(0.97, False, False, id="whole-above-band"),
    pytest.param(0.97, True, True, id="framed-above-band-is-verified"),
    pytest.param(0.60, True, True, id="framed-in-band"),
    pytest.param(0.40, True, False, id="framed-below-band"),
])
def test_a_framed_candidate_has_no_top_to_its_band(similarity: float, framed: bool, in_band: bool) -> None:
    assert _BAND.in_band(similarity, 0.85, framed=framed) is in_band
    assert COSINE_ONLY.in_band(similarity, 0.85, framed=framed) is False


def test_a_framed_candidate_is_a_duplicate_only_when_verified() -> None:
    framed = Hit(id="a", similarity=0.97, metadata={}, framed=True)
    assert to_verify([framed], 0.85, _BAND) == ["a"]
    assert decide([framed], "", FlipPolicy.DEFAULT, 0.85, 5, rule=_BAND, verified={}) == []
    rejected = {"a": Verified(_FAIL, mirrored=False)}
    assert decide([framed], "", FlipPolicy.DEFAULT, 0.85, 5, rule=_BAND, verified=rejected) == []
    passed = decide([framed], "", FlipPolicy.DEFAULT, 0.85, 5, rule=_BAND, verified={"a": Verified(_PASS, False)})
    assert [(m.id, m.framed, m.verified) for m in passed] == [("a", True, True)]
    # Without a band (cosine_only, or collections without signatures) the cosine decides, framed or not.
    assert [m.id for m in decide([framed], "", FlipPolicy.DEFAULT, 0.85, 5)] == ["a"]


def test_the_whole_image_s_hit_wins_a_tie_with_the_framed_photo_s() -> None:
    whole = Hit(id="a", similarity=0.97, metadata={})
    framed = dataclasses.replace(whole, framed=True)
    for hits in ([whole, framed], [framed, whole]):
        assert [m.framed for m in decide(hits, "", FlipPolicy.DEFAULT, 0.85, 5, rule=_BAND, verified={})] == [False]
    higher = dataclasses.replace(framed, similarity=0.99)
    assert to_verify([whole, higher], 0.85, _BAND) == ["a"]  # its best similarity is the framed photo's
