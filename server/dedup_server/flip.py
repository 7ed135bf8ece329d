"""Flip policy: does a left-right mirrored copy count as a duplicate?

Pooled CNN embeddings are nearly mirror-invariant (a mirrored copy scores about 0.98 with its original), so a
mirrored copy is found like any other copy. Whether a match *is* mirrored is told by the images' layouts
(layout.py), which costs no model pass; MIRROR_IS_DISTINCT drops such matches (text, logos, where left and right
matter), the other policies keep them, flagged (decision.py applies it).
"""

from __future__ import annotations

import enum


class FlipPolicy(enum.IntEnum):
    """Values are the contract's (dedup.v1.FlipPolicy), so requests carry them as plain numbers."""

    DEFAULT = 0  # the server default: MIRROR_IS_DUPLICATE
    MIRROR_IS_DUPLICATE = 1
    MIRROR_IS_DISTINCT = 2
