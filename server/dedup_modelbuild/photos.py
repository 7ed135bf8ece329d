"""Turn photos into the model's input exactly as clients do: RGB, direct resize to 224x224, uint8 NHWC."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

from .architectures import INPUT_SIZE

logger = logging.getLogger(__name__)

PHOTO_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})


def to_input(image: Image.Image) -> np.ndarray:
    """One image as uint8 [224, 224, 3] (direct resize, no crop: the same rule as the service's decoder)."""
    rgb = image.convert("RGB").resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def load_photos(directory: Path, *, limit: int = 16) -> list[Image.Image]:
    """Up to ``limit`` decodable photos from ``directory`` (sorted by name, not recursive)."""
    photos = []
    for path in sorted(p for p in directory.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES):
        try:
            with Image.open(path) as image:
                photos.append(image.convert("RGB"))
        except OSError as exc:
            logger.warning("skipping unreadable photo %s: %s", path, exc)
        if len(photos) >= limit:
            break
    return photos


def synthetic_photos(count: int = 8, *, seed: int = 0) -> list[Image.Image]:
    """Seeded stand-ins with structure (gradients, blobs, stripes) for when no real photos are at hand."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:320, 0:480].astype(np.float32)
    photos = []
    for _ in range(count):
        canvas = np.zeros((320, 480, 3), np.float32)
        for channel in range(3):
            gx, gy = rng.uniform(-1, 1, size=2)
            canvas[..., channel] = 128 + 60 * (gx * xx / 480 + gy * yy / 320)
        for _ in range(6):
            cx, cy, radius = rng.uniform(0, 480), rng.uniform(0, 320), rng.uniform(20, 90)
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
            canvas[mask] = rng.uniform(0, 255, size=3)
        period = rng.uniform(8, 40)
        canvas += 25 * np.sin(2 * np.pi * (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / period)[..., None]
        photos.append(Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)))
    return photos


# Real photographs bundled in the scikit-image wheel (model extra), one of each near-identical pair (the
# motorcycle stereo pair) and no charts or renders. None of them is in the evaluation corpus (server/dedup_eval:
# shared/eval + Debian wallpapers and OpenCV samples), so INT8 calibration never sees a held-out photo.
CALIBRATION_PHOTOS: Final = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "page.png", "retina.jpg",
    "rocket.jpg", "text.png",
)


def calibration_photo_dir() -> Path | None:
    """scikit-image's bundled data folder, found without importing scikit-image (slow); None when not installed."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(next(iter(spec.submodule_search_locations))) / "data"
    return directory if directory.is_dir() else None


def load_calibration_photos(directory: Path | None = None) -> list[Image.Image]:
    """The calibration photos from ``directory`` (every photo in it), else the bundled scikit-image ones."""
    if directory is not None:
        return load_photos(directory, limit=1000)
    bundled = calibration_photo_dir()
    if bundled is None:
        return []
    photos = []
    for name in CALIBRATION_PHOTOS:
        try:
            with Image.open(bundled / name) as image:
                photos.append(image.convert("RGB"))
        except OSError as exc:
            logger.warning("skipping calibration photo %s: %s", bundled / name, exc)
    return photos
