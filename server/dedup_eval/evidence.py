"""Geometric evidence for (query, candidate) pairs, computed here exactly as the server computes it.

Calibration tries many bands and inlier rules; asking the server for each would mean re-running every query.
Instead the harness rebuilds what the server stores (the same decode, thumbnail and signature code) and what it
extracts from a query, and keeps, for every pair the calibration could ever verify (cosine >= EVIDENCE_FLOOR,
nearest MAX_PER_QUERY), the evidence of the query and of its mirror. `decision.decide` then runs on it unchanged.
The official test numbers still come from the server's own answers; this only chooses, models and explains them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from dedup_server.decode import DecodeLimits, decode_with_thumbnail
from dedup_server.verification import geometry, signature
from dedup_server.verification.geometry import Evidence, Features
from dedup_server.verification.rule import VerificationRule
from dedup_server.verification.verifier import Verified, choose, weighed
from tqdm import tqdm

from .benchmark import Split
from .runner import QueryResult

logger = logging.getLogger(__name__)

EVIDENCE_FLOOR = 0.35  # no band calibrate.py tries reaches below this cosine
MAX_PER_QUERY = 5  # the verified candidates (rule.max_candidates) and the ones above the band before them
_LIMITS = DecodeLimits()


@dataclasses.dataclass(frozen=True, slots=True)
class PairEvidence:
    plain: Evidence
    mirrored: Evidence
    framed: Evidence = Evidence.none()  # the framed photo's (framing.py); none when the query shows no frame
    featureless: bool = False  # geometry.featureless: nothing that fails here counts against the copy

    def verified(self, rule: VerificationRule) -> Verified:
        return choose(self.plain, lambda: self.framed, lambda: self.mirrored, rule, featureless=self.featureless)

    def accepted(self, rule: VerificationRule, similarity: float, threshold: float, *, framed: bool) -> bool:
        """Whether the server would call this band pair a duplicate (decision.py's rule, on this evidence)."""
        return rule.is_duplicate(similarity, threshold, weighed(self.verified(rule), framed=framed), framed=framed)


def _stored(data: bytes) -> Features:
    decoded = decode_with_thumbnail(data, _LIMITS, grey=True, thumbnail_side=signature.SIDE)
    pixels = signature.signature_pixels(signature.make_signature(decoded.thumbnail))
    if pixels is None:
        raise RuntimeError("a benchmark photo produced no signature")
    return geometry.extract(pixels)


def compute(split: Split, results: Sequence[QueryResult], *, workers: int = 2) -> dict[tuple[str, str], PairEvidence]:
    """(query id, candidate id) -> evidence, for the pairs any calibrated rule could verify."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        originals = dict(split.originals)
        stored = dict(zip(originals, pool.map(_stored, originals.values()), strict=True))
        images = {query.id: query.image for query in split.queries}

        def one(result: QueryResult) -> dict[tuple[str, str], PairEvidence]:
            pairs = [c.id for c in result.candidates if c.similarity >= EVIDENCE_FLOOR][:MAX_PER_QUERY]
            if not pairs:
                return {}
            data = images[result.id]
            decoded = decode_with_thumbnail(data, _LIMITS, grey=True, thumbnail_side=signature.SIDE, framed=True)
            plain = geometry.extract(decoded.thumbnail)
            mirrored = geometry.extract(decoded.thumbnail, mirrored=True)
            framed = None if decoded.framed_thumbnail is None else geometry.extract(decoded.framed_thumbnail)
            return {
                (result.id, cid): PairEvidence(
                    geometry.match(plain, stored[cid]), geometry.match(mirrored, stored[cid]),
                    Evidence.none() if framed is None else geometry.match(framed, stored[cid]),
                    geometry.featureless(plain, stored[cid]),
                )
                for cid in pairs
            }

        table: dict[tuple[str, str], PairEvidence] = {}
        for part in tqdm(pool.map(one, results), total=len(results), desc=f"{split.name} evidence", unit="query"):
            table.update(part)
    logger.info("%s: geometric evidence for %d pairs", split.name, len(table))
    return table


def verified_for(
    result: QueryResult, ids: Sequence[str], table: Mapping[tuple[str, str], PairEvidence], rule: VerificationRule
) -> dict[str, Verified]:
    """What the server's verify() would return for these candidate ids of one query."""
    found = {}
    for cid in ids:
        pair = table.get((result.id, cid))
        if pair is not None:
            found[cid] = pair.verified(rule)
    return found
