"""Duplicate groups as groups: members, the best similarity joining each, the keeper of each policy, mirrors; the
facts they are chosen on; collection names users use, and their Milvus names."""

from __future__ import annotations

import io
import re

import pytest
from dedup_server import validation
from dedup_server.config import Limits
from dedup_server.errors import InvalidRequest
from dedup_server.facts import (
    BYTES_KEY,
    FORMAT_KEY,
    HEIGHT_KEY,
    WIDTH_KEY,
    ImageFacts,
    facts_from_metadata,
    image_facts,
    public_metadata,
)
from dedup_server.groups import GroupBuilder, KeepPolicy
from dedup_server.index import LAYOUT_KEY, LEGACY_COLLECTION_NAME, milvus_collection_name
from PIL import Image

FACTS = {
    # id: (width, height, bytes, format, indexed_at_ms)
    "big.jpg": ImageFacts(1600, 1200, 900_000, "JPEG", 3_000),
    "same-pixels-more-bytes.jpg": ImageFacts(1600, 1200, 950_000, "JPEG", 4_000),
    "small.png": ImageFacts(800, 600, 700_000, "PNG", 1_000),
    "tiny.webp": ImageFacts(400, 300, 20_000, "WEBP", 2_000),
}


def _builder() -> GroupBuilder:
    builder = GroupBuilder()
    builder.add("big.jpg", "small.png", 0.97)
    builder.add("small.png", "big.jpg", 0.95)  # found from the other side: the best score stays
    builder.add("big.jpg", "same-pixels-more-bytes.jpg", 0.99)
    builder.add("tiny.webp", "small.png", 0.91, mirrored=True)
    builder.add("x", "y", 0.8)
    for image_id, facts in FACTS.items():
        builder.describe(image_id, facts, {"path": f"photos/{image_id}"})
    return builder


@pytest.mark.parametrize(
    ("policy", "keeper"),
    [
        pytest.param(KeepPolicy.DEFAULT, "same-pixels-more-bytes.jpg", id="default-is-largest"),
        pytest.param(KeepPolicy.LARGEST, "same-pixels-more-bytes.jpg", id="largest-pixels-then-bytes"),
        pytest.param(KeepPolicy.ORIGINAL_FORMAT, "small.png", id="original-format-lossless-first"),
        pytest.param(KeepPolicy.OLDEST, "small.png", id="oldest"),
        pytest.param(KeepPolicy.NEWEST, "same-pixels-more-bytes.jpg", id="newest"),
    ],
)
def test_keeper_by_policy(policy: KeepPolicy, keeper: str) -> None:
    group = _builder().groups(policy)[0]
    assert group.keeper == keeper
    assert [m.id for m in group.members if m.keeper] == [keeper]
    assert group.members[0].id == keeper  # the keeper first


def test_each_member_once_with_its_best_similarity_and_closest() -> None:
    groups = _builder().groups(KeepPolicy.LARGEST)
    assert [g.ids for g in groups] == [
        ("big.jpg", "same-pixels-more-bytes.jpg", "small.png", "tiny.webp"), ("x", "y"),
    ]
    members = {m.id: m for m in groups[0].members}
    assert len(groups[0].members) == 4
    assert (members["small.png"].similarity, members["small.png"].closest) == (0.97, "big.jpg")
    assert (members["big.jpg"].similarity, members["big.jpg"].closest) == (0.99, "same-pixels-more-bytes.jpg")
    assert (members["tiny.webp"].similarity, members["tiny.webp"].closest) == (0.91, "small.png")
    assert members["tiny.webp"].metadata == {"path": "photos/tiny.webp"}
    assert members["tiny.webp"].facts == FACTS["tiny.webp"]
    # The keeper first, then best similarity first.
    assert [m.id for m in groups[0].members] == ["same-pixels-more-bytes.jpg", "big.jpg", "small.png", "tiny.webp"]
    # Undescribed members (a collection from before facts were kept) still come, with empty facts.
    assert groups[1].members[0].facts == ImageFacts() and groups[1].keeper == "x"


def test_mirrored_is_relative_to_the_keeper_along_the_strongest_pairs() -> None:
    builder = GroupBuilder()
    builder.add("a", "b", 0.99, mirrored=True)  # b is a mirrored
    builder.add("b", "c", 0.98)  # c is b unmirrored: so a mirror of a too
    builder.add("a", "c", 0.60, mirrored=False)  # a weak, contradicting pair loses to the strong path
    builder.add("a", "d", 0.97)
    for image_id, pixels in (("a", 100), ("b", 50), ("c", 50), ("d", 50)):
        builder.describe(image_id, ImageFacts(pixels, 1), {})
    members = {m.id: m for m in builder.groups(KeepPolicy.LARGEST)[0].members}
    assert {i: m.mirrored for i, m in members.items()} == {"a": False, "b": True, "c": True, "d": False}
    # Seen from b (the keeper when b is largest), a and c flip.
    builder.describe("b", ImageFacts(1000, 1), {})
    members = {m.id: m for m in builder.groups(KeepPolicy.LARGEST)[0].members}
    assert {i: m.mirrored for i, m in members.items()} == {"a": True, "b": False, "c": False, "d": True}
    pair = next(p for p in builder.groups()[0].pairs if (p.id_a, p.id_b) == ("a", "b"))
    assert pair.mirrored


def test_min_size_and_limit() -> None:
    builder = _builder()
    assert [len(g.ids) for g in builder.groups(min_size=3)] == [4]
    assert [len(g.ids) for g in builder.groups(limit=1)] == [4]
    assert [len(g.ids) for g in builder.groups(min_size=0, limit=0)] == [4, 2]
    assert builder.groups(min_size=5) == []


def test_a_neighbours_hit_does_not_overwrite_the_images_own_facts() -> None:
    builder = GroupBuilder()
    builder.add("a", "b", 0.9)
    builder.describe("b", ImageFacts(10, 10, indexed_at_ms=5), {"path": "b"})
    builder.describe("b", ImageFacts(10, 10), {"path": "b"}, replace=False)
    assert {m.id: m.facts.indexed_at_ms for m in builder.groups()[0].members}["b"] == 5


def _encoded(fmt: str, size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP", "PPM"])
def test_image_facts_from_the_header(fmt: str) -> None:
    data = _encoded(fmt)
    facts = facts_from_metadata(image_facts(data), indexed_at_ms=7)
    assert facts == ImageFacts(width=40, height=30, bytes=len(data), format=fmt, indexed_at_ms=7)
    assert facts.pixels == 1200
    assert facts.lossless is (fmt in ("PNG", "TIFF", "BMP", "PPM"))


def test_image_facts_of_bytes_that_are_no_image_are_only_their_size() -> None:
    assert image_facts(b"not an image") == {BYTES_KEY: "12"}
    assert facts_from_metadata({WIDTH_KEY: "x", HEIGHT_KEY: "-3"}) == ImageFacts()


def test_reserved_metadata_keys_are_refused_and_never_answered() -> None:
    limits = Limits()
    for key in (LAYOUT_KEY, FORMAT_KEY, "_dedup_anything"):
        with pytest.raises(InvalidRequest, match="reserved for the server"):
            validation.metadata({key: "1", "path": "a.jpg"}, limits)
    assert validation.metadata({"path": "a.jpg", "dedup_ok": "1"}, limits) == {"path": "a.jpg", "dedup_ok": "1"}
    assert public_metadata({"path": "a.jpg", WIDTH_KEY: "3", LAYOUT_KEY: "x"}) == {"path": "a.jpg"}


def test_keep_policy_and_min_group_size_validation() -> None:
    assert validation.keep_policy(0) is KeepPolicy.DEFAULT
    assert validation.keep_policy(2) is KeepPolicy.ORIGINAL_FORMAT
    with pytest.raises(InvalidRequest, match="keep 9 is not one of"):
        validation.keep_policy(9)
    assert [validation.min_group_size(v) for v in (0, 1, 2, 7)] == [2, 2, 2, 7]


UUID = "7d444840-9dc0-11d1-b245-5ffdce74fad2"


@pytest.mark.parametrize(
    "name", ["my-photos", UUID, "tenant-42", "photos.2026", "a", "x" * 255, "A_b-c.d", "default", "t_" + "9" * 126]
)
def test_collection_names_users_use_are_accepted(name: str) -> None:
    assert validation.collection_name(name, "default") == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../etc", id="parent"), pytest.param("..", id="dotdot"), pytest.param(".", id="dot"),
        pytest.param("a/b", id="slash"), pytest.param("a\\b", id="backslash"), pytest.param("a..b", id="inner-dotdot"),
        pytest.param("x" * 256, id="too-long"), pytest.param("bad name", id="space"),
        pytest.param("colecci\u00f3n", id="non-ascii"), pytest.param("tab\t", id="control"),
    ],
)
def test_path_like_and_other_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRequest, match="collection name .* is invalid: use 1-255"):
        validation.collection_name(name, "default")


def test_empty_name_is_the_default() -> None:
    assert validation.collection_name("", "default") == "default"


MILVUS_SAFE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


@pytest.mark.parametrize("prefix", ["dedup_", "", "t_"])
def test_milvus_names_are_safe_distinct_and_the_old_scheme_is_unchanged(prefix: str) -> None:
    for legacy in ("default", "quality_base", "t_test_x_123", "A" * 128):
        assert milvus_collection_name(prefix, legacy) == prefix + legacy  # collections made before keep working
    names = ["my-photos", "my_photos", "my.photos", UUID, "tenant-42", "photos.2026", "x" * 255, "x" * 254 + "y",
             "9lives", "A" * 129, "-", "_"]
    mapped = [milvus_collection_name(prefix, n) for n in names]
    assert len(set(mapped)) == len(names)  # my-photos, my_photos and my.photos stay apart
    for name, milvus_name in zip(names, mapped, strict=True):
        if prefix or not name[0].isdigit():
            assert MILVUS_SAFE.match(milvus_name), (name, milvus_name)
        if not LEGACY_COLLECTION_NAME.match(name):
            assert re.search(r"__[0-9a-f]{16}$", milvus_name), milvus_name  # hashed (opening checks the recorded name)
    assert milvus_collection_name("dedup_", "my-photos").startswith("dedup_my_photos__")
    assert MILVUS_SAFE.match(milvus_collection_name("", "9lives-x"))  # starts with a letter or "_"
