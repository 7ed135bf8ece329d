"""Ranking metrics over all queries, one prediction each (DISC21's micro-AP protocol).

Each query predicts one photo: the service's best match when it answered "duplicate", else its nearest photo.
Predictions are ranked so that every answer the service calls a duplicate comes before every one it does not,
then by similarity. Walking down that list, a prediction is correct when it names the photo the query copies
(distractors have none, so they are never correct). micro-AP is the area under the resulting precision-recall
curve over all copies; recall at precision p is the largest recall of any prefix whose precision is at least p.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .runner import QueryResult


@dataclasses.dataclass(frozen=True, slots=True)
class Prediction:
    duplicate: bool
    similarity: float
    correct: bool


def predictions(results: Sequence[QueryResult], decided: Sequence[Sequence[str]]) -> list[Prediction]:
    """One per query: ``decided`` is each query's matched ids (best first) under the decision being ranked."""
    out = []
    for result, matched in zip(results, decided, strict=True):
        similarities = {c.id: c.similarity for c in result.candidates}
        if matched:
            best = matched[0]
            similarity = similarities.get(best, result.decided_similarity)
        else:
            best = result.candidates[0].id if result.candidates else ""
            similarity = result.candidates[0].similarity if result.candidates else 0.0
        out.append(Prediction(duplicate=bool(matched), similarity=similarity,
                              correct=result.expected is not None and best == result.expected))
    return out


def _ranked(preds: Sequence[Prediction]) -> list[Prediction]:
    return sorted(preds, key=lambda p: (not p.duplicate, -p.similarity))


def micro_ap(preds: Sequence[Prediction], positives: int) -> float:
    """Average precision over the ranked predictions; ``positives``: copies in the benchmark (the recall base)."""
    if positives == 0:
        return 1.0
    hits, total = 0, 0.0
    for rank, prediction in enumerate(_ranked(preds), start=1):
        if prediction.correct:
            hits += 1
            total += hits / rank
    return total / positives


def recall_at_precision(preds: Sequence[Prediction], positives: int, precision: float) -> float:
    best, hits = 0.0, 0
    for rank, prediction in enumerate(_ranked(preds), start=1):
        hits += prediction.correct
        if hits / rank >= precision:
            best = max(best, hits / positives if positives else 1.0)
    return best
