"""Image bytes -> the model's uint8 RGB tensor (H x W x 3). Pure: no I/O, no gRPC, no globals.

The same function serves indexing and queries, so a copy and its original always go through
identical preprocessing (resize straight to the model size, no centre crop: a crop would hide
exactly the borders that distinguish near-duplicates from look-alikes).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import framing
from .errors import InvalidImage

#: Pillow format names we accept. PPM covers the Netpbm family (ppm, pgm, pbm); MPO is a
#: multi-picture JPEG (what many phone cameras write).
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecodeLimits:
    max_bytes: int = 32 * 1024 * 1024
    # Checked on the declared size before decoding; below Pillow's own bomb limit (~89 Mpx),
    # so that check (a warning, then an error) never decides for us.
    max_pixels: int = 50_000_000
    size: int = 224  # the model input is size x size


@dataclasses.dataclass(frozen=True, slots=True)
class Decoded:
    pixels: np.ndarray  # uint8 [size, size, 3]: the model input
    thumbnail: np.ndarray  # uint8 [h, w] grey, longest side at most the requested side: local features' input
    # The photo inside a frame (framing.py), when asked for and found: its model input, uint8 [size, size, 3], and
    # its part of the thumbnail (local features of the photo alone, without the frame's).
    framed: np.ndarray | None = None
    framed_thumbnail: np.ndarray | None = None


def decode_image(data: bytes, limits: DecodeLimits, *, grey: bool = False) -> np.ndarray:
    """The model input alone (see decode_with_thumbnail)."""
    return _decode(data, limits, grey=grey, thumbnail_side=0).pixels


def decode_with_thumbnail(
    data: bytes, limits: DecodeLimits, *, grey: bool = False, thumbnail_side: int, framed: bool = False
) -> Decoded:
    """The model input and a grey thumbnail (aspect kept, longest side at most ``thumbnail_side``), from one decode.

    The thumbnail is made from the same drafted, oriented and flattened image as the model input, so a stored
    image's signature and a query's features go through identical preprocessing. ``framed``: also the model input
    of the photo inside a frame, when the thumbnail shows one (framing.py), cropped from the decoded image.
    """
    return _decode(data, limits, grey=grey, thumbnail_side=thumbnail_side, framed=framed)


def _decode(data: bytes, limits: DecodeLimits, *, grey: bool, thumbnail_side: int, framed: bool = False) -> Decoded:
    """Decode, orient, flatten and resize an encoded image; raise InvalidImage with the reason.

    ``grey``: the model reads only luminance (ModelInfo.input_colour "luma"), so a colour JPEG is decoded to its
    luma channel alone, Y = BT.601 luma, and resized in one channel; the result is still H x W x 3 (three equal
    channels). Other formats decode in colour as always: the model takes their luma itself.
    """
    if not data:
        raise InvalidImage("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise InvalidImage(f"image is {len(data)} bytes, over the limit of {limits.max_bytes} bytes")
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check of the declared size: an error above ~179 Mpx, a warning above ~89 Mpx
        # (an exception too where warnings are errors, as in the tests). Ours, lower, decides otherwise.
        raise InvalidImage(f"image declares too many pixels, over the limit of {limits.max_pixels}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(
            f"not a recognised image (accepted formats: {', '.join(sorted(ACCEPTED_FORMATS))})"
        ) from exc
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise InvalidImage(f"unreadable image header: {exc}") from exc
    with image:
        if image.format not in ACCEPTED_FORMATS:
            raise InvalidImage(f"image format {image.format} is not accepted")
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidImage(f"image declares an empty size {width}x{height}")
        if width * height > limits.max_pixels:
            raise InvalidImage(
                f"image declares {width}x{height} = {width * height} pixels, "
                f"over the limit of {limits.max_pixels} pixels"
            )
        try:
            return _to_model_input(image, limits.size, grey=grey, thumbnail_side=thumbnail_side, framed=framed)
        except InvalidImage:
            raise
        except Exception as exc:  # truncated data, bad chunks, decoder errors, bombs
            raise InvalidImage(f"corrupt or truncated {image.format} image: {exc}") from exc


def _to_model_input(image: Image.Image, size: int, *, grey: bool, thumbnail_side: int, framed: bool) -> Decoded:
    if image.format in ("JPEG", "MPO"):
        # Decode at 1/2, 1/4 or 1/8 scale when the result still covers the model size: 2-3x faster. In grey, the
        # decoder skips the chroma and the resize runs on one channel: 2.0 -> 1.3 ms for a 640x480 photo.
        image.draft("L" if grey else "RGB", (size, size))
    image.seek(0)  # animated GIF/WebP/MPO: the first frame
    image.load()
    image = ImageOps.exif_transpose(image)
    array = np.asarray(_to_rgb_at(image, (size, size)), dtype=np.uint8)
    if array.shape != (size, size, 3):
        raise InvalidImage(f"decoded to an unexpected shape {array.shape}")
    if thumbnail_side <= 0:
        return Decoded(pixels=array, thumbnail=np.zeros((0, 0), dtype=np.uint8))
    width, height = image.size
    scale = min(1.0, thumbnail_side / max(width, height))
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    thumbnail = np.asarray(_to_rgb_at(image, target).convert("L"), dtype=np.uint8)
    box = framing.photo_box(thumbnail) if framed else None
    if box is None:
        return Decoded(pixels=array, thumbnail=thumbnail)
    inner = box.scaled(width / target[0], height / target[1], width, height)
    photo = image.crop((inner.left, inner.top, inner.left + inner.width, inner.top + inner.height))
    return Decoded(pixels=array, thumbnail=thumbnail,
                   framed=np.asarray(_to_rgb_at(photo, (size, size)), dtype=np.uint8),
                   framed_thumbnail=thumbnail[box.top:box.top + box.height, box.left:box.left + box.width].copy())


def _to_rgb_at(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """RGB at ``target`` (width, height), resizing as early as each mode allows.

    Memory: beside the decoded image itself, a full-size copy is made only where the mode
    cannot be resized as it is (palette, 1-bit, CMYK, ...), so a small file declaring the
    maximum pixel count costs a few hundred MB at most, not gigabytes of float copies.
    """
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit / 32-bit / float greyscale: Pillow's convert('L') clips instead of scaling.
        # The scale comes from the whole image's extrema; the arithmetic runs on the small one.
        high = float(image.getextrema()[1])  # type: ignore[arg-type]  # one band: (low, high) numbers
        top = 65535.0 if mode != "F" and high > 255 else max(high, 1.0)
        values = np.asarray(image.resize(target, Image.Resampling.BILINEAR), dtype=np.float64)
        grey = np.clip(values * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode in ("P", "L", "RGB") and "transparency" in image.info
    )
    if has_alpha:
        # Transparent pixels over white: what a person sees on a page. Pillow resizes RGBA with
        # premultiplied alpha, so resizing before flattening gives the same picture.
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        rgba = rgba.resize(target, Image.Resampling.BILINEAR)
        background = Image.new("RGBA", target, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("RGB", "L"):
        if image.size == target:
            return image.convert("RGB")
        return image.resize(target, Image.Resampling.BILINEAR).convert("RGB")
    # Palette and 1-bit images resize only by nearest neighbour, CMYK converts non-linearly:
    # convert first, then resize.
    return image.convert("RGB").resize(target, Image.Resampling.BILINEAR)
