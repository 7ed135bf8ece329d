"""Default duplicate thresholds per embedding model, with where each number comes from.

A threshold only means something for the model it was measured on: cosine similarities of
ResNet-50 and EfficientNet-Lite0 features live on different scales.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class Calibration:
    threshold: float
    source: str


_CALIBRATED: dict[str, Calibration] = {
    # Measured through the real API on ../shared/eval base photos and seeded copies (scale 25-50 %,
    # crop 80 %, brightness +-40 %, grayscale, JPEG q20, hflip, 8 deg rotation) against the other
    # photos as distractors; see tests/integration/test_end_to_end.py and the closing note of issue 2.
    "efficientnet_lite0-imagenet": Calibration(
        threshold=0.80,
        source="provisional: midpoint of min same-photo cosine and max different-photo cosine on ../shared/eval (issue 2)",
    ),
    "resnet50-imagenet1k_v1": Calibration(
        threshold=0.85,
        source="provisional: not yet measured on this model (no weights offline); re-run the evaluation",
    ),
}

_UNCALIBRATED = Calibration(threshold=0.85, source="uncalibrated default for an unknown model")


def calibrated_threshold(model_name: str, configured: float) -> Calibration:
    """The configured threshold when set (DEDUP_THRESHOLD), else the model's calibrated one."""
    if configured > 0:
        return Calibration(threshold=configured, source="DEDUP_THRESHOLD")
    return _CALIBRATED.get(model_name, _UNCALIBRATED)
