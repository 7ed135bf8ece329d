"""The peer baseline: perceptual hash (imagehash pHash, 64 bits), duplicate when the Hamming distance is <= 10,
as imagededup and most "dedupe my photos" tools do. Run locally on exactly the same benchmark bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

import imagehash
from PIL import Image

from .benchmark import Split
from .runner import Candidate, QueryResult

MAX_DISTANCE = 10


def _hash(data: bytes) -> imagehash.ImageHash:
    with Image.open(io.BytesIO(data)) as image:
        return imagehash.phash(image.convert("RGB"))


def run_split(split: Split) -> Sequence[QueryResult]:
    """Results in the harness's shape: similarity = 1 - distance/64, decided at distance <= MAX_DISTANCE."""
    indexed = [(photo_id, _hash(data)) for photo_id, data in split.originals]
    results = []
    for query in split.queries:
        query_hash = _hash(query.image)
        ranked = sorted(((query_hash - h, photo_id) for photo_id, h in indexed))[:5]
        results.append(QueryResult(
            id=query.id, transform=query.transform, expected=query.expected,
            candidates=[Candidate(photo_id, 1 - distance / 64) for distance, photo_id in ranked],
            decided=[photo_id for distance, photo_id in ranked if distance <= MAX_DISTANCE],
            decided_mirrors_distinct=(),  # pHash has no flip policy
        ))
    return results
