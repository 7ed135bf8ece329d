"""A tiny picture of where things are in an image, to tell a mirrored copy from an unmirrored one.

Pooled CNN embeddings are nearly mirror-invariant: measured through the API, unmirrored crops and downscales of a
photo were often closer to the *mirrored* query than to the query itself (by up to 0.044 cosine), while a true
mirror gained only 0.018, so embeddings alone cannot say which is which. The layout keeps what pooling throws
away: a 16x16 grey thumbnail of the model input (256 bytes per image, stored beside the vector). A stored image is
a mirror of the query when the query's mirrored thumbnail explains it clearly: it correlates clearly better than
the query's own *and* well in absolute terms. The better-by-a-margin rule alone flagged unmirrored copies whose
layout neither thumbnail explains (ukbench00120 rotated 8 degrees: own 0.30, mirrored 0.44). Measured on the
evaluation corpus (452 photos, each edit of dedup_eval.transforms), a floor of 0.55 takes the unmirrored copies
flagged from up to 10 % per edit (half-width crops; 5 % of 65 % crops, 6 % of screenshots) to at most 2 %, keeps
every plain mirror the margin finds (94 %; the rest are near-symmetric scenes), and of mirrors that were also
edited keeps those whose layout still correlates: cropped to 80 % 45 % (was 74 %), rotated 8 degrees 68 % (85 %),
framed 38 % (80 %). A mirror it misses is still a duplicate, only not flagged (MIRROR_IS_DISTINCT keeps it).
"""

from __future__ import annotations

import base64
from typing import Final

import numpy as np
from PIL import Image

SIDE: Final = 16
# How much better the mirrored thumbnail must correlate; below this (symmetric scenes, heavy edits) the copy is
# taken as unmirrored, i.e. a duplicate.
MIRROR_MARGIN: Final = 0.10
# How well the mirrored thumbnail must correlate at least; below it neither layout explains the copy well enough
# to call it mirrored (rotations, heavy crops), so it is taken as unmirrored.
MIRROR_MIN_CORRELATION: Final = 0.55


def layout_of(pixels: np.ndarray) -> str:
    """uint8 [H, W, 3] (the decoded model input) -> base64 of a SIDE x SIDE grey thumbnail (each cell's mean luma)."""
    # Pillow's integer BT.601 luma and box filter (each cell's area mean) run in C: 0.05 ms per image on the
    # ingest hot path, against 0.15 ms for the float32 numpy version; they agree to within one grey level.
    grey = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB").convert("L")
    thumb = grey.resize((SIDE, SIDE), Image.Resampling.BOX)
    return base64.b64encode(thumb.tobytes()).decode("ascii")


def _decode(layout: str) -> np.ndarray | None:
    try:
        raw = base64.b64decode(layout, validate=True)
    except ValueError:
        return None
    if len(raw) != SIDE * SIDE:
        return None
    return np.frombuffer(raw, dtype=np.uint8).reshape(SIDE, SIDE).astype(np.float32)


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 1e-6 else 0.0


def is_mirror(query_layout: str, stored_layout: str) -> bool:
    """True when the stored image looks like the query mirrored left-right (False when either is unknown)."""
    query, stored = _decode(query_layout), _decode(stored_layout)
    if query is None or stored is None:
        return False
    mirrored = _correlation(query[:, ::-1], stored)
    return mirrored >= MIRROR_MIN_CORRELATION and mirrored > _correlation(query, stored) + MIRROR_MARGIN
