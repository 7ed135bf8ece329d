"""The evaluation harness's own logic: transforms, splits, metrics and threshold choice (no service needed)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable

import numpy as np
import pytest
from dedup_eval import falsealarm, ranking
from dedup_eval.benchmark import make_splits
from dedup_eval.corpus import Photo
from dedup_eval.metrics import at_threshold, quality, server_decision
from dedup_eval.runner import Candidate, QueryResult
from dedup_eval.transforms import DISTRACTOR_TRANSFORMS, HARD_TRANSFORMS, MUST_FIND, TRANSFORMS, apply
from PIL import Image, ImageDraw

from tests.conftest import EVAL_DIR


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(EVAL_DIR / "base_images" / "ukbench00120.jpg") as image:
        return image.convert("RGB")


# The 15 the v1 benchmark was calibrated on: their names, order and output must not change.
V1_TRANSFORMS = (
    "scale_25", "scale_50", "crop_80", "crop_65", "brightness_+40", "brightness_-40", "contrast_-50", "grayscale",
    "jpeg_q20", "rotate_8", "border_10", "watermark", "hflip", "png", "combination",
)


@pytest.mark.parametrize("name", sorted(V1_TRANSFORMS))
def test_transform_gives_a_decodable_seeded_copy(photo: Image.Image, name: str) -> None:
    first, again = apply(name, photo, seed=7), apply(name, photo, seed=7)
    assert first == again  # seeded: the benchmark is the same on every run
    with Image.open(io.BytesIO(first)) as copy:
        copy.load()
        width, height = copy.size
    expected = {
        "scale_25": (photo.width // 4, photo.height // 4), "scale_50": (photo.width // 2, photo.height // 2),
        "crop_80": (round(photo.width * 0.8), round(photo.height * 0.8)),
        "crop_65": (round(photo.width * 0.65), round(photo.height * 0.65)),
        "border_10": (photo.width + 2 * (photo.width // 10), photo.height + 2 * (photo.height // 10)),
    }.get(name, None)
    if expected is not None:
        assert (width, height) == pytest.approx(expected, abs=1)
    elif name != "combination":
        assert (width, height) == photo.size
    if name not in {"hflip", "png"}:
        assert first != apply("original", photo, seed=7)


def test_grayscale_and_flip_do_what_they_say(photo: Image.Image) -> None:
    with Image.open(io.BytesIO(apply("grayscale", photo, seed=1))) as gray:
        assert gray.mode == "L"
    with Image.open(io.BytesIO(apply("hflip", photo, seed=1))) as flipped:
        mirrored = np.asarray(flipped.convert("RGB"), dtype=np.int16)
    assert np.abs(mirrored[:, ::-1] - np.asarray(photo, dtype=np.int16)).mean() < 6


# --- the Copydays / DISC21-style additions, and every transform on synthetic photos down to 64x48 ----------------

SIZES = [pytest.param((320, 240), id="320x240"), pytest.param((64, 48), id="64x48"),
         pytest.param((48, 64), id="48x64")]
# Transforms that draw on the Generator: some seed must give another copy.
SEEDED = frozenset({
    "crop_80", "crop_65", "rotate_8", "border_10", "watermark", "combination", "crop_area_50", "crop_area_50_wide",
    "noise", "hue_shift", "stretch", "pad_random", "emoji_stickers", "meme_text", "screenshot", "combination_strong",
    "combination_meme", "rotate_crop_15",
})


def _synthetic(width: int, height: int) -> Image.Image:
    """Gradients under a few flat shapes; no channel above 200, so white captions stand out."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([40 + 160 * x // width, 40 + 160 * y // height, 120 + 80 * ((x + y) % 32) // 32], axis=-1)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 8, height // 8, width // 2, height // 2), fill=(200, 30, 30))
    draw.rectangle((width // 2, height // 2, 7 * width // 8, 7 * height // 8), fill=(30, 160, 40))
    return image


def _decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as copy:
        copy.load()
        return copy.convert("RGB") if copy.mode != "RGB" else copy.copy()


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def test_v1_transforms_come_first_and_the_hard_ones_after() -> None:
    assert tuple(TRANSFORMS)[: len(V1_TRANSFORMS)] == V1_TRANSFORMS
    assert tuple(TRANSFORMS)[len(V1_TRANSFORMS):] == HARD_TRANSFORMS
    assert MUST_FIND <= set(V1_TRANSFORMS)
    assert set(DISTRACTOR_TRANSFORMS) - {"original"} <= set(V1_TRANSFORMS)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_every_transform_decodes_and_is_seeded_on_small_photos(name: str, size: tuple[int, int]) -> None:
    source = _synthetic(*size)
    first = apply(name, source, seed=11)
    assert first == apply(name, source, seed=11)
    copy = _decode(first)
    assert min(copy.size) >= 1
    if name in SEEDED:
        assert any(apply(name, source, seed=seed) != first for seed in range(8))


@pytest.mark.parametrize("name", HARD_TRANSFORMS)
def test_hard_transforms_change_a_large_square_photo(name: str) -> None:
    source = _synthetic(1280, 1280)
    copy = _decode(apply(name, source, seed=5))
    assert min(copy.size) >= 16
    assert apply(name, source, seed=5) != apply("original", source, seed=5)


def _aspect(image: Image.Image) -> float:
    return image.width / image.height


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("name", "holds"), [
    pytest.param("letterbox_16_9", lambda src, out: abs(out.width - out.height * 16 / 9) <= 1
                 and (out.width == src.width or out.height == src.height), id="letterbox_16_9-is-16:9"),
    pytest.param("pillarbox", lambda src, out: out.width == out.height == max(src.size), id="pillarbox-is-square"),
    pytest.param("thumb_160", lambda src, out: max(out.size) == 160
                 and abs(_aspect(out) - _aspect(src)) < 0.05, id="thumb_160-long-side"),
    pytest.param("thumb_96", lambda src, out: max(out.size) == 96
                 and abs(_aspect(out) - _aspect(src)) < 0.05, id="thumb_96-long-side"),
    pytest.param("stretch", lambda src, out: abs(_aspect(out) / _aspect(src) - 1) > 0.25, id="stretch-changes-aspect"),
    pytest.param("crop_area_50", lambda src, out: abs(out.width * out.height / (src.width * src.height) - 0.5) < 0.03
                 and abs(_aspect(out) - _aspect(src)) < 0.05, id="crop_area_50-half-the-area"),
    pytest.param("crop_area_50_wide", lambda src, out: out.height == src.height
                 and abs(out.width - src.width / 2) <= 16, id="crop_area_50_wide-half-the-width"),
    pytest.param("pad_random", lambda src, out: out.width >= src.width * 1.1 or out.height >= src.height * 1.1,
                 id="pad_random-adds-a-margin"),
    pytest.param("rotate_crop_15", lambda src, out: out.width < src.width and out.height < src.height,
                 id="rotate_crop_15-crops"),
    pytest.param("combination_strong", lambda src, out: out.width <= max(16, src.width * 0.3),
                 id="combination_strong-downscales"),
    pytest.param("combination_meme", lambda src, out: out.width >= src.width and out.height >= src.height,
                 id="combination_meme-pads"),
])
def test_geometry(name: str, holds: Callable[[Image.Image, Image.Image], bool], size: tuple[int, int]) -> None:
    source = _synthetic(*size)
    copy = _decode(apply(name, source, seed=3))
    assert holds(source, copy), (source.size, copy.size)


@pytest.mark.parametrize(("name", "fmt"), [
    pytest.param("screenshot", "PNG", id="screenshot-is-png"),
    pytest.param("jpeg_q5", "JPEG", id="jpeg_q5-is-jpeg"),
    pytest.param("thumb_96", "JPEG", id="thumb_96-is-jpeg"),
    pytest.param("combination_meme", "JPEG", id="combination_meme-is-jpeg"),
])
def test_format(name: str, fmt: str) -> None:
    with Image.open(io.BytesIO(apply(name, _synthetic(320, 240), seed=1))) as copy:
        assert copy.format == fmt


def test_low_jpeg_qualities_are_smaller() -> None:
    source = _synthetic(320, 240)
    sizes = [len(apply(name, source, seed=1)) for name in ("jpeg_q5", "jpeg_q8", "jpeg_q20", "original")]
    assert sizes == sorted(sizes) and len(set(sizes)) == 4


def test_screenshot_puts_the_photo_on_a_larger_screen() -> None:
    for seed in range(6):
        shot = _decode(apply("screenshot", _synthetic(320, 240), seed=seed))
        assert shot.height / shot.width == pytest.approx(19.5 / 9, abs=0.02) or \
            shot.width / shot.height == pytest.approx(16 / 10, abs=0.02)
        assert max(shot.size) >= 240


@pytest.mark.parametrize("size", SIZES)
def test_bars_are_black(size: tuple[int, int]) -> None:
    source = _synthetic(*size)
    for name in ("letterbox_16_9", "pillarbox"):
        pixels = _pixels(_decode(apply(name, source, seed=1)))
        assert pixels[0, 0].max() < 12 and pixels[-1, -1].max() < 12, name


def test_blur_noise_and_colour_edits_do_what_they_say() -> None:
    source = _synthetic(320, 240)
    original = _pixels(source)

    def edges(pixels: np.ndarray) -> float:
        return float(np.square(np.diff(pixels, axis=1)).mean())

    assert edges(_pixels(_decode(apply("blur", source, seed=1)))) < 0.8 * edges(original)
    noise = _pixels(_decode(apply("noise", source, seed=1))) - original
    assert 8 < noise.std() < 16
    def colourfulness(pixels: np.ndarray) -> float:  # how far pixels are from grey
        return float((pixels.max(axis=-1) - pixels.min(axis=-1)).mean())

    assert colourfulness(_pixels(_decode(apply("saturation_+80", source, seed=1)))) > 1.3 * colourfulness(original)
    def hue(image: Image.Image) -> np.ndarray:
        return np.asarray(image.convert("HSV"), dtype=np.float32)[..., 0]

    for seed in range(4):
        turned = np.abs(hue(_decode(apply("hue_shift", source, seed=seed))) - hue(source)) * 360 / 256
        turned = np.minimum(turned, 360 - turned)
        assert 25 < float(np.median(turned)) < 65, seed


@pytest.mark.parametrize("size", SIZES)
def test_stickers_and_captions_cover_part_of_the_photo(size: tuple[int, int]) -> None:
    source = _synthetic(*size)
    original = _pixels(source)
    for seed in range(3):
        changed = np.abs(_pixels(_decode(apply("emoji_stickers", source, seed=seed))) - original).max(axis=-1) > 60
        assert 0.01 < changed.mean() < 0.5, seed
        # captions: white ink (the photo has no channel above 200) top and bottom, the middle left alone
        meme = _pixels(_decode(apply("meme_text", source, seed=seed)))
        band, middle = max(1, size[1] // 5), slice(2 * size[1] // 5, 3 * size[1] // 5)
        assert meme[:band].min(axis=-1).max() > 210 and meme[-band:].min(axis=-1).max() > 210, seed
        untouched = np.abs(meme[middle] - original[middle]).mean()
        assert min(np.abs(meme - original)[:band].mean(), np.abs(meme - original)[-band:].mean()) > 3 * untouched


def _photos(count: int) -> list[Photo]:
    return [Photo(id=f"p{i:03d}", source="test", image=Image.new("RGB", (8, 8))) for i in range(count)]


def test_splits_are_disjoint_balanced_and_stable() -> None:
    photos = _photos(64)
    splits = make_splits(photos)
    again = make_splits(list(reversed(photos)))
    groups = [{p.id for p in getattr(s, role)} for s in splits.values() for role in ("indexed", "distractors")]
    assert sum(len(g) for g in groups) == 64
    assert len(set().union(*groups)) == 64
    # Calibration 1:1; the test split holds 3 distractors per indexed photo.
    assert [len(g) for g in groups] == [16, 16, 8, 24]
    assert [p.id for p in splits["test"].indexed] == [p.id for p in again["test"].indexed]


def test_split_queries_cover_every_transform_and_distractor_edit() -> None:
    split = make_splits(_photos(8))["test"]
    queries = split.queries
    assert len(queries) == len(TRANSFORMS) + 3 * len(DISTRACTOR_TRANSFORMS)
    assert {q.expected for q in queries} == {p.id for p in split.indexed} | {None}


def _result(query_id: str, expected: str | None, *candidates: tuple[str, float]) -> QueryResult:
    transform = query_id.split("/")[1]
    return QueryResult(id=query_id, transform=transform, expected=expected,
                       candidates=[Candidate(i, s) for i, s in candidates],
                       decided=[i for i, s in candidates if s >= 0.5], decided_mirrors_distinct=())


RESULTS = [
    _result("a/gray", "a", ("a", 0.9)),
    _result("a/crop", "a", ("a", 0.6)),
    _result("b/crop", "b", ("a", 0.55), ("b", 0.5)),  # best match is the wrong photo
    _result("b/gray", "b", ("b", 0.3)),  # missed
    _result("x/original", None, ("a", 0.45)),  # distractor below 0.5
    _result("y/original", None, ("b", 0.7)),  # distractor above 0.5: a false alarm
]


def test_quality_counts_wrong_matches_and_false_alarms() -> None:
    q = quality(RESULTS, at_threshold(0.5), threshold=0.5)
    assert (q.positives, q.distractor_queries) == (4, 2)
    assert (q.true_positives, q.false_positives, q.wrong_matches, q.false_alarms) == (2, 2, 1, 1)
    assert q.wrong_listed_matches == 2  # a's listing for b/crop and y's
    assert q.precision == pytest.approx(0.5)
    assert q.match_precision == pytest.approx(3 / 5)
    assert q.recall == pytest.approx(0.5)
    assert q.recall_by_transform == {"gray": 0.5, "crop": 0.5}
    assert q.false_alarms_by_transform == {"original": 1}
    assert sorted(q.missed) == ["b/crop", "b/gray"]
    # The server's own decisions (made at 0.5 in these results) are scored the same way.
    assert quality(RESULTS, server_decision) == dataclasses.replace(q, threshold=None)




def _ranked_results() -> tuple[list[QueryResult], list[list[str]]]:
    results = [
        _result("a/x", "a", ("a", 0.9)), _result("b/x", "b", ("b", 0.8)),
        _result("c/x", "c", ("z", 0.85)),  # duplicate answer naming the wrong photo
        _result("d/x", "d", ("d", 0.4)),  # a copy the service did not call a duplicate
        _result("n/original", None, ("a", 0.6)),
    ]
    decided = [["a"], ["b"], ["z"], [], []]
    return results, decided


def test_micro_ap_ranks_duplicate_answers_first_then_by_similarity() -> None:
    results, decided = _ranked_results()
    preds = ranking.predictions(results, decided)
    # Ranked: a (0.9, right), c (0.85, wrong), b (0.8, right), then the non-duplicates n (0.6), d (0.4, right).
    expected = (1 / 1 + 2 / 3 + 3 / 5) / 4
    assert ranking.micro_ap(preds, positives=4) == pytest.approx(expected)
    assert ranking.recall_at_precision(preds, 4, 0.99) == pytest.approx(0.25)
    assert ranking.recall_at_precision(preds, 4, 0.6) == pytest.approx(0.75)


def test_false_alarm_model_grows_with_the_collection_and_is_bounded_by_verification() -> None:
    rng = np.random.default_rng(0)
    sims = [np.clip(rng.normal(0.25, 0.08, size=100), 0.01, 0.99) for _ in range(300)]
    results = [QueryResult(id=f"q{i}/original", transform="original", expected=None,
                           candidates=[Candidate(f"p{j}", float(s)) for j, s in enumerate(sorted(row, reverse=True))],
                           decided=(), decided_mirrors_distinct=()) for i, row in enumerate(sims)]
    pairs = falsealarm.unrelated_pairs(results, indexed=100)
    assert pairs.total == 30_000
    fitted = falsealarm.model(pairs, lo=0.35, hi=0.45, max_candidates=3, band_passed=0, band_pairs=500, bootstrap=20)
    rates = [fitted.at(n) for n in (10, 1000, 10**6)]
    assert rates == sorted(rates) and 0 <= rates[0] < rates[-1] <= 1
    # Normal data has a bounded-looking tail: the fitted shape is negative, and far out nothing exceeds.
    assert fitted.tail.shape < 0 and fitted.tail.survival(0.99, pairs.similarities) == 0.0
    low, high = fitted.interval(10**6)
    assert low <= fitted.at(10**6) <= high
    # With no band pair passing, the band adds nothing to the point estimate, but its Wilson bound stays above 0.
    assert fitted.q == 0 and fitted.q_interval[1] > 0
    assert falsealarm.FalseAlarmModel.rate(10**6, 0.0, 0.01, 0.1, 3) == pytest.approx(1 - 0.9**3)


def test_false_alarms_measured_on_sub_collections() -> None:
    results = [_result("n/original", None, ("a", 0.9), ("b", 0.2))]
    measured = falsealarm.measured(results, ["a", "b", "c", "d"], [1, 2, 4, 10],
                                   lambda result, subset: "a" in subset)
    assert set(measured) == {1, 2, 4}  # sizes beyond the collection are not measured
    assert measured[4] == 1.0 and 0 < measured[2] < 1


def test_wilson_interval() -> None:
    assert falsealarm.wilson(0, 0) == (0.0, 1.0)
    low, high = falsealarm.wilson(0, 1000)
    assert low == 0.0 and 0.001 < high < 0.005


def test_calibration_picks_a_band_that_verifies_look_alikes_away() -> None:
    from dedup_eval import calibrate
    from dedup_eval.evidence import PairEvidence
    from dedup_server.verification.geometry import Evidence

    strong, weak = Evidence(inliers=200, coverage=0.5, matches=300), Evidence.none(10)
    rng = np.random.default_rng(3)
    results, table = [], {}
    for i in range(200):  # copies: some far above any band, some (hard edits) inside it with strong evidence
        similarity = 0.95 if i % 2 else 0.6
        other = float(rng.uniform(0.2, 0.5))
        result = _result(f"p{i}/edit", f"p{i}", (f"p{i}", similarity), (f"o{i}", other))
        results.append(result)
        table[(result.id, f"p{i}")] = PairEvidence(strong, weak)
        table[(result.id, f"o{i}")] = PairEvidence(weak, weak)
    for i in range(1500):  # distractors: look-alikes up to 0.8, never geometrically consistent (enough of them
        # for Wilson's bound on the verification's false passes, times K, to fit the 1 % budget)
        result = _result(f"d{i}/original", None, (f"p{i % 200}", float(rng.uniform(0.3, 0.8))))
        results.append(result)
        table[(result.id, f"p{i % 200}")] = PairEvidence(weak, weak)
    pairs = falsealarm.unrelated_pairs(results, indexed=200)
    chosen = calibrate.choose(results, table, pairs)
    assert chosen.meets_budget and chosen.recall == 1.0 and chosen.precision == 1.0
    assert chosen.lo <= 0.6 and chosen.hi >= 0.8  # the hard copies verified in, the look-alikes verified out
    assert chosen.threshold - chosen.rule.below == pytest.approx(chosen.lo)
    assert chosen.threshold + chosen.rule.above == pytest.approx(chosen.hi)


def test_a_featureless_band_pair_is_accepted_as_the_server_does() -> None:
    from dedup_eval.evidence import PairEvidence
    from dedup_server.verification.geometry import Evidence
    from dedup_server.verification.rule import VerificationRule

    rule = VerificationRule(below=0.2, above=0.2, min_inliers=12, min_coverage=0.005, max_candidates=1)
    flat = PairEvidence(Evidence.none(), Evidence.none(), featureless=True)
    assert flat.accepted(rule, 0.75, 0.7, framed=False)  # the cosine against the threshold decides
    assert not flat.accepted(rule, 0.65, 0.7, framed=False)
    assert not flat.accepted(rule, 0.75, 0.7, framed=True)  # a partial view never goes on cosine alone
    framed_photo = PairEvidence(Evidence.none(), Evidence.none(), Evidence(inliers=40, coverage=0.2, matches=50))
    assert framed_photo.accepted(rule, 0.5, 0.7, framed=True)  # the framed photo's own features passed
    assert not PairEvidence(Evidence.none(), Evidence.none()).accepted(rule, 0.75, 0.7, framed=False)
