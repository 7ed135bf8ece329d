"""Helpers shared by the fault and exactly-once tests: distinct real photos to index, and what Milvus really holds."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from dedup_client import IndexItem
from PIL import Image, ImageOps
from pymilvus import MilvusClient

COLLECTION_PREFIX = "dedup_"  # the front's default DEDUP_COLLECTION_PREFIX


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


class StoredIds:
    """Reads Milvus directly (not through the front): which ids a collection really holds, and how many rows."""

    def __init__(self, milvus_uri: str) -> None:
        self._client = MilvusClient(uri=milvus_uri, dedicated=True, timeout=30)

    def close(self) -> None:
        self._client.close()

    def ids(self, collection: str) -> list[str]:
        """Every row's id (with repeats, if a row were ever stored twice)."""
        name = COLLECTION_PREFIX + collection
        self._client.load_collection(name, timeout=60)
        rows = self._client.query(
            name, filter='id != ""', output_fields=["id"], limit=16_384, consistency_level="Strong", timeout=60
        )
        return [str(row["id"]) for row in rows]

    def count(self, collection: str) -> int:
        name = COLLECTION_PREFIX + collection
        rows = self._client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong", timeout=60)
        return int(rows[0]["count(*)"])
