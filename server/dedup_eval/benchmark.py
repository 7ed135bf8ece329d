"""The benchmark: which photos are indexed and which are distractors, split into calibration and test.

Every photo lands in exactly one of four buckets (calibration/test x indexed/distractor), decided by a salted hash
of its id, so the split is fixed, balanced and independent of the order the corpus lists photos in. The default
threshold is chosen on the calibration split only and reported on the test split only.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Sequence
from typing import Final, Literal

from .corpus import Photo
from .transforms import DISTRACTOR_TRANSFORMS, TRANSFORMS, apply, encode

SplitName = Literal["calibration", "test"]
SPLITS: Final[tuple[SplitName, ...]] = ("calibration", "test")
_SALT: Final = "dedup-eval-v2"
# Per 8 photos (in hash order): 2 indexed + 2 distractors for calibration; 1 indexed + 3 distractors for test, so
# that the test split holds 3 photos that must never match for every photo that is indexed.
_BUCKETS: Final = (
    ("calibration", True), ("calibration", True), ("calibration", False), ("calibration", False),
    ("test", True), ("test", False), ("test", False), ("test", False),
)


def _stable_int(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256(":".join((_SALT, *parts)).encode()).digest()[:8], "big")


@dataclasses.dataclass(frozen=True)
class Query:
    id: str  # "<photo id>/<transform>"
    transform: str
    expected: str | None  # the indexed photo it is a copy of; None for a distractor
    image: bytes


@dataclasses.dataclass(frozen=True)
class Split:
    name: SplitName
    indexed: Sequence[Photo]
    distractors: Sequence[Photo]

    @functools.cached_property
    def originals(self) -> tuple[tuple[str, bytes], ...]:
        """(id, JPEG bytes) of each photo to index; encoded once per split."""
        return tuple((photo.id, encode(photo.image)) for photo in self.indexed)

    @functools.cached_property
    def queries(self) -> tuple[Query, ...]:
        """Every transformed copy of every indexed photo, then every distractor query; built once per split."""
        copies = [
            Query(id=f"{photo.id}/{name}", transform=name, expected=photo.id,
                  image=apply(name, photo.image, _stable_int(photo.id, name) % 2**32))
            for photo in self.indexed for name in TRANSFORMS
        ]
        distractors = [
            Query(id=f"{photo.id}/{name}", transform=name, expected=None,
                  image=apply(name, photo.image, _stable_int(photo.id, name) % 2**32))
            for photo in self.distractors for name in DISTRACTOR_TRANSFORMS
        ]
        return (*copies, *distractors)


def make_splits(photos: Sequence[Photo]) -> dict[SplitName, Split]:
    ordered = sorted(photos, key=lambda p: _stable_int(p.id))
    buckets: dict[tuple[str, bool], list[Photo]] = {bucket: [] for bucket in _BUCKETS}
    for position, photo in enumerate(ordered):
        buckets[_BUCKETS[position % len(_BUCKETS)]].append(photo)
    return {
        name: Split(name=name, indexed=buckets[(name, True)], distractors=buckets[(name, False)])
        for name in SPLITS
    }
