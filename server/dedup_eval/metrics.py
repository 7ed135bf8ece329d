"""Precision, recall and false alarms of duplicate decisions, and the threshold chosen from them.

A query is a positive when it is a copy of an indexed photo. A decision is a true positive only when it says
"duplicate" AND its best match is the right photo; a duplicate answer naming the wrong photo counts as a false
positive (and the copy as missed). Any duplicate answer to a distractor is a false alarm (a false positive).

Match precision is stricter: every match listed in an answer (not only the best) must be the right photo. It is
what FindDuplicateGroups depends on, since one wrong pair merges two groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
from dedup_server.decision import decide as server_decide
from dedup_server.decision import to_verify
from dedup_server.flip import FlipPolicy
from dedup_server.index import Hit
from dedup_server.verification.rule import VerificationRule

from .evidence import PairEvidence, verified_for
from .runner import QueryResult

# A decision for one query: the ids it matched, best first (empty: not a duplicate).
Decide = Callable[[QueryResult], Sequence[str]]


@dataclasses.dataclass(frozen=True)
class Quality:
    threshold: float | None
    queries: int
    positives: int
    distractor_queries: int
    true_positives: int
    false_positives: int
    wrong_matches: int  # copies matched to the wrong photo
    false_alarms: int  # distractor queries that matched anything
    wrong_listed_matches: int  # matches listed anywhere in an answer that are not the photo copied
    precision: float
    match_precision: float
    recall: float
    f1: float
    recall_by_transform: dict[str, float]
    false_alarms_by_transform: dict[str, int]
    missed: list[str]  # query ids of copies not found (or found as the wrong photo)
    false_positive_ids: list[str]

    def summary(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def at_threshold(threshold: float) -> Decide:
    """Decide from the raw similarities, as the server would at ``threshold``."""

    def decide(result: QueryResult) -> Sequence[str]:
        return [c.id for c in result.candidates if c.similarity >= threshold]

    return decide


def verified_decision(
    threshold: float, rule: VerificationRule, table: Mapping[tuple[str, str], PairEvidence],
    within: frozenset[str] | None = None,
) -> Decide:
    """Decide as the server does with verification (decision.decide on the harness's own evidence); ``within``:
    as if the collection held only these photos."""

    def decide_one(result: QueryResult) -> Sequence[str]:
        lowest = threshold - rule.below
        hits = [Hit(id=c.id, similarity=c.similarity, metadata={}, framed=c.framed) for c in result.candidates
                if c.similarity >= lowest and (within is None or c.id in within)]
        verified = verified_for(result, to_verify(hits, threshold, rule), table, rule)
        return [h.id for h in server_decide(hits, "", FlipPolicy.DEFAULT, threshold, len(hits) or 1, rule=rule,
                                            verified=verified)]

    return decide_one


def server_decision(result: QueryResult) -> Sequence[str]:
    return result.decided


def server_decision_mirrors_distinct(result: QueryResult) -> Sequence[str]:
    return result.decided_mirrors_distinct


def quality(results: Sequence[QueryResult], decide: Decide, *, threshold: float | None = None) -> Quality:
    tp = fp = wrong = alarms = listed = listed_wrong = 0
    missed: list[str] = []
    fp_ids: list[str] = []
    found: dict[str, list[bool]] = {}
    alarms_by: dict[str, int] = {}
    for result in results:
        matched = decide(result)
        duplicate, match = bool(matched), (matched[0] if matched else None)
        listed += len(matched)
        listed_wrong += sum(1 for m in matched if m != result.expected)
        if result.expected is None:
            alarms_by.setdefault(result.transform, 0)
            if duplicate:
                fp += 1
                alarms += 1
                alarms_by[result.transform] += 1
                fp_ids.append(result.id)
            continue
        hit = duplicate and match == result.expected
        found.setdefault(result.transform, []).append(hit)
        if hit:
            tp += 1
        else:
            missed.append(result.id)
            if duplicate:
                fp += 1
                wrong += 1
                fp_ids.append(result.id)
    positives = sum(len(v) for v in found.values())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / positives if positives else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Quality(
        threshold=threshold, queries=len(results), positives=positives,
        distractor_queries=len(results) - positives, true_positives=tp, false_positives=fp, wrong_matches=wrong,
        false_alarms=alarms, wrong_listed_matches=listed_wrong, precision=precision,
        match_precision=(listed - listed_wrong) / listed if listed else 1.0, recall=recall, f1=f1,
        recall_by_transform={name: sum(hits) / len(hits) for name, hits in found.items()},
        false_alarms_by_transform=alarms_by, missed=missed, false_positive_ids=fp_ids,
    )


def curve(results: Sequence[QueryResult], thresholds: Iterable[float]) -> list[tuple[float, float, float]]:
    """(threshold, precision, recall) along a sweep."""
    points = []
    for t in thresholds:
        q = quality(results, at_threshold(t), threshold=t)
        points.append((t, q.precision, q.recall))
    return points


def sweep_grid() -> np.ndarray:
    return np.round(np.arange(0.20, 0.995, 0.0025), 4)
