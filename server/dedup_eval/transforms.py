"""Seeded edits that turn a photo into the copies people re-upload: scaled, cropped, brightened, greyed, re-encoded.

Each transform takes the photo and a numpy Generator (seeded per photo and transform, so every run builds the
same benchmark) and returns encoded bytes, as a client would send them.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Final

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

Transform = Callable[[Image.Image, np.random.Generator], bytes]


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=quality)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def _scale(image: Image.Image, factor: float) -> Image.Image:
    width, height = image.size
    return image.resize((max(16, round(width * factor)), max(16, round(height * factor))), Image.Resampling.LANCZOS)


def _crop(image: Image.Image, keep: float, rng: np.random.Generator) -> Image.Image:
    """Keep ``keep`` of each side, at a random position."""
    width, height = image.size
    crop_w, crop_h = round(width * keep), round(height * keep)
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    return image.crop((left, top, left + crop_w, top + crop_h))


def _border(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A 10 % frame (of each side) in a random flat colour."""
    width, height = image.size
    colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
    return ImageOps.expand(image, border=(width // 10, height // 10, width // 10, height // 10), fill=colour)


def _watermark(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Semi-transparent text across the image plus a corner caption, as stock sites and reposters add."""
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    width, height = base.size
    words = ("SAMPLE", "PREVIEW", "COPYRIGHT", "STOCK PHOTO", "@reposter")
    text = str(words[int(rng.integers(len(words)))])
    font = ImageFont.load_default(size=max(12, height // 8))
    box = draw.textbbox((0, 0), text, font=font)
    x = (width - (box[2] - box[0])) // 2
    text_height = int(box[3] - box[1])
    y = int(rng.integers(height // 4, max(height // 4 + 1, 3 * height // 4 - text_height)))
    draw.text((x, y), text, font=font, fill=(255, 255, 255, 150), stroke_width=2, stroke_fill=(0, 0, 0, 110))
    caption_font = ImageFont.load_default(size=max(10, height // 24))
    draw.text((width // 50, height - height // 15), "(c) 2026 example.com", font=caption_font,
              fill=(255, 255, 255, 220))
    return Image.alpha_composite(base, overlay).convert("RGB")


def _combination(image: Image.Image, rng: np.random.Generator) -> bytes:
    """Crop 80 %, brighten 25 %, downscale to half, JPEG quality 40: a typical repost."""
    edited = ImageEnhance.Brightness(_crop(image, 0.8, rng)).enhance(1.25)
    return encode(_scale(edited, 0.5), quality=40)


TRANSFORMS: Final[dict[str, Transform]] = {
    "scale_25": lambda image, rng: encode(_scale(image, 0.25)),
    "scale_50": lambda image, rng: encode(_scale(image, 0.5)),
    "crop_80": lambda image, rng: encode(_crop(image, 0.8, rng)),
    "crop_65": lambda image, rng: encode(_crop(image, 0.65, rng)),
    "brightness_+40": lambda image, rng: encode(ImageEnhance.Brightness(image).enhance(1.4)),
    "brightness_-40": lambda image, rng: encode(ImageEnhance.Brightness(image).enhance(0.6)),
    "contrast_-50": lambda image, rng: encode(ImageEnhance.Contrast(image).enhance(0.5)),
    "grayscale": lambda image, rng: encode(image.convert("L")),
    "jpeg_q20": lambda image, rng: encode(image, quality=20),
    "rotate_8": lambda image, rng: encode(
        image.rotate(float(rng.choice([-8.0, 8.0])), resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))
    ),
    "border_10": lambda image, rng: encode(_border(image, rng)),
    "watermark": lambda image, rng: encode(_watermark(image, rng)),
    "hflip": lambda image, rng: encode(ImageOps.mirror(image)),
    "png": lambda image, rng: encode(image, "PNG"),
    "combination": _combination,
}

# Transforms whose recall the issue requires to be exactly 1.0.
MUST_FIND: Final = frozenset(
    {"scale_25", "scale_50", "crop_80", "brightness_+40", "brightness_-40", "grayscale"}
)

# What distractors (photos never indexed) are sent as: the photo itself and a few edits of it.
DISTRACTOR_TRANSFORMS: Final = ("original", "scale_50", "crop_80", "grayscale", "jpeg_q20")


def apply(name: str, image: Image.Image, seed: int) -> bytes:
    """One transform by name ("original" = the photo as JPEG q90), seeded."""
    if name == "original":
        return encode(image)
    return TRANSFORMS[name](image, np.random.default_rng(seed))
