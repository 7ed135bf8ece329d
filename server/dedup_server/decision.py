"""The answer for one query: which candidates are duplicates, best first.

Cosine decides outside the verification band around the threshold; inside it, the geometric evidence does
(verification/rule.py), unless one side is featureless (verifier.py): then the cosine against the threshold does.
Then the flip policy: a match is mirrored when its verification matched the mirrored query, or else when the
layouts say so (layout.py); MIRROR_IS_DISTINCT drops mirrored matches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Final

from .flip import FlipPolicy
from .index import Hit
from .layout import is_mirror
from .verification.rule import VerificationRule
from .verification.verifier import Verified, weighed

#: No band: cosine alone decides (collections checked with cosine_only, or a model with no calibrated band).
COSINE_ONLY: Final = VerificationRule()


def _best_per_id(hits: Sequence[Hit]) -> list[Hit]:
    """One hit per id, its highest similarity; on a tie the whole image's (framed=False) rather than the framed
    photo's."""
    best: dict[str, Hit] = {}
    for hit in hits:
        known = best.get(hit.id)
        if known is None or hit.similarity > known.similarity or (
            hit.similarity == known.similarity and known.framed and not hit.framed
        ):
            best[hit.id] = hit
    return sorted(best.values(), key=lambda h: h.similarity, reverse=True)


#: A cosine this high is the same model input (float32 rounding keeps identical vectors within 1e-6 of 1): a byte
#: copy or a re-encode. Such a candidate is still verified, but it does not use up one of the rule's max_candidates:
#: with K = 1 the identical twin of a stored image would otherwise take the only verification, and the copies of
#: both (say a mirrored copy and its own twin) would never be joined in duplicate groups.
IDENTICAL: Final = 0.9999


def is_twin(similarity: float, *, framed: bool) -> bool:
    """An identical candidate (IDENTICAL): verified beside the rule's max_candidates, not among them. A framed
    candidate is a partial view, never a twin."""
    return similarity >= IDENTICAL and not framed


def to_verify(hits: Sequence[Hit], threshold: float, rule: VerificationRule) -> list[str]:
    """The ids whose decision needs local features: in the band, best first; at most rule.max_candidates of them,
    not counting identical candidates (IDENTICAL)."""
    if not rule.enabled:
        return []
    chosen, counted = [], 0
    for hit in _best_per_id(hits):
        if not rule.in_band(hit.similarity, threshold, framed=hit.framed):
            continue
        identical = is_twin(hit.similarity, framed=hit.framed)
        if not identical and counted == rule.max_candidates:
            break
        chosen.append(hit.id)
        counted += not identical
    return chosen


def decide(
    hits: Sequence[Hit], query_layout: str, policy: FlipPolicy, threshold: float, top_k: int, *,
    rule: VerificationRule = COSINE_ONLY, verified: Mapping[str, Verified] | None = None,
) -> list[Hit]:
    """The matches under ``rule`` and ``policy``, best first, one per id, at most top_k.

    ``verified``: the evidence found for the ids `to_verify` named; a band candidate without evidence (beyond
    rule.max_candidates) is then not a duplicate. None: the collection keeps no signatures (created before them),
    so band candidates are decided by the cosine against the threshold, as before verification existed.
    """
    matches = []
    for hit in _best_per_id(hits):
        found = verified.get(hit.id) if verified is not None else None
        if verified is not None and found is None and rule.in_band(hit.similarity, threshold, framed=hit.framed):
            continue
        if not rule.is_duplicate(hit.similarity, threshold, weighed(found, framed=hit.framed), framed=hit.framed):
            continue
        passed = found is not None and rule.passes(found.evidence)
        mirrored = found.mirrored if passed and found is not None else is_mirror(query_layout, hit.layout)
        if mirrored and policy is FlipPolicy.MIRROR_IS_DISTINCT:
            continue
        matches.append(dataclasses.replace(
            hit, mirrored=mirrored, verified=passed, inliers=found.evidence.inliers if found else 0,
        ))
        if len(matches) == top_k:
            break
    return matches
