"""Shared test helpers: where the real photos are, and seeded transformed copies of them."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest
from PIL import Image, ImageEnhance, ImageOps

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = Path(os.environ.get("DEDUP_EVAL_DIR", REPO.parent / "shared" / "eval" / "imagededup"))


@pytest.fixture(scope="session")
def eval_dir() -> Path:
    if not (EVAL_DIR / "base_images").is_dir():
        pytest.fail(f"evaluation photos not found at {EVAL_DIR} (set DEDUP_EVAL_DIR)")
    return EVAL_DIR


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def transformed_copies(path: Path, seed: int) -> dict[str, bytes]:
    """Seeded near-duplicates of one photo: the edits users make before re-uploading."""
    rng = random.Random(seed)
    with Image.open(path) as original:
        # As displayed (EXIF orientation applied), the way a user copies it: ukbench09268 is stored rotated.
        image = ImageOps.exif_transpose(original).convert("RGB")
    width, height = image.size
    keep = 0.8
    left = rng.randint(0, int(width * (1 - keep)))
    top = rng.randint(0, int(height * (1 - keep)))
    crop = image.crop((left, top, left + int(width * keep), top + int(height * keep)))
    return {
        "scale50": encode(image.resize((width // 2, height // 2))),
        "scale25": encode(image.resize((width // 4, height // 4))),
        "crop80": encode(crop),
        "brighter": encode(ImageEnhance.Brightness(image).enhance(1.0 + rng.uniform(0.3, 0.4))),
        "darker": encode(ImageEnhance.Brightness(image).enhance(1.0 - rng.uniform(0.3, 0.4))),
        "gray": encode(ImageOps.grayscale(image)),
        "jpeg_q20": encode(image, quality=20),
        "png": encode(image, "PNG"),
    }
