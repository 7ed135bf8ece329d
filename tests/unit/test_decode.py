from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from dedup_server.decode import DecodeLimits, decode_image
from dedup_server.errors import InvalidImage
from PIL import Image

from tests.conftest import encode

LIMITS = DecodeLimits()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a huge size but carries (almost) no pixels: a decompression bomb probe."""
    real = encode(Image.new("RGB", (8, 8)), "PNG")
    ihdr = b"IHDR" + struct.pack(">II", width, height) + real[24:29]  # keep depth, colour type, ...
    return real[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + real[33:]


@pytest.mark.parametrize(
    "name",
    [
        "base_images/ukbench00120.jpg",
        "formats_images/ukbench09380.bmp",
        "formats_images/ukbench09380.webp",
        "formats_images/ukbench09380.png",
        "formats_images/copyleft.tiff",
        "formats_images/giphy.gif",
        "formats_images/baboon.pgm",
        "formats_images/marbles.pbm",
        "alpha_channel_image.png",
    ],
)
def test_real_formats_decode_to_model_input(eval_dir: Path, name: str) -> None:
    pixels = decode_image((eval_dir / name).read_bytes(), LIMITS)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert pixels.std() > 1  # an actual picture, not a blank


def test_same_photo_in_different_containers_decodes_alike(eval_dir: Path) -> None:
    jpeg = decode_image((eval_dir / "formats_images/ukbench09380.jpeg").read_bytes(), LIMITS).astype(float)
    png = decode_image((eval_dir / "formats_images/ukbench09380.png").read_bytes(), LIMITS).astype(float)
    assert np.abs(jpeg - png).mean() < 6


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"", "empty", id="empty"),
        pytest.param(b"hello, this is text", "not a recognised image", id="text"),
        pytest.param(_png_header_only(40_000, 40_000), "over the limit", id="bomb-declared-size"),
    ],
)
def test_bad_bytes_are_rejected_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidImage, match=reason):
        decode_image(data, LIMITS)


def test_corrupt_file_from_eval_set_is_rejected(eval_dir: Path) -> None:
    with pytest.raises(InvalidImage):
        decode_image((eval_dir / "mixed_images/ukbench09268_corrupt.jpg").read_bytes(), LIMITS)


def test_truncated_jpeg_is_rejected(eval_dir: Path) -> None:
    data = (eval_dir / "base_images/ukbench00120.jpg").read_bytes()
    with pytest.raises(InvalidImage, match="corrupt or truncated"):
        decode_image(data[: len(data) // 3], LIMITS)


def test_oversize_bytes_are_rejected_before_decoding() -> None:
    with pytest.raises(InvalidImage, match="bytes, over the limit"):
        decode_image(b"\xff" * 101, DecodeLimits(max_bytes=100))


def test_alpha_is_flattened_over_white() -> None:
    transparent = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    pixels = decode_image(encode(transparent, "PNG"), LIMITS)
    assert pixels.min() == 255


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 150, 100))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display: the white half ends up on top
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    pixels = decode_image(buffer.getvalue(), LIMITS).astype(float)
    assert pixels[:100].mean() > 200 and pixels[124:].mean() < 50


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 256, dtype=np.uint16), (64, 1))
    pixels = decode_image(encode(Image.fromarray(ramp), "PNG"), LIMITS)
    assert pixels[:, 0].mean() < 10 and pixels[:, -1].mean() > 245 and 100 < pixels[:, 112].mean() < 160


def test_cmyk_jpeg_and_palette_decode() -> None:
    cmyk = Image.new("CMYK", (50, 50), (0, 255, 255, 0))  # red
    pixels = decode_image(encode(cmyk, "JPEG"), LIMITS)
    assert pixels[..., 0].mean() > 200 and pixels[..., 1].mean() < 60
    palette = Image.new("P", (50, 50), 3)
    assert decode_image(encode(palette, "GIF"), LIMITS).shape == (224, 224, 3)
