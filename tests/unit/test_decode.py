from __future__ import annotations

import io
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from dedup_server.decode import DecodeLimits, decode_image
from dedup_server.errors import InvalidImage
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
    png_chunk,
    png_declaring,
    raw_png,
)

LIMITS = DecodeLimits()


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
        pytest.param(png_declaring(40_000, 40_000), "over the limit", id="bomb-declared-size"),
        pytest.param(png_declaring(30_000, 30_000), "too many pixels", id="png-30kx30k"),
        # Between Pillow's warning (~89 Mpx) and error (~179 Mpx) limits: still refused with the same reason.
        pytest.param(png_declaring(10_000, 10_000), "too many pixels", id="png-10kx10k-pillow-warning-zone"),
        pytest.param(png_declaring(1, 100_000_000), "too many pixels", id="png-1x100M-line"),
        pytest.param(png_declaring(8_000, 8_000), "8000x8000 = 64000000 pixels, over the limit", id="png-over-ours"),
        pytest.param(gif_declaring(65_535, 65_535), "too many pixels", id="gif-64kx64k"),
        pytest.param(png_declaring(0, 0), "not a recognised image", id="png-0x0"),
        pytest.param(noise("PNG")[:300], "corrupt or truncated PNG", id="png-truncated"),
        pytest.param(noise("JPEG")[:-40], "corrupt or truncated JPEG", id="jpeg-truncated-end"),
        pytest.param(noise("JPEG")[:200], "unreadable image header", id="jpeg-header-only"),
        pytest.param(flip_byte(noise("PNG"), 200), "corrupt or truncated PNG", id="png-corrupt-idat"),
        pytest.param(flip_byte(noise("PNG"), 20), "not a recognised image", id="png-corrupt-ihdr-crc"),
        pytest.param(b"\xff\xd8\xff" + bytes(64), "not a recognised image", id="jpeg-magic-only"),
        pytest.param(b"https://example.com/cat.jpg", "not a recognised image", id="url-is-never-fetched"),
        pytest.param(
            b'<svg xmlns="http://www.w3.org/2000/svg"><image href="http://example.com/x.png"/></svg>',
            "not a recognised image", id="svg-with-link",
        ),
        pytest.param(b"%PDF-1.4\n1 0 obj<<>>endobj\n", "not a recognised image", id="pdf"),
        pytest.param(encode(Image.new("RGB", (16, 16)), "ICO"), "format ICO is not accepted", id="ico"),
        pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "format EPS is not accepted", id="eps"),
    ],
)
def test_bad_bytes_are_rejected_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidImage, match=reason):
        decode_image(data, LIMITS)


def test_bombs_are_refused_from_the_header_without_allocating() -> None:
    bomb = png_declaring(30_000, 30_000)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidImage, match="too many pixels"):
            decode_image(bomb, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # the 2.7 GB of pixels were never allocated


def test_large_sixteen_bit_image_is_scaled_after_resizing() -> None:
    """Float copies are made of the 224x224 result, not of the 12 Mpx image (96 MB each before)."""
    data = raw_png(4000, 3000, bit_depth=16, colour_type=0, channels=1)
    tracemalloc.start()
    try:
        pixels = decode_image(data, LIMITS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pixels.shape == (224, 224, 3) and peak < 5_000_000


@pytest.mark.parametrize(
    ("data", "rgb"),
    [
        # Saved directly: tests.conftest.encode would convert CMYK to RGB first.
        pytest.param(Image.new("CMYK", (50, 50), (0, 255, 255, 0)), (255, 0, 0), id="cmyk-jpeg"),
        pytest.param(raw_png(32, 16, bit_depth=16, colour_type=2, channels=3,
                              row=b"\xff\xff\x00\x00\x80\x00" * 32), (255, 0, 128), id="png-16-bit-rgb"),
        pytest.param(raw_png(32, 16, bit_depth=16, colour_type=6, channels=4,
                              row=b"\x00\x00\xff\xff\x00\x00\x00\x00" * 32), (255, 255, 255),
                     id="png-16-bit-rgba-transparent"),
        pytest.param(raw_png(32, 16, bit_depth=8, colour_type=3, channels=1,
                              extra=png_chunk(b"PLTE", bytes((0, 0, 0, 0, 255, 0))) + png_chunk(b"tRNS", b"\x00")),
                     (255, 255, 255), id="png-palette-transparent-index"),
        pytest.param(raw_png(32, 16, bit_depth=8, colour_type=3, channels=1, row=b"\x01" * 32,
                              extra=png_chunk(b"PLTE", bytes((0, 0, 0, 0, 255, 0))) + png_chunk(b"tRNS", b"\x00")),
                     (0, 255, 0), id="png-palette-opaque-index"),
        pytest.param(animated("GIF"), (255, 0, 0), id="gif-animated-first-frame"),
        pytest.param(animated("WEBP"), (255, 0, 0), id="webp-animated-first-frame"),
        pytest.param(animated("PNG"), (255, 0, 0), id="apng-first-frame"),
        pytest.param(encode(Image.new("LA", (20, 20), (0, 0)), "PNG"), (255, 255, 255), id="grey-alpha-transparent"),
        pytest.param(encode(Image.new("1", (20, 20), 1), "PNG"), (255, 255, 255), id="one-bit"),
        pytest.param(encode(Image.new("RGBA", (20, 20), (0, 0, 0, 0)), "WEBP"), (255, 255, 255), id="webp-alpha"),
        pytest.param(encode(Image.new("CMYK", (20, 20), (0, 0, 0, 255)), "TIFF"), (0, 0, 0), id="cmyk-tiff"),
    ],
)
def test_unusual_but_valid_images_decode_to_what_a_person_sees(data: bytes | Image.Image, rgb: tuple[int, ...]) -> None:
    if isinstance(data, Image.Image):
        buffer = io.BytesIO()
        data.save(buffer, format="JPEG")
        assert Image.open(io.BytesIO(buffer.getvalue())).mode == "CMYK"
        data = buffer.getvalue()
    pixels = decode_image(data, LIMITS)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert np.abs(pixels.reshape(-1, 3).mean(axis=0) - rgb).max() < 8, pixels.reshape(-1, 3).mean(axis=0)


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


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(cmyk_jpeg, id="cmyk-jpeg"),
        pytest.param(exif_rotated_jpeg, id="exif-rotated-jpeg"),
        pytest.param(png_16_bit_rgb, id="png-16-bit-rgb"),
        pytest.param(palette_with_transparency, id="png-palette-with-transparency"),
        pytest.param(lambda image: animated("GIF", [image, Image.new("RGB", image.size)]), id="gif-first-frame"),
        pytest.param(lambda image: animated("WEBP", [image, Image.new("RGB", image.size)]), id="webp-first-frame"),
    ],
)
def test_a_photo_stored_differently_decodes_to_the_same_pixels(eval_dir: Path, variant) -> None:
    with Image.open(eval_dir / "base_images/ukbench00120.jpg") as opened:
        photo = opened.convert("RGB")
    reference = decode_image(encode(photo, "PNG"), LIMITS).astype(float)
    assert np.abs(decode_image(variant(photo), LIMITS) - reference).mean() < 4


LUMA = np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize(
    "name",
    ["base_images/ukbench00120.jpg", "base_images/ukbench09268.jpg", "formats_images/ukbench09380.jpeg"],
)
def test_grey_jpeg_decode_is_the_colour_decode_s_luma(eval_dir: Path, name: str) -> None:
    # For a model that reads only luma: the JPEG's own Y channel, three equal channels, oriented like colour.
    data = (eval_dir / name).read_bytes()
    grey = decode_image(data, LIMITS, grey=True)
    colour = decode_image(data, LIMITS)
    assert grey.shape == (224, 224, 3) and grey.dtype == np.uint8
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    difference = np.abs(grey[..., 0].astype(float) - colour.astype(float) @ LUMA)
    assert difference.mean() < 1.5 and np.percentile(difference, 99) < 6  # rounding and chroma clipping only


def test_grey_applies_to_jpegs_only() -> None:
    # Other formats decode in colour as always (the model takes their luma itself); JPEGs, CMYK ones included,
    # come out as their luma.
    red = Image.new("RGB", (64, 64), (255, 0, 0))
    assert decode_image(encode(red, "PNG"), LIMITS, grey=True)[..., 0].min() == 255
    for image in (red, Image.new("CMYK", (50, 50), (0, 255, 255, 0))):
        pixels = decode_image(encode(image, "JPEG"), LIMITS, grey=True)
        assert abs(float(pixels.mean()) - 0.299 * 255) < 3 and pixels.std() < 1
