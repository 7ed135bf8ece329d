"""The evaluation harness's own logic: transforms, splits, metrics and threshold choice (no service needed)."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from dedup_eval.benchmark import make_splits
from dedup_eval.corpus import Photo
from dedup_eval.metrics import at_threshold, choose_threshold, quality, server_decision
from dedup_eval.runner import Candidate, QueryResult
from dedup_eval.transforms import DISTRACTOR_TRANSFORMS, TRANSFORMS, apply
from PIL import Image

from tests.conftest import EVAL_DIR


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    with Image.open(EVAL_DIR / "base_images" / "ukbench00120.jpg") as image:
        return image.convert("RGB")


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
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


def _photos(count: int) -> list[Photo]:
    return [Photo(id=f"p{i:03d}", source="test", image=Image.new("RGB", (8, 8))) for i in range(count)]


def test_splits_are_disjoint_balanced_and_stable() -> None:
    photos = _photos(60)
    splits = make_splits(photos)
    again = make_splits(list(reversed(photos)))
    groups = [{p.id for p in getattr(s, role)} for s in splits.values() for role in ("indexed", "distractors")]
    assert sum(len(g) for g in groups) == 60
    assert len(set().union(*groups)) == 60
    assert [len(g) for g in groups] == [20, 10, 20, 10]
    assert [p.id for p in splits["test"].indexed] == [p.id for p in again["test"].indexed]


def test_split_queries_cover_every_transform_and_distractor_edit() -> None:
    split = make_splits(_photos(6))["test"]
    queries = split.queries
    assert len(queries) == 2 * len(TRANSFORMS) + len(DISTRACTOR_TRANSFORMS)
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


def test_threshold_is_chosen_in_the_middle_of_the_gap() -> None:
    results = [
        _result("a/x", "a", ("a", 0.80)), _result("a/y", "a", ("a", 0.70)),
        _result("n/original", None, ("a", 0.40)),
    ]
    chosen = choose_threshold(results, min_precision=0.995)
    assert 0.40 < chosen <= 0.70
    assert chosen == pytest.approx(0.55, abs=0.01)
