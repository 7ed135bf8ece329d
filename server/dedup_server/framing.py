"""Find the photo inside a frame: a screenshot's UI chrome, letterbox or pillarbox bars, padding, a caption band.

A copy shown inside a screenshot keeps only 40-55 % of the picture's area, so the whole image's embedding is far
from the original (median cosine 0.36 on the calibration split, under the verification band). Searched with the
framed photo alone, the same copies reach 0.72 and are then verified by local features as any other candidate.

How the frame is told from the photo: user-interface pixels are *flat* (a 3x3 neighbourhood spans at most
FLAT_RANGE grey levels) and share a *few grey levels* with many other pixels (each at least SPIKE of the image,
within +-2 levels); a photo's pixels are rarely both. What is left, opened with a 5x5 square (text strokes and
outlines are thinner) and closed to fill the photo's own flat patches, is the photo's mask; its largest
connected part, when it is solid and covers between MIN_SHARE and MAX_SHARE of the image, is the framed photo.
An ordinary photo yields no box (ninety-odd % of the calibration split's unframed queries), so the second
search is paid mostly by framed queries. A photo on a white background is not found (its background is the
frame's colour): such copies are no worse off than without this.

Parameters chosen on the calibration split's copies only (server/dedup_eval), never on the test split.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import cv2
import numpy as np

FLAT_RANGE: Final = 2  # grey levels a flat 3x3 neighbourhood spans at most
SPIKE: Final = 0.02  # share of the image a frame colour holds at least (within +-2 levels)
MIN_SHARE: Final = 0.12  # the framed photo covers at least this share of the image ...
MAX_SHARE: Final = 0.85  # ... and at most this (beyond it, searching the whole image is as good)
MIN_SOLIDITY: Final = 0.5  # share of the box the photo's mask fills
MIN_SIDE: Final = 32  # smaller images: no frame is looked for


@dataclasses.dataclass(frozen=True, slots=True)
class Box:
    left: int
    top: int
    width: int
    height: int

    def scaled(self, factor_x: float, factor_y: float, width: int, height: int) -> Box:
        """The same box on an image ``factor`` times larger, clipped to its ``width`` x ``height``."""
        left, top = min(width - 1, round(self.left * factor_x)), min(height - 1, round(self.top * factor_y))
        return Box(left=left, top=top, width=max(1, min(width - left, round(self.width * factor_x))),
                   height=max(1, min(height - top, round(self.height * factor_y))))


def photo_box(grey: np.ndarray) -> Box | None:
    """The box of the photo inside a frame, in the pixels of ``grey`` (uint8 [H, W]); None: no frame found."""
    height, width = grey.shape[:2]
    if min(height, width) < MIN_SIDE:
        return None
    square3 = np.ones((3, 3), np.uint8)
    spread = cv2.dilate(grey, square3).astype(np.int16) - cv2.erode(grey, square3).astype(np.int16)
    histogram = np.bincount(grey.ravel(), minlength=256).astype(np.float64)
    level_share = np.convolve(histogram, np.ones(5), mode="same") / grey.size
    frame = (spread <= FLAT_RANGE) & (level_share >= SPIKE)[grey]
    photo = (~frame).astype(np.uint8)
    photo = cv2.morphologyEx(photo, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    close = max(3, (min(height, width) // 40) | 1)
    photo = cv2.morphologyEx(photo, cv2.MORPH_CLOSE, np.ones((close, close), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(photo, connectivity=4)
    if count <= 1:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    left, top, box_w, box_h, area = (int(v) for v in stats[largest])
    share = box_w * box_h / (width * height)
    if not MIN_SHARE <= share <= MAX_SHARE or area < MIN_SOLIDITY * box_w * box_h:
        return None
    return Box(left=left, top=top, width=box_w, height=box_h)
