"""The decision for one candidate: cosine alone outside the band around the threshold, local features inside it.

    similarity >= threshold + above            duplicate (copies this close are never look-alikes: calibrated)
    threshold - below <= similarity < ...     verified: a duplicate iff the geometric evidence passes the rule
    similarity < threshold - below             not a duplicate

So verification can both reject a look-alike above the threshold and accept a real copy below it. A candidate in
the band with no signature (stored before signatures existed) is decided by the cosine against the threshold, as
before. A *framed* candidate (found through the photo inside the query's frame, framing.py) has no top to its
band: a partial view is never enough on cosine alone, so it is verified however high it scores; this also keeps
the extra view out of the false-alarm model's accepted-alone term. The band and the evidence rule are calibrated
per model by `make eval CALIBRATE=1` (thresholds.py).
"""

from __future__ import annotations

import dataclasses
import enum

from .geometry import Evidence


class Verdict(enum.Enum):
    ACCEPTED = "accepted"  # above the band: a duplicate on cosine alone
    VERIFIED = "verified"  # in the band, and the local features agree
    REJECTED = "rejected"  # in the band, and they do not
    UNVERIFIABLE = "unverifiable"  # in the band, no signature: the cosine against the threshold decided
    BELOW = "below"  # under the band: not a duplicate


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerificationRule:
    below: float = 0.0  # the band reaches this far under the threshold
    above: float = 0.0  # and this far over it; (0, 0): no band, cosine alone decides
    min_inliers: int = 20
    min_coverage: float = 0.05  # share of both images the inliers' hull must cover (collapsed homographies)
    max_candidates: int = 3  # candidates verified per query, best first: bounds the cost and the false alarms

    def __post_init__(self) -> None:
        if self.below < 0 or self.above < 0 or self.min_inliers < 4 or not 0 <= self.min_coverage < 1:
            raise ValueError(f"invalid verification rule: {self}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be at least 1: {self}")

    @property
    def enabled(self) -> bool:
        return self.below > 0 or self.above > 0

    def in_band(self, similarity: float, threshold: float, *, framed: bool = False) -> bool:
        if not self.enabled or similarity < threshold - self.below:
            return False
        return framed or similarity < threshold + self.above

    def passes(self, evidence: Evidence) -> bool:
        return evidence.inliers >= self.min_inliers and evidence.coverage >= self.min_coverage

    def verdict(
        self, similarity: float, threshold: float, evidence: Evidence | None, *, framed: bool = False
    ) -> Verdict:
        """``evidence``: None when the candidate could not be verified (no signature, or not among the verified)."""
        if similarity >= threshold + self.above and not (framed and self.enabled):
            return Verdict.ACCEPTED
        if similarity < threshold - self.below:
            return Verdict.BELOW
        if evidence is None:
            return Verdict.UNVERIFIABLE
        return Verdict.VERIFIED if self.passes(evidence) else Verdict.REJECTED

    def is_duplicate(
        self, similarity: float, threshold: float, evidence: Evidence | None, *, framed: bool = False
    ) -> bool:
        verdict = self.verdict(similarity, threshold, evidence, framed=framed)
        if verdict is Verdict.UNVERIFIABLE:
            return similarity >= threshold
        return verdict in (Verdict.ACCEPTED, Verdict.VERIFIED)
