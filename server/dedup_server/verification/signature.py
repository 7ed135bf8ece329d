"""The per-image signature stored beside the vector: a small grey JPEG to re-extract local features from.

A grey thumbnail (longest side SIDE px, JPEG quality QUALITY) is cheaper to store than the keypoints themselves
(ORB's 500+ descriptors are 16 KB and more) and keeps working if the feature recipe changes. It is made from the
image as decoded for the model, before the resize to the model's input, so it costs no second decode. Base64 in a
VARCHAR field: Milvus 2.3 has no bytes type.
"""

from __future__ import annotations

import base64
import io
from typing import Final

import numpy as np
from PIL import Image

#: Longest side of the stored thumbnail, pixels (smaller images are stored as they are).
SIDE: Final = 320
QUALITY: Final = 80
#: Beyond this many base64 characters (busy textures) the JPEG is re-encoded at lower quality: it must fit Milvus'
#: VARCHAR (65,535).
MAX_CHARS: Final = 60_000


def make_signature(thumbnail: np.ndarray) -> str:
    """Base64 of the grey JPEG of a uint8 [H, W] thumbnail (decode.decode_with_thumbnail at SIDE); "" when empty."""
    if thumbnail.size == 0:
        return ""
    image = Image.fromarray(np.ascontiguousarray(thumbnail, dtype=np.uint8), "L")
    for quality in (QUALITY, 60, 40, 20):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        if len(encoded) <= MAX_CHARS:
            return encoded
    return ""  # cannot happen at SIDE px; unverifiable rather than a failed write


def signature_pixels(signature: str) -> np.ndarray | None:
    """The stored thumbnail as a uint8 [H, W] array; None when absent or unreadable (stored before signatures)."""
    if not signature:
        return None
    try:
        with Image.open(io.BytesIO(base64.b64decode(signature, validate=True))) as image:
            return np.asarray(image.convert("L"), dtype=np.uint8)
    except Exception:  # a damaged signature only means "cannot verify", never a failed request
        return None
