"""Hostile input through the real gRPC API (real Triton, real Milvus): every bad image or field gets a
clear INVALID_ARGUMENT (per-item INVALID in a stream) naming what is wrong, the stream goes on, and
nothing is written for it. Limits (message size, pixels, stream length, concurrent RPCs) on a second
front with tight limits."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from dedup_client import DedupClient, DedupError, IndexItem, IndexStatus
from dedup_server.config import Limits, ServerConfig
from PIL import Image

from tests.conftest import encode
from tests.images import (
    animated,
    cmyk_jpeg,
    exif_rotated_jpeg,
    flip_byte,
    gif_declaring,
    noise,
    palette_with_transparency,
    png_16_bit_rgb,
    png_declaring,
    raw_png,
)
from tests.integration.conftest import FrontThread

pytestmark = pytest.mark.integration

PHOTO = "base_images/ukbench00120.jpg"

# Bytes that are not an image we accept, and the words the error must contain.
BAD_IMAGES = [
    pytest.param(b"", "empty", id="empty"),
    pytest.param(b"just some text, not an image", "not a recognised image", id="text"),
    pytest.param(b"https://example.com/cat.jpg", "not a recognised image", id="url-never-fetched"),
    pytest.param(noise("JPEG")[:-40], "corrupt or truncated JPEG", id="jpeg-truncated"),
    pytest.param(noise("JPEG")[:200], "unreadable image header", id="jpeg-header-only"),
    pytest.param(noise("PNG")[:300], "corrupt or truncated PNG", id="png-truncated"),
    pytest.param(flip_byte(noise("PNG"), 200), "corrupt or truncated PNG", id="png-corrupt"),
    pytest.param(png_declaring(30_000, 30_000), "too many pixels", id="png-30kx30k-bomb"),
    pytest.param(png_declaring(10_000, 10_000), "too many pixels", id="png-10kx10k-bomb"),
    pytest.param(png_declaring(8_000, 8_000), "64000000 pixels, over the limit", id="png-over-max-pixels"),
    pytest.param(gif_declaring(65_535, 65_535), "too many pixels", id="gif-bomb"),
    pytest.param(encode(Image.new("RGB", (16, 16)), "ICO"), "format ICO is not accepted", id="ico"),
]

# Field values the service refuses (on a CheckDuplicate that would insert), and the words the error must contain.
BAD_FIELDS = [
    pytest.param({"threshold": 1.5}, "threshold must be in (0, 1]", id="threshold-over-1"),
    pytest.param({"threshold": -0.1}, "threshold must be in (0, 1]", id="threshold-negative"),
    pytest.param({"threshold": float("nan")}, "threshold", id="threshold-nan"),
    pytest.param({"top_k": 1000}, "top_k must be 1..100", id="top-k-over-max"),
    pytest.param({"top_k": 2**32 - 1}, "top_k must be 1..100", id="top-k-max-uint32"),
    pytest.param({"id": ""}, "id is required", id="id-missing"),
    pytest.param({"id": "x" * 513}, "513 bytes long, over the limit of 512", id="id-too-long"),
    pytest.param({"id": "\u00e9" * 300}, "600 bytes long", id="id-too-long-in-utf8"),
    pytest.param({"id": "a\x00b"}, "control characters", id="id-nul"),
    pytest.param({"id": "line\nbreak"}, "control characters", id="id-newline"),
    pytest.param({"id": "del\x7f"}, "control characters", id="id-del"),
    pytest.param({"collection": "bad name!"}, "collection name 'bad name!' is invalid", id="collection-bad-chars"),
    pytest.param({"collection": "c" * 256}, "is invalid: use 1-255", id="collection-too-long"),
    pytest.param({"collection": "../other"}, "is invalid", id="collection-path-like"),
    pytest.param({"collection": "colecci\u00f3n"}, "is invalid", id="collection-non-ascii"),
    pytest.param({"metadata": {"k": "v" * 20_000}}, "metadata is", id="metadata-too-large"),
]


@pytest.fixture(scope="module")
def photo(eval_dir: Path) -> Image.Image:
    with Image.open(eval_dir / PHOTO) as opened:
        return opened.convert("RGB")


@pytest.fixture(scope="module")
def guarded(client: DedupClient, eval_dir: Path) -> str:
    """A collection holding one photo; every bad request below is aimed at it and must leave it so."""
    name = "bad_input_guarded"
    results = list(client.index([IndexItem(id="photo", image=(eval_dir / PHOTO).read_bytes(), collection=name)]))
    assert results[0].status is IndexStatus.INDEXED
    return name


def _count(client: DedupClient, collection: str) -> int:
    return client.stats(collection=collection).collections[0].image_count


@pytest.mark.parametrize(("image", "reason"), BAD_IMAGES)
def test_bad_image_is_invalid_argument_and_nothing_is_written(
    client: DedupClient, guarded: str, image: bytes, reason: str
) -> None:
    with pytest.raises(DedupError) as caught:
        client.check(image, collection=guarded, insert_if_unique=True, id="bad")
    assert caught.value.code == "INVALID_ARGUMENT" and reason in caught.value.details
    assert _count(client, guarded) == 1


@pytest.mark.parametrize(("fields", "reason"), BAD_FIELDS)
def test_bad_field_is_invalid_argument_and_nothing_is_written(
    client: DedupClient, guarded: str, eval_dir: Path, fields: dict, reason: str
) -> None:
    request = {"collection": guarded, "insert_if_unique": True, "id": "new"} | fields
    with pytest.raises(DedupError) as caught:
        client.check((eval_dir / "base_images/ukbench09380.jpg").read_bytes(), **request)
    assert caught.value.code == "INVALID_ARGUMENT" and reason in caught.value.details
    assert _count(client, guarded) == 1


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c, image: c.check(image, collection="never_created_here"), id="check"),
        pytest.param(lambda c, image: c.delete(["x"], collection="never_created_here"), id="delete"),
        pytest.param(lambda c, image: c.stats(collection="never_created_here"), id="stats"),
    ],
)
def test_unknown_collection_is_not_found(client: DedupClient, eval_dir: Path, call) -> None:
    """Only writes create a collection (IndexStream, CheckDuplicate with insert_if_unique); reads do not."""
    with pytest.raises(DedupError) as caught:
        call(client, (eval_dir / PHOTO).read_bytes())
    assert caught.value.code == "NOT_FOUND" and "'never_created_here' does not exist" in caught.value.details
    assert "never_created_here" not in {c.name for c in client.stats().collections}


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(cmyk_jpeg, id="cmyk-jpeg"),
        pytest.param(exif_rotated_jpeg, id="exif-rotated-jpeg"),
        pytest.param(png_16_bit_rgb, id="png-16-bit"),
        pytest.param(palette_with_transparency, id="png-palette-transparency"),
        pytest.param(lambda image: animated("GIF", [image, Image.new("RGB", image.size)]), id="animated-gif"),
        pytest.param(lambda image: animated("WEBP", [image, Image.new("RGB", image.size)]), id="animated-webp"),
    ],
)
def test_the_photo_in_an_unusual_container_is_its_duplicate(
    client: DedupClient, guarded: str, photo: Image.Image, variant
) -> None:
    result = client.check(variant(photo), collection=guarded)
    assert result.is_duplicate and result.matches[0].id == "photo", result.matches


def test_stream_reports_each_bad_item_goes_on_and_writes_only_good_ones(
    client: DedupClient, eval_dir: Path, collection: str
) -> None:
    photos = sorted((eval_dir / "base_images").glob("*.jpg"))[:3]
    items = [IndexItem(id=p.name, image=p.read_bytes(), collection=collection) for p in photos]
    expected: dict[str, str] = {}
    for n, param in enumerate(BAD_IMAGES):
        image, reason = param.values
        items.insert(n % 4, IndexItem(id=f"image-{param.id}", image=image, collection=collection))
        expected[f"image-{param.id}"] = reason
    good_image = photos[0].read_bytes()
    for field_name, value, item_id, reason in (
        ("threshold", 2.0, "field-threshold", "threshold"),
        ("metadata", {"k": "v" * 20_000}, "field-metadata", "metadata is"),
        ("collection", "bad name!", "field-collection", "collection name"),
        ("id", "x" * 600, None, "over the limit of 512"),
        ("id", "tab\there", None, "control characters"),
    ):
        item = dataclasses.replace(IndexItem(id=item_id or "", image=good_image, collection=collection),
                                   **{field_name: value})
        items.insert(2, item)
        expected[item.id] = reason
    results = list(client.index(items))
    assert len(results) == len(items)  # one answer per item: the stream went on
    by_id = {r.id: r for r in results}
    for item_id, reason in expected.items():
        assert by_id[item_id].status is IndexStatus.INVALID and reason in by_id[item_id].error, by_id[item_id]
    assert {by_id[p.name].status for p in photos} == {IndexStatus.INDEXED}
    assert _count(client, collection) == len(photos)  # nothing written for the bad items


# -- a front with tight limits --------------------------------------------------------------------

TIGHT = Limits(
    max_message_bytes=1024 * 1024, max_image_bytes=256 * 1024, max_pixels=4_000_000, max_stream_items=5,
    max_concurrent_rpcs=3,
)


@pytest.fixture(scope="module")
def tight(front_config: ServerConfig) -> Iterator[DedupClient]:
    thread = FrontThread(dataclasses.replace(front_config, limits=TIGHT))
    thread.start()
    with DedupClient(f"127.0.0.1:{thread.port}", timeout=60) as dedup:
        yield dedup
    thread.stop()


@pytest.mark.parametrize(
    ("image", "code", "reason"),
    [
        pytest.param(noise("PNG", (400, 300)), "INVALID_ARGUMENT", "bytes, over the limit of 262144 bytes",
                     id="over-max-image-bytes"),
        pytest.param(noise("PNG", (1000, 800)), "RESOURCE_EXHAUSTED", "larger than max", id="over-max-message"),
        pytest.param(raw_png(2500, 2000, bit_depth=8, colour_type=0, channels=1), "INVALID_ARGUMENT",
                     "5000000 pixels, over the limit of 4000000 pixels", id="over-max-pixels"),
    ],
)
def test_limits_are_enforced_and_named(tight: DedupClient, image: bytes, code: str, reason: str) -> None:
    with pytest.raises(DedupError) as caught:
        tight.check(image, collection="tight_limits", insert_if_unique=True, id="big")
    assert caught.value.code == code and reason in caught.value.details, caught.value


def _photo_items(eval_dir: Path, collection: str, count: int) -> list[IndexItem]:
    photos = sorted((eval_dir / "base_images").glob("*.jpg"))[:count]
    return [IndexItem(id=p.name, image=p.read_bytes(), collection=collection) for p in photos]


def test_stream_over_max_items_answers_every_item_read_then_ends(
    tight: DedupClient, eval_dir: Path, collection: str
) -> None:
    answered = []
    with pytest.raises(DedupError) as caught:
        for result in tight.index(_photo_items(eval_dir, collection, 7)):
            answered.append(result)
    assert caught.value.code == "RESOURCE_EXHAUSTED" and "at most 5 items" in caught.value.details
    assert len(answered) == 5 and {r.status for r in answered} == {IndexStatus.INDEXED}
    assert _count(tight, collection) == 5  # every acknowledged item is stored, nothing past the limit
    # The client's own chunking keeps each stream under the server's limit.
    results = list(tight.index(_photo_items(eval_dir, collection, 7), items_per_stream=5))
    assert len(results) == 7 and _count(tight, collection) == 7


def test_oversize_message_ends_the_stream_and_loses_no_acknowledged_item(
    tight: DedupClient, eval_dir: Path, collection: str
) -> None:
    items = _photo_items(eval_dir, collection, 2)
    items.append(IndexItem(id="huge", image=noise("PNG", (1000, 800)), collection=collection))
    items += _photo_items(eval_dir, collection, 4)[2:]
    answered = []
    with pytest.raises(DedupError) as caught:
        for result in tight.index(items):
            answered.append(result)
    assert caught.value.code == "RESOURCE_EXHAUSTED" and "larger than max" in caught.value.details
    assert all(r.status is IndexStatus.INDEXED for r in answered)
    try:
        stored = _count(tight, collection)
    except DedupError as exc:  # nothing reached the write stage before the stream was cut
        assert exc.code == "NOT_FOUND"
        stored = 0
    assert len(answered) <= stored <= 2  # every acknowledged item is stored; nothing after the huge one


def test_concurrent_rpc_limit_answers_resource_exhausted(tight: DedupClient, eval_dir: Path, collection: str) -> None:
    release = threading.Event()
    answered = [threading.Event() for _ in range(TIGHT.max_concurrent_rpcs)]
    image = (eval_dir / PHOTO).read_bytes()

    def held_open_stream(n: int) -> None:
        def items() -> Iterator[IndexItem]:
            yield IndexItem(id=f"held{n}", image=image, collection=collection)
            release.wait(60)  # the stream stays open until the test is done

        for _ in tight.index(items()):
            answered[n].set()

    threads = [threading.Thread(target=held_open_stream, args=(n,)) for n in range(TIGHT.max_concurrent_rpcs)]
    for thread in threads:
        thread.start()
    try:
        assert all(event.wait(60) for event in answered)
        with pytest.raises(DedupError) as caught:
            tight.stats()
        assert caught.value.code == "RESOURCE_EXHAUSTED" and "concurrent rpc limit" in caught.value.details.lower()
    finally:
        release.set()
        for thread in threads:
            thread.join(60)
    assert _count(tight, collection) == TIGHT.max_concurrent_rpcs  # each held stream's item, under its own id
