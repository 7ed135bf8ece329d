"""Seeded edits that turn a photo into the copies people re-upload: scaled, cropped, brightened, greyed, re-encoded.

Each transform takes the photo and a numpy Generator (seeded per photo and transform, so every run builds the
same benchmark) and returns encoded bytes, as a client would send them.

The first 15 are the ones the v1 benchmark was calibrated on and must not change. After them come harder edits in the
style of Copydays and DISC21 (listed in HARD_TRANSFORMS): JPEG quality 8 and 5, crops to half the area, blur, noise,
saturation and hue shifts, a stretch, letter-/pillarboxing and random padding, stickers and meme captions, a
screenshot with UI around the photo (PNG), two strong combinations, thumbnails of 160 and 96 px and a rotation with
the black corners cropped away.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Final

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

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


# --- Copydays / DISC21-style harder edits -------------------------------------------------------------------------
# Every helper below works on any RGB photo from 64x48 to 1280x1280 (and smaller): sizes are floored at 16 px for
# photos and 8 px for fonts and shapes, so a thumbnail never turns into an empty crop or a zero-size font.

_MIN_SIDE: Final = 16
_MIN_FONT: Final = 8
_STICKER_COLOURS: Final = ((255, 204, 0), (255, 59, 48), (52, 199, 89), (0, 122, 255), (255, 45, 150),
                           (255, 149, 0), (175, 82, 222))
_MEME_TOP: Final = ("WHEN YOU SEE IT", "ME BEFORE COFFEE", "NOBODY:", "ONE DOES NOT SIMPLY", "THAT FEELING WHEN")
_MEME_BOTTOM: Final = ("AND THEN IT HAPPENED", "MUCH WOW", "EVERY SINGLE TIME", "NO REGRETS", "IT'S FRIDAY")


def _font(size: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=max(_MIN_FONT, round(size)))


def _crop_to(image: Image.Image, crop_w: int, crop_h: int, left: int, top: int) -> Image.Image:
    width, height = image.size
    crop_w, crop_h = min(width, max(_MIN_SIDE, crop_w)), min(height, max(_MIN_SIDE, crop_h))
    left, top = min(max(0, left), width - crop_w), min(max(0, top), height - crop_h)
    return image.crop((left, top, left + crop_w, top + crop_h))


def _crop_area(image: Image.Image, area: float, rng: np.random.Generator) -> Image.Image:
    """Keep ``area`` of the area at the photo's aspect ratio (sqrt(area) of each side), at a random position."""
    width, height = image.size
    keep = float(np.sqrt(area))
    crop_w, crop_h = max(_MIN_SIDE, round(width * keep)), max(_MIN_SIDE, round(height * keep))
    left = int(rng.integers(0, max(0, width - crop_w) + 1))
    top = int(rng.integers(0, max(0, height - crop_h) + 1))
    return _crop_to(image, crop_w, crop_h, left, top)


def _crop_half_width(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Full height, half the width, off-centre: the kept strip starts in the outer quarter of the slack on one side."""
    width, height = image.size
    crop_w = max(_MIN_SIDE, width // 2)
    slack = max(0, width - crop_w)
    offset = int(rng.integers(0, slack // 4 + 1))
    left = offset if rng.integers(2) else slack - offset
    return _crop_to(image, crop_w, height, left, 0)


def _blur(image: Image.Image, radius_at_640: float) -> Image.Image:
    """Gaussian blur whose radius is ``radius_at_640`` px for a 640-px photo, scaled with the photo's long side."""
    return image.filter(ImageFilter.GaussianBlur(radius_at_640 * max(image.size) / 640))


def _noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, sigma, size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def _hue_shift(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate the hue by 30-60 degrees, either way."""
    degrees = float(rng.uniform(30.0, 60.0)) * (1 if rng.integers(2) else -1)
    shift = round(degrees / 360 * 256)
    hue, saturation, value = image.convert("HSV").split()
    hue = hue.point([(level + shift) % 256 for level in range(256)])
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


def _stretch(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One axis (random) 1.3 times longer, the other unchanged."""
    width, height = image.size
    size = (round(width * 1.3), height) if rng.integers(2) else (width, round(height * 1.3))
    return image.resize(size, Image.Resampling.LANCZOS)


def _pad_to_ratio(image: Image.Image, ratio: float, fill: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    """The photo centred on a canvas of aspect ``ratio`` (width / height): bars top and bottom or left and right."""
    width, height = image.size
    if width / height < ratio:
        canvas_size = (max(width, round(height * ratio)), height)
    else:
        canvas_size = (width, max(height, round(width / ratio)))
    canvas = Image.new("RGB", canvas_size, fill)
    canvas.paste(image, ((canvas_size[0] - width) // 2, (canvas_size[1] - height) // 2))
    return canvas


def _letterbox_16_9(image: Image.Image) -> Image.Image:
    """Black bars to 16:9; a photo already about 16:9 goes to 4:3 instead, so there are always bars."""
    ratio = 16 / 9
    if abs(image.width / image.height - ratio) < 0.03 * ratio:
        ratio = 4 / 3
    return _pad_to_ratio(image, ratio)


def _pillarbox(image: Image.Image) -> Image.Image:
    """Black bars to a square; a photo already about square goes to 4:3 instead, so there are always bars."""
    return _pad_to_ratio(image, 4 / 3 if abs(image.width / image.height - 1) < 0.03 else 1.0)


def _pad_random(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """10-25 % (each its own) on two to four random sides, in white or a random flat colour."""
    width, height = image.size
    sides = rng.permutation(4)[: int(rng.integers(2, 5))]
    fractions = rng.uniform(0.10, 0.25, size=4)
    left, top, right, bottom = (
        round(fractions[side] * (width if side % 2 == 0 else height)) if side in sides else 0 for side in range(4)
    )
    colour = (255, 255, 255) if rng.integers(2) else tuple(int(c) for c in rng.integers(0, 256, size=3))
    return ImageOps.expand(image, border=(left, top, right, bottom), fill=colour)


def _stickers(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """2-4 opaque smiley stickers (discs or stars), each 10-18 % of the short side, at random positions."""
    edited = image.copy()
    draw = ImageDraw.Draw(edited)
    width, height = edited.size
    for _ in range(int(rng.integers(2, 5))):
        size = max(_MIN_FONT, round(min(width, height) * float(rng.uniform(0.10, 0.18))))
        x = int(rng.integers(0, max(0, width - size) + 1))
        y = int(rng.integers(0, max(0, height - size) + 1))
        colour = _STICKER_COLOURS[int(rng.integers(len(_STICKER_COLOURS)))]
        line = max(1, size // 20)
        if rng.integers(2):
            draw.ellipse((x, y, x + size - 1, y + size - 1), fill=colour, outline=(0, 0, 0), width=line)
        else:
            centre_x, centre_y, outer = x + size / 2, y + size / 2, size / 2
            turn = float(rng.uniform(-0.3, 0.3))
            points = [
                (centre_x + radius * float(np.cos(angle)), centre_y + radius * float(np.sin(angle)))
                for k in range(10)
                for radius, angle in [(outer if k % 2 == 0 else outer * 0.5, -np.pi / 2 + turn + k * np.pi / 5)]
            ]
            draw.polygon(points, fill=colour, outline=(0, 0, 0))
        eye = max(1, round(size * 0.06))
        for eye_x in (x + size * 0.38, x + size * 0.62):
            draw.ellipse((eye_x - eye, y + size * 0.4 - eye, eye_x + eye, y + size * 0.4 + eye), fill=(0, 0, 0))
        draw.arc((x + size * 0.34, y + size * 0.42, x + size * 0.66, y + size * 0.66), 20, 160, fill=(0, 0, 0),
                 width=line)
    return edited


def _meme_text(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """White uppercase captions with a black outline at the top and bottom, about 1/8 of the height tall."""
    edited = image.copy()
    draw = ImageDraw.Draw(edited)
    width, height = edited.size
    margin = max(1, height // 40)
    for lines, at_top in ((_MEME_TOP, True), (_MEME_BOTTOM, False)):
        text = str(lines[int(rng.integers(len(lines)))])
        size = max(_MIN_FONT, height // 8)
        font = _font(size)
        box = draw.textbbox((0, 0), text, font=font)
        if box[2] - box[0] > 0.94 * width:  # too wide: shrink to fit, down to the smallest font
            size = max(_MIN_FONT, int(size * 0.94 * width / (box[2] - box[0])))
            font = _font(size)
            box = draw.textbbox((0, 0), text, font=font)
        stroke = max(1, size // 12)
        x = (width - (box[2] - box[0])) // 2 - box[0]
        y = margin - box[1] if at_top else height - margin - box[3]
        draw.text((x, y), text, font=font, fill=(255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0))
    return edited


def _fit(image: Image.Image, max_w: float, max_h: float) -> Image.Image:
    scale = min(max_w / image.width, max_h / image.height)
    size = (max(_MIN_SIDE, round(image.width * scale)), max(_MIN_SIDE, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _text_lines(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], line: int, colour: tuple[int, int, int],
                rng: np.random.Generator) -> None:
    """Grey bars ``line`` px thick standing in for lines of text, filling ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    line = max(3, line)
    y = y0
    while y + line <= y1 and x1 - x0 > 8:
        length = int((x1 - x0) * float(rng.uniform(0.4, 1.0)))
        draw.rectangle((x0, y, x0 + length, y + line - 1), fill=colour)
        y += 2 * line


def _screenshot(image: Image.Image, rng: np.random.Generator) -> bytes:
    """The photo at 60-75 % of a phone or desktop screen, with status/title bars and UI blocks around it; PNG."""
    long_side = max(240, image.width, image.height)
    phone = bool(rng.integers(2))
    dark = bool(rng.integers(2))
    background, panel, ink = ((28, 28, 30), (58, 58, 60), (120, 120, 128)) if dark else \
        ((255, 255, 255), (232, 232, 237), (142, 142, 147))
    fraction = float(rng.uniform(0.60, 0.75))
    canvas_w, canvas_h = (round(long_side * 1.5 * 9 / 19.5), round(long_side * 1.5)) if phone else \
        (long_side, round(long_side * 10 / 16))
    canvas = Image.new("RGB", (canvas_w, canvas_h), background)
    draw = ImageDraw.Draw(canvas)
    bar = max(8, canvas_h // (28 if phone else 18))
    font = _font(bar * 0.6)
    if phone:
        # status bar: time, signal bars, battery; then an app header with a back arrow, a title and an avatar
        draw.rectangle((0, 0, canvas_w - 1, bar - 1), fill=panel)
        draw.text((bar // 2, bar // 6), "9:41", font=font, fill=ink)
        for k in range(4):
            draw.rectangle((canvas_w - 4 * bar + k * bar // 4, bar * (3 - k) // 4, canvas_w - 4 * bar + k * bar // 4
                            + bar // 6, bar - bar // 6), fill=ink)
        draw.rectangle((canvas_w - 2 * bar, bar // 4, canvas_w - bar // 2, bar - bar // 4), outline=ink,
                       width=max(1, bar // 10))
        header_bottom = 3 * bar
        draw.line((bar, 2 * bar, bar + bar // 2, 2 * bar - bar // 2), fill=ink, width=max(1, bar // 6))
        draw.line((bar, 2 * bar, bar + bar // 2, 2 * bar + bar // 2), fill=ink, width=max(1, bar // 6))
        draw.text((3 * bar, 2 * bar - bar // 3), "Photos", font=font, fill=ink)
        draw.ellipse((canvas_w - 2 * bar, 2 * bar - bar // 2, canvas_w - bar, 2 * bar + bar // 2), fill=ink)
        photo = _fit(image, fraction * canvas_w, fraction * canvas_h)
        x, y = (canvas_w - photo.width) // 2, header_bottom + bar // 2
        # under the photo: a row of icons, lines of text, a bottom navigation bar and the home indicator
        icons_y = y + photo.height + bar // 2
        for k in range(3):
            draw.ellipse((x + k * 2 * bar, icons_y, x + k * 2 * bar + bar, icons_y + bar), outline=ink,
                         width=max(1, bar // 8))
        nav_top = canvas_h - 2 * bar
        _text_lines(draw, (x, icons_y + 2 * bar, x + photo.width, nav_top - bar // 2), bar // 2, panel, rng)
        draw.rectangle((0, nav_top, canvas_w - 1, canvas_h - 1), fill=panel)
        for k in range(5):
            centre = canvas_w * (2 * k + 1) // 10
            draw.rectangle((centre - bar // 3, nav_top + bar // 3, centre + bar // 3, nav_top + bar), fill=ink)
        draw.rectangle((canvas_w // 3, canvas_h - bar // 2, 2 * canvas_w // 3, canvas_h - bar // 3), fill=ink)
    else:
        # title bar with the three window buttons and a title; a toolbar with an address field; a sidebar
        draw.rectangle((0, 0, canvas_w - 1, bar - 1), fill=panel)
        for k, button in enumerate(((255, 95, 86), (255, 189, 46), (39, 201, 63))):
            left = bar // 3 + k * (bar * 3 // 4)
            draw.ellipse((left, bar // 4, left + bar // 2, bar // 4 + bar // 2), fill=button)
        draw.text((canvas_w // 2 - 3 * bar, bar // 6), "IMG_2048.jpg - Photos", font=font, fill=ink)
        draw.rounded_rectangle((3 * bar, bar + bar // 5, canvas_w - 3 * bar, 2 * bar - bar // 5), radius=bar // 3,
                               fill=panel)
        sidebar = canvas_w // 6
        draw.rectangle((0, 2 * bar, sidebar, canvas_h - 1), fill=panel)
        for k in range(max(0, (canvas_h - 3 * bar) // (2 * bar))):
            top = 3 * bar + k * 2 * bar
            draw.rectangle((bar // 2, top, sidebar - bar // 2, top + bar - 1), fill=ink)
        status_top = canvas_h - bar
        draw.rectangle((0, status_top, canvas_w - 1, canvas_h - 1), fill=panel)
        draw.text((bar // 2, status_top + bar // 6), "1 of 24 - 4032 x 3024", font=font, fill=ink)
        content_w, content_h = canvas_w - sidebar - bar, status_top - 2 * bar - bar
        photo = _fit(image, min(fraction * canvas_w, content_w), min(fraction * canvas_h, content_h))
        x, y = sidebar + bar // 2, 2 * bar + bar // 2
        # beside the photo: a details pane of text lines
        _text_lines(draw, (x + photo.width + bar // 2, y, canvas_w - bar // 2, y + photo.height), bar // 2, panel, rng)
    canvas.paste(photo, (x, y))
    return encode(canvas, "PNG")


def _thumbnail(image: Image.Image, long_side: int) -> Image.Image:
    """Resized so the long side is exactly ``long_side`` (down, or up for a photo already smaller)."""
    scale = long_side / max(image.size)
    size = (long_side, max(1, round(image.height * scale))) if image.width >= image.height else \
        (max(1, round(image.width * scale)), long_side)
    return image.resize(size, Image.Resampling.LANCZOS)


def _rotate_crop(image: Image.Image, degrees: float, rng: np.random.Generator) -> Image.Image:
    """Rotated by ``degrees`` either way, then the largest centred crop of the same aspect with no black corners."""
    angle = float(rng.choice([-degrees, degrees]))
    rotated = image.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=(0, 0, 0))
    width, height = image.size
    cos, sin = float(np.cos(np.radians(degrees))), float(np.sin(np.radians(degrees)))
    scale = min(width / (width * cos + height * sin), height / (width * sin + height * cos))
    crop_w, crop_h = int(width * scale) - 2, int(height * scale) - 2  # 1 px margin against interpolated black edges
    return _crop_to(rotated, crop_w, crop_h, (width - crop_w) // 2, (height - crop_h) // 2)


def _combination_strong(image: Image.Image, rng: np.random.Generator) -> bytes:
    """Crop 70 % of each side, shift hue, saturate, blur, downscale to 40 %, JPEG quality 30."""
    edited = _hue_shift(_crop(image, 0.7, rng), rng)
    edited = _blur(ImageEnhance.Color(edited).enhance(1.4), 1.5)
    return encode(_scale(edited, 0.4), quality=30)


def _combination_meme(image: Image.Image, rng: np.random.Generator) -> bytes:
    """Pillarboxed (black) or padded by random margins, captioned top and bottom, JPEG quality 50."""
    padded = _pillarbox(image) if rng.integers(2) else _pad_random(image, rng)
    return encode(_meme_text(padded, rng), quality=50)


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
    # Copydays / DISC21-style harder edits (HARD_TRANSFORMS), after the 15 the v1 benchmark was calibrated on
    "jpeg_q8": lambda image, rng: encode(image, quality=8),
    "jpeg_q5": lambda image, rng: encode(image, quality=5),
    "crop_area_50": lambda image, rng: encode(_crop_area(image, 0.5, rng)),
    "crop_area_50_wide": lambda image, rng: encode(_crop_half_width(image, rng)),
    "blur": lambda image, rng: encode(_blur(image, 2.0)),
    "noise": lambda image, rng: encode(_noise(image, 12.0, rng)),
    "saturation_+80": lambda image, rng: encode(ImageEnhance.Color(image).enhance(1.8)),
    "hue_shift": lambda image, rng: encode(_hue_shift(image, rng)),
    "stretch": lambda image, rng: encode(_stretch(image, rng)),
    "letterbox_16_9": lambda image, rng: encode(_letterbox_16_9(image)),
    "pillarbox": lambda image, rng: encode(_pillarbox(image)),
    "pad_random": lambda image, rng: encode(_pad_random(image, rng)),
    "emoji_stickers": lambda image, rng: encode(_stickers(image, rng)),
    "meme_text": lambda image, rng: encode(_meme_text(image, rng)),
    "screenshot": _screenshot,
    "combination_strong": _combination_strong,
    "combination_meme": _combination_meme,
    "thumb_160": lambda image, rng: encode(_thumbnail(image, 160), quality=85),
    "thumb_96": lambda image, rng: encode(_thumbnail(image, 96), quality=85),
    "rotate_crop_15": lambda image, rng: encode(_rotate_crop(image, 15.0, rng)),
}

# The Copydays / DISC21-style additions, in TRANSFORMS order; every other transform is one of the v1 benchmark's 15.
HARD_TRANSFORMS: Final[tuple[str, ...]] = (
    "jpeg_q8", "jpeg_q5", "crop_area_50", "crop_area_50_wide", "blur", "noise", "saturation_+80", "hue_shift",
    "stretch", "letterbox_16_9", "pillarbox", "pad_random", "emoji_stickers", "meme_text", "screenshot",
    "combination_strong", "combination_meme", "thumb_160", "thumb_96", "rotate_crop_15",
)

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
