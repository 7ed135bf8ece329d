"""Hostile and unusual image bytes, built by hand where Pillow would refuse to write them."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests.conftest import encode


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG that declares a huge size but carries (almost) no pixels: a decompression bomb probe."""
    real = encode(Image.new("RGB", (8, 8)), "PNG")
    ihdr = b"IHDR" + struct.pack(">II", width, height) + real[24:29]  # keep depth, colour type, ...
    return real[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + real[33:]


def raw_png(width: int, height: int, *, bit_depth: int, colour_type: int, channels: int,
            extra: bytes = b"", row: bytes | None = None, rows: list[bytes] | None = None) -> bytes:
    """A real PNG written by hand (Pillow cannot write e.g. 16-bit RGB); rows of zeros unless given."""
    row = row if row is not None else bytes(width * channels * bit_depth // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(b"\x00" + r) for r in (rows or [row] * height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + extra + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def png_16_bit_rgb(image: Image.Image) -> bytes:
    """The picture as a 16-bit-per-channel RGB PNG."""
    wide = np.asarray(image.convert("RGB"), dtype=np.uint16) * 257
    height, width, _ = wide.shape
    rows = [wide[y].astype(">u2").tobytes() for y in range(height)]
    return raw_png(width, height, bit_depth=16, colour_type=2, channels=3, rows=rows)


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose screen and frame declare width x height, with one pixel of data."""
    screen = b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00"
    frame = b"," + struct.pack("<HHHH", 0, 0, width, height) + b"\x00"
    return screen + frame + b"\x02\x02\x4c\x01\x00;"


def noise(fmt: str, size: tuple[int, int] = (128, 96)) -> bytes:
    return encode(Image.effect_noise(size, 60).convert("RGB"), fmt)


def flip_byte(data: bytes, at: int) -> bytes:
    corrupt = bytearray(data)
    corrupt[at] ^= 0xFF
    return bytes(corrupt)


def animated(fmt: str, frames: list[Image.Image] | None = None) -> bytes:
    """An animated GIF/WebP/PNG; by default a red frame, then a blue one."""
    frames = frames or [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format=fmt, save_all=True, append_images=frames[1:], duration=100)
    return buffer.getvalue()


def cmyk_jpeg(image: Image.Image) -> bytes:
    """A real CMYK JPEG (tests.conftest.encode would convert to RGB first)."""
    buffer = io.BytesIO()
    image.convert("CMYK").save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def exif_rotated_jpeg(image: Image.Image) -> bytes:
    """Pixels stored rotated, with the EXIF orientation that makes a viewer show `image` upright."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buffer = io.BytesIO()
    image.convert("RGB").transpose(Image.Transpose.ROTATE_90).save(
        buffer, format="JPEG", quality=95, exif=exif.tobytes()
    )
    return buffer.getvalue()


def palette_with_transparency(image: Image.Image) -> bytes:
    """The picture quantised to 255 colours plus one transparent index, as PNG."""
    palette = image.convert("RGB").quantize(255)
    return encode(palette, "PNG", transparency=255)
