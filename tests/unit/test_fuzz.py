"""Property-based fuzzing (hypothesis) of the decoder and of request validation.

Properties: whatever the bytes, decode_image returns the model's 224x224x3 uint8 array or raises
InvalidImage (never another exception, never hangs: each example has a deadline); whatever the field
values, validation returns a value within the documented bounds or raises InvalidRequest.

`make test` runs the quick, deterministic "ci" profile; `make fuzz` runs the "fuzz" profile
(random, many more examples; DEDUP_FUZZ_EXAMPLES sets how many).
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import zlib

import numpy as np
import pytest
from dedup_server import validation
from dedup_server.config import Limits
from dedup_server.decode import DecodeLimits, decode_image
from dedup_server.errors import InvalidImage, InvalidRequest
from dedup_server.index import COLLECTION_NAME
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import encode
from tests.images import animated, png_16_bit_rgb, png_chunk

settings.register_profile(
    "ci", max_examples=120, deadline=3000, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("DEDUP_FUZZ_EXAMPLES", "5000")), deadline=10_000,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("DEDUP_FUZZ_PROFILE", "ci"))

# Small limits keep each example fast: accepted images are at most 1 Mpx.
LIMITS = DecodeLimits(max_bytes=1 << 20, max_pixels=1_000_000)
REQUEST_LIMITS = Limits()


def _seeds() -> dict[str, bytes]:
    picture = Image.effect_noise((48, 32), 80).convert("RGB")
    seeds = {fmt.lower(): encode(picture, fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "PPM")}
    seeds["png-rgba"] = encode(picture.convert("RGBA"), "PNG")
    seeds["png-16-bit"] = png_16_bit_rgb(picture)
    seeds["png-palette"] = encode(picture.quantize(16), "PNG", transparency=0)
    seeds["gif-animated"] = animated("GIF")
    seeds["webp-animated"] = animated("WEBP")
    seeds["jpeg-progressive"] = encode(picture, "JPEG", progressive=True)
    seeds["tiff-deflate"] = encode(picture, "TIFF", compression="tiff_adobe_deflate")
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", exif=exif.tobytes())
    seeds["jpeg-exif"] = buffer.getvalue()
    return seeds


SEEDS = _seeds()


def _check_decode(data: bytes) -> None:
    try:
        pixels = decode_image(data, LIMITS)
    except InvalidImage as exc:
        assert str(exc)  # a reason, always
        return
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid image of some format with a few bytes flipped, set, inserted, deleted or cut off."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1)) if data else 0
        operation = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat"]))
        if not data:
            break
        if operation == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set":
            data[at] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif operation == "truncate":
            del data[at:]
        else:  # a run repeated: confuses length fields and chunk walkers
            data[at:at] = data[at:at + 8] * draw(st.integers(1, 4))
    return bytes(data)


@given(st.binary(max_size=2048))
def test_decode_arbitrary_bytes(data: bytes) -> None:
    _check_decode(data)


@given(st.sampled_from(sorted(SEEDS)).flatmap(lambda name: st.binary(max_size=64).map(
    lambda tail: SEEDS[name][: max(8, len(SEEDS[name]) // 4)] + tail)))
def test_decode_valid_header_then_garbage(data: bytes) -> None:
    _check_decode(data)


@given(mutated_images())
def test_decode_mutated_images(data: bytes) -> None:
    _check_decode(data)


@given(
    width=st.integers(0, 2**31 - 1) | st.integers(1, 2048),
    height=st.integers(0, 2**31 - 1) | st.integers(1, 2048),
    bit_depth=st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]),
    colour_type=st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
    interlace=st.sampled_from([0, 1, 2]),
    payload=st.binary(max_size=256),
)
def test_decode_png_with_any_header(
    width: int, height: int, bit_depth: int, colour_type: int, interlace: int, payload: bytes
) -> None:
    """Declared sizes up to 2^31 on each side with little or no data behind them: refused or decoded, fast."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)
    palette = png_chunk(b"PLTE", bytes(range(48))) if colour_type == 3 else b""
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + palette
            + png_chunk(b"IDAT", zlib.compress(payload)) + png_chunk(b"IEND", b""))
    _check_decode(data)
    if width * height > LIMITS.max_pixels:
        with pytest.raises(InvalidImage):
            decode_image(data, LIMITS)


# -- request validation -------------------------------------------------------------------------

# Protobuf strings are valid UTF-8: no lone surrogates.
proto_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=700)


@given(value=proto_text, required=st.booleans())
def test_image_id(value: str, required: bool) -> None:
    try:
        result = validation.image_id(value, REQUEST_LIMITS, required=required)
    except InvalidRequest as exc:
        assert "id" in str(exc)
        return
    assert result == value
    assert len(value.encode("utf-8")) <= REQUEST_LIMITS.max_id_bytes
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in value)
    assert value or not required


@given(st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_threshold(value: float) -> None:
    try:
        result = validation.threshold(value, 0.8)
    except InvalidRequest as exc:
        assert "threshold" in str(exc)
        assert math.isnan(value) or not 0 <= value <= 1
        return
    assert 0 < result <= 1 and (result == value or value == 0)


@given(st.integers(0, 2**32 - 1))
def test_top_k(value: int) -> None:
    try:
        result = validation.top_k(value, 10, REQUEST_LIMITS)
    except InvalidRequest as exc:
        assert "top_k" in str(exc) and value > REQUEST_LIMITS.max_top_k
        return
    assert 1 <= result <= REQUEST_LIMITS.max_top_k


@given(proto_text)
def test_collection_name(value: str) -> None:
    try:
        result = validation.collection_name(value, "default")
    except InvalidRequest as exc:
        assert "collection name" in str(exc)
        assert value and not COLLECTION_NAME.match(value)
        return
    assert COLLECTION_NAME.match(result)


@given(st.dictionaries(proto_text, proto_text | st.text(max_size=20_000, alphabet="ab\u00e9"), max_size=8))
def test_metadata(value: dict[str, str]) -> None:
    try:
        result = validation.metadata(value, REQUEST_LIMITS)
    except InvalidRequest as exc:
        assert "metadata" in str(exc)
        return
    assert result == value
    assert len(json.dumps(result, ensure_ascii=False).encode("utf-8")) <= REQUEST_LIMITS.max_metadata_bytes


def test_every_seed_is_a_valid_image() -> None:
    """The mutations start from images that decode, so what they find is about the mutation."""
    for name, data in SEEDS.items():
        assert decode_image(data, LIMITS).shape == (224, 224, 3), name
