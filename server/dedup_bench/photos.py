"""The benchmark's images: distinct ~640x480 JPEGs made from real photos with seeded crops, flips and exposure.

Sources: the evaluation corpus (shared/eval UKBench photos + pinned Debian wallpapers and OpenCV samples, fetched
by dedup_eval) and the real photos bundled with scikit-image. Each output is a different crop of a source photo,
so they are distinct images of realistic content and size (what a JPEG decoder and the model really see).
Written once to a cache folder and reused by later runs.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageEnhance
from tqdm import tqdm

logger = logging.getLogger(__name__)

SIZE: Final = (640, 480)
RECIPE: Final = "v1"


def source_photos(eval_cache: Path) -> list[Image.Image]:
    """Every real photo at hand: the evaluation corpus (downloaded once) and scikit-image's bundled photos."""
    from dedup_eval.corpus import CorpusError, load_corpus
    from dedup_modelbuild.photos import load_calibration_photos

    photos: list[Image.Image] = []
    try:
        photos.extend(photo.image for photo in load_corpus(eval_cache))
    except CorpusError as exc:
        logger.warning("evaluation corpus unavailable (%s): using scikit-image's photos only", exc)
    photos.extend(load_calibration_photos())
    if len(photos) < 10:
        raise RuntimeError(f"only {len(photos)} real photos found: install the model extra (scikit-image)")
    return photos


def variant(photo: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A seeded 4:3 crop (45-100 % of the side), resized to 640x480, maybe mirrored, with exposure/contrast jitter."""
    width, height = photo.size
    scale = rng.uniform(0.45, 1.0)
    crop_w = min(width, int(min(width, height * 4 / 3) * scale))
    crop_h = min(height, int(crop_w * 3 / 4))
    left = int(rng.integers(0, width - crop_w + 1))
    top = int(rng.integers(0, height - crop_h + 1))
    image = photo.crop((left, top, left + crop_w, top + crop_h)).resize(SIZE, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))


def encode_jpeg(image: Image.Image, quality: int = 88) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def bench_jpegs(cache_dir: Path, eval_cache: Path, *, count: int, seed: int = 0) -> list[bytes]:
    """``count`` distinct 640x480 JPEGs (cached in ``cache_dir``; made again when the count or recipe changes)."""
    folder = cache_dir / f"photos-{RECIPE}-{count}-{seed}"
    paths = [folder / f"img{i:05d}.jpg" for i in range(count)]
    if all(path.is_file() for path in paths):
        return [path.read_bytes() for path in paths]
    photos = source_photos(eval_cache)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for i, path in enumerate(tqdm(paths, desc="making bench JPEGs", unit="img", leave=False)):
        data = encode_jpeg(variant(photos[i % len(photos)], rng), quality=int(rng.integers(80, 95)))
        path.write_bytes(data)
        images.append(data)
    logger.info("wrote %d JPEGs from %d real photos to %s", count, len(photos), folder)
    return images
