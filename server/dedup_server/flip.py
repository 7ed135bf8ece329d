"""Flip policy: does a left-right mirrored copy count as a duplicate?

Pooled CNN embeddings are nearly mirror-invariant (a mirrored copy scores about 0.98 with its original), so a
mirrored copy is found like any other copy. Whether a match *is* mirrored is told by the images' layouts
(layout.py), which costs no model pass; MIRROR_IS_DISTINCT drops such matches (text, logos, where left and right
matter), the other policies keep them, flagged.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

from .index import Hit
from .layout import is_mirror


class FlipPolicy(enum.IntEnum):
    """Values are the contract's (dedup.v1.FlipPolicy), so requests carry them as plain numbers."""

    DEFAULT = 0  # the server default: MIRROR_IS_DUPLICATE
    MIRROR_IS_DUPLICATE = 1
    MIRROR_IS_DISTINCT = 2


def decide(hits: Sequence[Hit], query_layout: str, policy: FlipPolicy, threshold: float, top_k: int) -> list[Hit]:
    """The matches (similarity >= threshold, best first, one per id, at most top_k) under ``policy``, each
    flagged ``mirrored`` when it is the query mirrored."""
    best: dict[str, Hit] = {}
    for hit in hits:
        if hit.similarity >= threshold and (hit.id not in best or hit.similarity > best[hit.id].similarity):
            best[hit.id] = hit
    matches = []
    for hit in sorted(best.values(), key=lambda h: h.similarity, reverse=True):
        mirrored = is_mirror(query_layout, hit.layout)
        if mirrored and policy is FlipPolicy.MIRROR_IS_DISTINCT:
            continue
        matches.append(dataclasses.replace(hit, mirrored=mirrored))
        if len(matches) == top_k:
            break
    return matches
