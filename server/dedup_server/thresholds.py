"""Default duplicate thresholds per embedding model, with the quality each was measured at.

A threshold only means something for the model it was measured on: cosine similarities of ResNet-50 and
EfficientNet-Lite0 features live on different scales. `make eval CALIBRATE=1` chooses a model's threshold on the
benchmark's calibration split, measures it on the held-out test split and records both in calibrations.json
(shipped with the server); GetStats reports them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Final

from .verification.rule import VerificationRule

CALIBRATIONS_PATH: Final = Path(__file__).with_name("calibrations.json")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CalibrationRecord:
    """What the evaluation harness measured at a model's default threshold, on held-out data."""

    model: str
    model_version: str  # the served model file it was measured with
    threshold: float
    dataset: str
    precision: float
    recall: float
    f1: float
    match_precision: float
    queries: int
    distractor_queries: int
    false_alarms: int
    measured_at: str
    # The verification band and rule (verification/rule.py), chosen with the threshold; 0: no band.
    verify_below: float = 0.0
    verify_above: float = 0.0
    verify_min_inliers: int = 20
    verify_min_coverage: float = 0.05
    verify_max_candidates: int = 3
    # From the benchmark report's false-alarm model: expected share of unrelated queries matching something among
    # 1M indexed images, and its 95 % interval; and what the harness measured besides precision and recall.
    false_alarm_rate_1m: float = 0.0
    false_alarm_rate_1m_low: float = 0.0
    false_alarm_rate_1m_high: float = 0.0
    micro_ap: float = 0.0
    recall_at_precision_99: float = 0.0
    recall_at_precision_999: float = 0.0
    bytes_per_image: int = 0

    def rule(self) -> VerificationRule:
        return VerificationRule(
            below=self.verify_below, above=self.verify_above, min_inliers=self.verify_min_inliers,
            min_coverage=self.verify_min_coverage, max_candidates=self.verify_max_candidates,
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class Calibration:
    threshold: float
    source: str
    record: CalibrationRecord | None = None  # None when not measured (provisional or set by DEDUP_THRESHOLD)
    # The verification band around whichever threshold a request applies (the model's calibrated one; no band
    # for an uncalibrated model).
    rule: VerificationRule = VerificationRule()


# Models with no measurement yet. ResNet-50 weights are not available offline, so it was never evaluated.
_PROVISIONAL: Final[dict[str, Calibration]] = {
    "resnet50-imagenet1k_v1": Calibration(
        threshold=0.85,
        source="provisional: not yet measured on this model (no weights offline); run make eval CALIBRATE=1",
    ),
}
_UNCALIBRATED: Final = Calibration(threshold=0.85, source="uncalibrated default for an unknown model")


@functools.cache
def _records(path: Path = CALIBRATIONS_PATH) -> dict[str, CalibrationRecord]:
    if not path.is_file():
        return {}
    return {name: CalibrationRecord(**fields) for name, fields in json.loads(path.read_text()).items()}


def write_record(record: CalibrationRecord, path: Path = CALIBRATIONS_PATH) -> None:
    """Add or replace the record of ``record.model`` (used by the evaluation harness)."""
    records = dict(_records(path))
    records[record.model] = record
    payload = {name: dataclasses.asdict(r) for name, r in sorted(records.items())}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    _records.cache_clear()


def calibrated_threshold(model_name: str, configured: float) -> Calibration:
    """The configured threshold when set (DEDUP_THRESHOLD), else the model's calibrated one."""
    record = _records().get(model_name)
    rule = record.rule() if record is not None else VerificationRule()
    if configured > 0:
        return Calibration(threshold=configured, source="DEDUP_THRESHOLD", rule=rule)
    if record is not None:
        return Calibration(
            threshold=record.threshold,
            source=f"calibrated by make eval on {record.dataset} ({record.measured_at})",
            record=record, rule=rule,
        )
    return _PROVISIONAL.get(model_name, _UNCALIBRATED)
