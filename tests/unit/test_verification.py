"""Geometric verification: signatures, local-feature evidence, the band rule and the decision built on them.

Real photos from ../shared/eval: a crop, a downscale and a grey copy of a photo keep its geometry (many inliers);
two different UKBench photos do not. The rule and decision tests are table-driven on synthetic hits.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from dedup_server.decision import COSINE_ONLY, decide, to_verify
from dedup_server.decode import DecodeLimits, decode_with_thumbnail
from dedup_server.flip import FlipPolicy
from dedup_server.index import Hit
from dedup_server.verification import geometry, signature
from dedup_server.verification.geometry import Evidence
from dedup_server.verification.rule import Verdict, VerificationRule
from dedup_server.verification.verifier import QueryFeatures, Verified, verify
from PIL import Image, ImageFilter, ImageOps

LIMITS = DecodeLimits()
RULE = VerificationRule(below=0.1, above=0.1, min_inliers=20, min_coverage=0.05, max_candidates=2)


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _thumbnail(data: bytes) -> np.ndarray:
    return decode_with_thumbnail(data, LIMITS, grey=True, thumbnail_side=signature.SIDE).thumbnail


@pytest.fixture(scope="module")
def photo(eval_dir: Path) -> Image.Image:
    with Image.open(eval_dir / "base_images" / "ukbench00120.jpg") as image:
        return image.convert("RGB")


@pytest.fixture(scope="module")
def stored_signature(photo: Image.Image) -> str:
    return signature.make_signature(_thumbnail(_jpeg(photo)))


def test_thumbnail_keeps_the_aspect_and_the_longest_side(photo: Image.Image) -> None:
    thumb = _thumbnail(_jpeg(photo))
    assert thumb.ndim == 2 and max(thumb.shape) <= signature.SIDE
    assert abs(thumb.shape[1] / thumb.shape[0] - photo.width / photo.height) < 0.02
    small = _thumbnail(_jpeg(photo.resize((90, 60))))
    assert small.shape == (60, 90)  # never upscaled when stored: verification upscales to its working size


def test_signature_round_trip_and_size(stored_signature: str) -> None:
    pixels = signature.signature_pixels(stored_signature)
    assert pixels is not None and pixels.dtype == np.uint8 and max(pixels.shape) <= signature.SIDE
    assert len(stored_signature) < signature.MAX_CHARS
    assert signature.signature_pixels("") is None
    assert signature.signature_pixels("not base64 at all!") is None
    assert signature.make_signature(np.zeros((0, 0), dtype=np.uint8)) == ""


def _edits(photo: Image.Image) -> dict[str, bytes]:
    width, height = photo.size
    return {
        "crop_70": _jpeg(photo.crop((width // 10, height // 10, width * 8 // 10, height * 8 // 10))),
        "scale_40": _jpeg(photo.resize((width * 2 // 5, height * 2 // 5))),
        "grey_q30": _jpeg(photo.convert("L"), quality=30),
        "letterbox": _jpeg(ImageOps.pad(photo, (width, width * 9 // 16 + height), color=(0, 0, 0))),
    }


@pytest.mark.parametrize("edit", ["crop_70", "scale_40", "grey_q30", "letterbox"])
def test_copies_keep_their_geometry(photo: Image.Image, stored_signature: str, edit: str) -> None:
    found = verify(QueryFeatures(_thumbnail(_edits(photo)[edit])), {"original": stored_signature}, RULE)
    assert RULE.passes(found["original"].evidence), found
    assert not found["original"].mirrored


def test_a_mirrored_copy_passes_through_the_mirrored_query(photo: Image.Image, stored_signature: str) -> None:
    found = verify(QueryFeatures(_thumbnail(_jpeg(ImageOps.mirror(photo)))), {"original": stored_signature}, RULE)
    assert RULE.passes(found["original"].evidence) and found["original"].mirrored


@pytest.mark.parametrize("other", ["ukbench01380.jpg", "ukbench08976.jpg", "ukbench09268.jpg"])
def test_different_photos_do_not(eval_dir: Path, stored_signature: str, other: str) -> None:
    data = (eval_dir / "base_images" / other).read_bytes()
    found = verify(QueryFeatures(_thumbnail(data)), {"original": stored_signature}, RULE)
    assert not RULE.passes(found["original"].evidence), found


def test_unreadable_signatures_and_empty_queries_are_unverifiable(photo: Image.Image) -> None:
    assert verify(QueryFeatures(_thumbnail(_jpeg(photo))), {"a": "", "b": "%%%"}, RULE) == {}
    assert verify(QueryFeatures(np.zeros((0, 0), dtype=np.uint8)), {"a": "x"}, RULE) == {}


def test_featureless_images_give_no_evidence() -> None:
    flat = geometry.extract(np.full((240, 320), 128, dtype=np.uint8))
    assert flat.count == 0 and flat.corners == 0
    assert geometry.match(flat, flat) == Evidence.none()
    assert geometry.featureless(flat, flat)


def test_a_verifier_says_when_a_side_is_featureless(photo: Image.Image) -> None:
    flat = signature.make_signature(np.full((240, 320), 128, dtype=np.uint8))
    found = verify(QueryFeatures(_thumbnail(_jpeg(photo))), {"flat": flat}, RULE)["flat"]
    assert found.featureless and not RULE.passes(found.evidence)


def test_low_texture_images_are_detected_again_at_a_lower_fast_threshold(photo: Image.Image) -> None:
    # a small, blurred copy keeps few strong corners: the retry at FAST_RETRY finds more
    grey = np.asarray(photo.convert("L").resize((90, 60)).filter(ImageFilter.GaussianBlur(1)).resize((480, 320)),
                      dtype=np.uint8)
    features = geometry.extract(grey)
    assert features.corners < geometry.RETRY_BELOW and features.count > features.corners


STRONG = Evidence(inliers=100, coverage=0.4, matches=150)
WEAK = Evidence(inliers=6, coverage=0.01, matches=30)


@pytest.mark.parametrize(
    ("similarity", "evidence", "verdict", "duplicate"),
    [
        pytest.param(0.95, None, Verdict.ACCEPTED, True, id="above-band"),
        pytest.param(0.75, WEAK, Verdict.REJECTED, False, id="look-alike-above-threshold"),
        pytest.param(0.65, STRONG, Verdict.VERIFIED, True, id="copy-below-threshold"),
        pytest.param(0.65, None, Verdict.UNVERIFIABLE, False, id="no-signature-below-threshold"),
        pytest.param(0.75, None, Verdict.UNVERIFIABLE, True, id="no-signature-above-threshold"),
        pytest.param(0.55, STRONG, Verdict.BELOW, False, id="below-band"),
    ],
)
def test_rule(similarity: float, evidence: Evidence | None, verdict: Verdict, duplicate: bool) -> None:
    assert RULE.verdict(similarity, 0.7, evidence) is verdict
    assert RULE.is_duplicate(similarity, 0.7, evidence) is duplicate


def test_rule_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        VerificationRule(below=-0.1)
    with pytest.raises(ValueError):
        VerificationRule(min_inliers=2)
    assert not COSINE_ONLY.enabled and not COSINE_ONLY.in_band(0.7, 0.7)


def _hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(id=i, similarity=s, metadata={}) for i, s in pairs]


def test_only_the_best_band_candidates_are_verified() -> None:
    hits = _hits(("a", 0.9), ("b", 0.78), ("c", 0.7), ("d", 0.66), ("e", 0.5))
    assert to_verify(hits, 0.7, RULE) == ["b", "c"]  # max_candidates=2; a is above the band, e below
    assert to_verify(hits, 0.7, COSINE_ONLY) == []


def test_identical_twins_take_no_verification_slot() -> None:
    # With K = 1 and the band reaching past any cosine, a stored image's byte copy (cosine 1) would take the only
    # verification, and its mirrored copy (0.93) would never join its group.
    rule = VerificationRule(below=0.4, above=0.2, min_inliers=12, min_coverage=0.005, max_candidates=1)
    hits = _hits(("twin", 1.0), ("twin-2", 0.99995), ("mirrored", 0.93), ("other", 0.9))
    assert to_verify(hits, 0.85, rule) == ["twin", "twin-2", "mirrored"]
    framed = Hit(id="framed", similarity=1.0, metadata={}, framed=True)  # a partial view is never a twin
    assert to_verify([framed, *_hits(("mirrored", 0.93))], 0.85, rule) == ["framed"]


def test_decide_with_evidence() -> None:
    hits = _hits(("look-alike", 0.78), ("copy", 0.65), ("far", 0.3))
    verified = {"look-alike": Verified(WEAK, False), "copy": Verified(STRONG, True)}
    matches = decide(hits, "", FlipPolicy.DEFAULT, 0.7, 10, rule=RULE, verified=verified)
    assert [(m.id, m.verified, m.inliers, m.mirrored) for m in matches] == [("copy", True, 100, True)]
    assert decide(hits, "", FlipPolicy.MIRROR_IS_DISTINCT, 0.7, 10, rule=RULE, verified=verified) == []


def test_decide_band_candidates_beyond_the_cap_are_not_duplicates() -> None:
    hits = _hits(("b", 0.78), ("c", 0.75), ("d", 0.72))
    verified = {"b": Verified(WEAK, False), "c": Verified(WEAK, False)}  # d was not verified (cap 2)
    assert decide(hits, "", FlipPolicy.DEFAULT, 0.7, 10, rule=RULE, verified=verified) == []


def test_decide_featureless_pairs_by_the_cosine() -> None:
    hits = _hits(("b", 0.78), ("c", 0.65))
    verified = {"b": Verified(WEAK, False, featureless=True), "c": Verified(WEAK, False, featureless=True)}
    matches = decide(hits, "", FlipPolicy.DEFAULT, 0.7, 10, rule=RULE, verified=verified)
    assert [(m.id, m.verified) for m in matches] == [("b", False)]  # above the threshold, not verified
    framed = [Hit(id="b", similarity=0.78, metadata={}, framed=True)]
    assert decide(framed, "", FlipPolicy.DEFAULT, 0.7, 10, rule=RULE, verified={"b": verified["b"]}) == []


def test_decide_without_signatures_falls_back_to_the_cosine() -> None:
    hits = _hits(("b", 0.78), ("c", 0.65))
    assert [m.id for m in decide(hits, "", FlipPolicy.DEFAULT, 0.7, 10, rule=RULE, verified=None)] == ["b"]
