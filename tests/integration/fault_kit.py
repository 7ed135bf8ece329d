"""Helpers shared by the fault and exactly-once tests: distinct real photos to index."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from dedup_client import IndexItem
from PIL import Image, ImageOps


def distinct_images(eval_dir: Path, count: int) -> list[bytes]:
    """`count` different encodings of the real photos (each photo, mirrored, in grey, at two sizes)."""
    photos = sorted((eval_dir / "base_images").glob("*.jpg"))
    variants = []
    for path in photos:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        for edit in (image, ImageOps.mirror(image), ImageOps.grayscale(image).convert("RGB")):
            for width in (320, 200):
                copy = edit.resize((width, max(1, width * edit.height // edit.width)))
                buffer = io.BytesIO()
                copy.save(buffer, "JPEG", quality=85)
                variants.append(buffer.getvalue())
    if len(variants) < count:
        raise ValueError(f"only {len(variants)} variants of {len(photos)} photos, {count} wanted")
    return variants[:count]


def items(images: Iterable[bytes], *, prefix: str, collection: str) -> list[IndexItem]:
    return [IndexItem(id=f"{prefix}-{n:04d}", image=image, collection=collection) for n, image in enumerate(images)]
