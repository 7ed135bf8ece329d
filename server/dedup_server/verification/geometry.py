"""Local-feature evidence that two images show the same picture: ORB keypoints, ratio test, RANSAC homography.

Measured on photos like the benchmark's: true copies keep hundreds of inliers, different photos of the same subject
a handful. Two traps are guarded here: tiny images have no keypoints unless upscaled (every image is brought to
a working size first), and repetitive texture can collapse a homography onto a few points (the inliers must
cover a share of *both* images, which the rule checks). OpenCV releases the GIL, so this runs in a thread.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Final

import cv2
import numpy as np

#: Working size, longest side: smaller images are upscaled (else they have no keypoints), larger ones reduced.
#: 400 rather than 320 (every stored signature is at most 320 px, so both sides are upscaled): on the calibration
#: split's band copies of the hard edits (crops to half, strong combinations, rotate-crop), 34 instead of 48 of
#: 1,017 fail at 12 inliers, and 1 instead of 6 of 4,153 unrelated band pairs pass; 480 is no better.
MIN_SIDE: Final = 400
MAX_SIDE: Final = 512
N_FEATURES: Final = 500  # a third of 1,000's matching time (2.1 against 6.6 ms a pair, measured here)
RATIO: Final = 0.75  # Lowe's ratio test; 0.8 lets look-alikes through
RANSAC_PX: Final = 5.0
FAST: Final = 12
#: An image with fewer keypoints than this at FAST is detected again at FAST_RETRY: low-texture photos and small,
#: blurred copies (a 40 % downscale after a blur, upscaled here to the working size) keep few strong corners. On the
#: calibration split's band pairs at 12 inliers this verified 17 more of 3,233 copies (54 failed), and let 7 rather
#: than 6 of 5,717 unrelated pairs pass.
RETRY_BELOW: Final = 300
FAST_RETRY: Final = 5
#: Fewer corners than this at FAST on either side, and local features are no evidence either way (a black slate,
#: a clear sky): the verifier says so, and the cosine against the threshold decides, as for an unsigned candidate.
MIN_CORNERS: Final = 40


@dataclasses.dataclass(frozen=True, slots=True)
class Features:
    points: np.ndarray  # float32 [N, 2], in the working image's pixels
    descriptors: np.ndarray | None  # uint8 [N, 32]; None when no keypoint was found
    width: int
    height: int
    corners: int = 0  # keypoints found at FAST, before the retry at FAST_RETRY: how textured the image is

    @property
    def count(self) -> int:
        return 0 if self.descriptors is None else len(self.descriptors)


@dataclasses.dataclass(frozen=True, slots=True)
class Evidence:
    inliers: int  # matches consistent with one homography
    coverage: float  # area of the inliers' convex hull, as a share of the image, the smaller of the two images'
    matches: int  # matches that passed the ratio test

    @classmethod
    def none(cls, matches: int = 0) -> Evidence:
        return cls(inliers=0, coverage=0.0, matches=matches)


def _working_size(width: int, height: int) -> tuple[int, int]:
    longest = max(width, height)
    scale = min(max(1.0, MIN_SIDE / longest), MAX_SIDE / longest) if longest else 1.0
    return max(1, round(width * scale)), max(1, round(height * scale))


def extract(grey: np.ndarray, *, mirrored: bool = False) -> Features:
    """ORB features of a uint8 [H, W] image (left-right mirrored first when ``mirrored``)."""
    image = np.ascontiguousarray(grey[:, ::-1] if mirrored else grey)
    height, width = image.shape[:2]
    size = _working_size(width, height)
    if size != (width, height):
        interpolation = cv2.INTER_AREA if size[0] < width else cv2.INTER_LINEAR
        image = cv2.resize(image, size, interpolation=interpolation)
    keypoints, descriptors = _detector(FAST).detectAndCompute(image, None)  # type: ignore[call-overload]
    corners = len(keypoints)
    if corners < RETRY_BELOW:
        keypoints, descriptors = _detector(FAST_RETRY).detectAndCompute(image, None)  # type: ignore[call-overload]
    points = np.array([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
    return Features(points=points, descriptors=descriptors, width=size[0], height=size[1], corners=corners)


def featureless(query: Features, stored: Features) -> bool:
    """Too little texture on one side for its local features to confirm or refute a copy."""
    return min(query.corners, stored.corners) < MIN_CORNERS


def match(query: Features, stored: Features) -> Evidence:
    """How well one homography maps the query's keypoints onto the stored image's."""
    if query.descriptors is None or stored.descriptors is None or query.count < 2 or stored.count < 2:
        return Evidence.none()
    pairs = _matcher().knnMatch(query.descriptors, stored.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < 4:
        return Evidence.none(len(good))
    source = query.points[[m.queryIdx for m in good]]
    target = stored.points[[m.trainIdx for m in good]]
    _, mask = cv2.findHomography(source, target, cv2.RANSAC, RANSAC_PX)
    if mask is None:
        return Evidence.none(len(good))
    inlier = mask.ravel().astype(bool)
    count = int(inlier.sum())
    if count < 4:
        return Evidence(inliers=count, coverage=0.0, matches=len(good))
    coverage = min(
        _hull_share(source[inlier], query.width, query.height),
        _hull_share(target[inlier], stored.width, stored.height),
    )
    return Evidence(inliers=count, coverage=coverage, matches=len(good))


def _hull_share(points: np.ndarray, width: int, height: int) -> float:
    hull = cv2.convexHull(points.reshape(-1, 1, 2))
    return float(cv2.contourArea(hull)) / float(width * height)


# cv2 detector and matcher objects are not safe to share between threads: one of each per thread.
_local = threading.local()


def _detector(fast: int) -> cv2.ORB:
    detectors = getattr(_local, "orb", None)
    if detectors is None:
        detectors = _local.orb = {}
    detector = detectors.get(fast)
    if detector is None:
        detector = detectors[fast] = cv2.ORB_create(  # type: ignore[attr-defined]
            nfeatures=N_FEATURES, fastThreshold=fast)
    return detector


def _matcher() -> cv2.BFMatcher:
    matcher = getattr(_local, "bf", None)
    if matcher is None:
        matcher = _local.bf = cv2.BFMatcher(cv2.NORM_HAMMING)
    return matcher
