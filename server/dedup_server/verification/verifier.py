"""Verify candidates against a query: which of them share the query's geometry (or its mirror's).

Blocking (OpenCV, which releases the GIL): the service calls it from a worker thread. The query's features are
extracted once; those of the photo inside its frame (framing.py: a screenshot's photo, without the UI's corners,
which take most of the 500 features otherwise) only when a candidate fails on the whole query; its mirrored
features only when that fails too, since ORB descriptors are not mirror-invariant while pooled embeddings are.
When nothing passes and one side has too little texture for local features to speak
(geometry.featureless), the answer says so, and the cosine decides (decision.py).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Mapping

import numpy as np

from . import geometry
from .geometry import Evidence, Features
from .rule import VerificationRule
from .signature import signature_pixels


@dataclasses.dataclass(frozen=True, slots=True)
class Verified:
    evidence: Evidence
    mirrored: bool  # the evidence came from the mirrored query
    featureless: bool = False  # nothing passed, and one side has too few corners for that to mean anything


class QueryFeatures:
    """The query's features, extracted on first use (most checks have no candidate in the band); candidates may be
    verified from several threads at once, so the extraction is guarded."""

    def __init__(self, thumbnail: np.ndarray, framed: np.ndarray | None = None) -> None:
        self._thumbnail = thumbnail
        self._framed_thumbnail = framed if framed is not None and framed.size > 0 else None
        self._plain: Features | None = None
        self._framed: Features | None = None
        self._mirrored: Features | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self._thumbnail.size > 0

    def plain(self) -> Features:
        with self._lock:
            if self._plain is None:
                self._plain = geometry.extract(self._thumbnail)
            return self._plain

    def framed(self) -> Features | None:
        """The framed photo's features; None when the query shows no frame."""
        if self._framed_thumbnail is None:
            return None
        with self._lock:
            if self._framed is None:
                self._framed = geometry.extract(self._framed_thumbnail)
            return self._framed

    def mirrored(self) -> Features:
        with self._lock:
            if self._mirrored is None:
                self._mirrored = geometry.extract(self._thumbnail, mirrored=True)
            return self._mirrored


def verify(
    query: QueryFeatures, signatures: Mapping[str, str], rule: VerificationRule
) -> dict[str, Verified]:
    """Evidence for each candidate id that has a readable signature (the others are left out: unverifiable)."""
    verified: dict[str, Verified] = {}
    if not query.available:
        return verified
    for candidate_id, signature in signatures.items():
        pixels = signature_pixels(signature)
        if pixels is None:
            continue
        stored = geometry.extract(pixels)
        plain = query.plain()
        verified[candidate_id] = choose(
            geometry.match(plain, stored), functools.partial(_match_framed, query, stored),
            functools.partial(_match_mirrored, query, stored), rule,
            featureless=geometry.featureless(plain, stored),
        )
    return verified


def _match_framed(query: QueryFeatures, stored: Features) -> Evidence:
    features = query.framed()
    return Evidence.none() if features is None else geometry.match(features, stored)


def _match_mirrored(query: QueryFeatures, stored: Features) -> Evidence:
    return geometry.match(query.mirrored(), stored)


def weighed(found: Verified | None, *, framed: bool) -> Evidence | None:
    """The evidence the rule weighs for a band candidate (rule.VerificationRule.is_duplicate): None, so that the
    cosine against the threshold decides as for an unsigned candidate, when there is none or local features could
    say nothing (one side featureless); a framed candidate, a partial view, never goes on cosine alone, so it keeps
    its failing evidence."""
    if found is None or (found.featureless and not framed):
        return None
    return found.evidence


def choose(
    plain: Evidence, framed: Callable[[], Evidence], mirrored: Callable[[], Evidence], rule: VerificationRule, *,
    featureless: bool = False,
) -> Verified:
    """The evidence that decides: the whole query's when it passes, else its framed photo's when that passes,
    else the mirrored query's when that passes (a mirrored copy), else the strongest (reported, not passing;
    marked ``featureless``, for the cosine to decide, when one side has too little texture)."""
    if rule.passes(plain):
        return Verified(evidence=plain, mirrored=False)
    inner = framed()
    if rule.passes(inner):
        return Verified(evidence=inner, mirrored=False)
    flipped = mirrored()
    if rule.passes(flipped):
        return Verified(evidence=flipped, mirrored=True)
    strongest = max((plain, inner, flipped), key=lambda evidence: evidence.inliers)
    return Verified(evidence=strongest, mirrored=False, featureless=featureless)
