"""Choose the model's default decision on the calibration split, for a stated false-alarm budget at 1M images.

Searched: the band [lo, hi) and the evidence rule (min inliers, min coverage); K (candidates verified per query)
is fixed. Kept: the rule with the best recall whose precision on the calibration split is at least MIN_PRECISION
and whose modelled false-alarm rate per query at BUDGET_SIZE indexed images (falsealarm.py) is within BUDGET.
The threshold reported with it (and used, with cosine alone, for collections stored before signatures existed) is
the lowest cosine whose modelled false-alarm rate alone meets the budget, kept inside the band. Nothing here looks
at the test split.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Mapping, Sequence

import numpy as np
from dedup_server.verification.rule import VerificationRule

from . import falsealarm
from .evidence import MAX_PER_QUERY, PairEvidence
from .runner import QueryResult

logger = logging.getLogger(__name__)

BUDGET = 0.01  # false alarms per query of an unrelated image ...
BUDGET_SIZE = 1_000_000  # ... at this many indexed images
MIN_PRECISION = 0.998
MAX_CANDIDATES = 3

LOWS = tuple(round(x, 3) for x in np.arange(0.35, 0.701, 0.025))
HIGHS = tuple(round(x, 3) for x in np.arange(0.60, 0.9751, 0.025))
MIN_INLIERS = (8, 12, 16, 20, 25, 30)
MIN_COVERAGE = (0.02, 0.05)


@dataclasses.dataclass(frozen=True)
class Choice:
    threshold: float
    lo: float
    hi: float
    rule: VerificationRule
    precision: float  # on the calibration split
    recall: float
    false_alarm_1m: float  # modelled, point estimate
    meets_budget: bool

    @classmethod
    def served(cls, threshold: float, rule: VerificationRule) -> Choice:
        """The server's own calibration, when this run does not calibrate (calibration-split numbers unknown)."""
        nan = float("nan")
        return cls(threshold=threshold, lo=threshold - rule.below, hi=threshold + rule.above, rule=rule,
                   precision=nan, recall=nan, false_alarm_1m=nan, meets_budget=False)


def _passes(pair: PairEvidence | None, min_inliers: int, min_coverage: float) -> bool:
    if pair is None:
        return False
    return any(e.inliers >= min_inliers and e.coverage >= min_coverage for e in (pair.plain, pair.mirrored))


def choose(
    results: Sequence[QueryResult], table: Mapping[tuple[str, str], PairEvidence], pairs: falsealarm.UnrelatedPairs,
) -> Choice:
    rules = list(itertools.product(MIN_INLIERS, MIN_COVERAGE))
    # Per query: its nearest candidates (sim, correct, passes per rule), best first.
    compact = []
    for r in results:
        rows = []
        for c in r.candidates[:MAX_PER_QUERY]:
            pair = table.get((r.id, c.id))
            rows.append((c.similarity, c.id == r.expected, tuple(_passes(pair, m, cov) for m, cov in rules)))
        compact.append(rows)
    positives = sum(1 for r in results if r.expected is not None)
    # Unrelated pairs with evidence, for q.
    unrelated = [(r.id, c.id, c.similarity) for r in results for c in r.candidates[:MAX_PER_QUERY]
                 if c.id != r.expected and (r.id, c.id) in table]
    u_sims = np.array([s for _, _, s in unrelated])
    u_pass = np.array([[_passes(table[(q, c)], m, cov) for m, cov in rules] for q, c, _ in unrelated]).reshape(
        len(unrelated), len(rules))
    tail = falsealarm.fit_tail(pairs.similarities, pairs.total)
    best: tuple[tuple[bool, float, float], Choice] | None = None
    for lo, hi in itertools.product(LOWS, HIGHS):
        if lo >= hi:
            continue
        p_hi = tail.survival(hi, pairs.similarities)
        p_band = max(0.0, tail.survival(lo, pairs.similarities) - p_hi)
        in_band = (u_sims >= lo) & (u_sims < hi)
        for index, (m, cov) in enumerate(rules):
            tp = fp = 0
            for rows in compact:
                verified = 0
                for similarity, correct, passed in rows:
                    if similarity >= hi:
                        match = True
                    elif similarity >= lo and verified < MAX_CANDIDATES:
                        verified += 1
                        match = passed[index]
                    elif similarity >= lo:
                        continue
                    else:
                        break
                    if match:
                        if correct:
                            tp += 1
                        else:
                            fp += 1
                        break
            precision = tp / (tp + fp) if tp + fp else 1.0
            recall = tp / positives if positives else 1.0
            band_pairs = int(in_band.sum())
            q = float(u_pass[in_band, index].sum()) / band_pairs if band_pairs else 0.0
            rate = falsealarm.FalseAlarmModel.rate(BUDGET_SIZE, p_hi, p_band, q, MAX_CANDIDATES)
            meets = rate <= BUDGET and precision >= MIN_PRECISION
            # Among rules that meet everything: best recall, then the fewest false alarms; else the best balance.
            key = (meets, recall if meets else recall * precision - rate, -rate)
            if best is None or key > best[0]:
                rule = VerificationRule(min_inliers=m, min_coverage=cov, max_candidates=MAX_CANDIDATES)
                best = (key, Choice(threshold=hi, lo=lo, hi=hi, rule=rule, precision=precision, recall=recall,
                                    false_alarm_1m=rate, meets_budget=meets))
    if best is None:
        raise ValueError("no band to choose from")
    chosen = best[1]
    lo, hi = chosen.lo, chosen.hi
    threshold = _cosine_threshold(tail, pairs, lo, hi)
    rule = dataclasses.replace(chosen.rule, below=round(threshold - lo, 4), above=round(hi - threshold, 4))
    logger.info("calibrated: threshold %.4f, band [%.3f, %.3f), rule %s; calibration precision %.4f recall %.4f, "
                "modelled false alarms at 1M %.4f", threshold, lo, hi, rule, chosen.precision, chosen.recall,
                chosen.false_alarm_1m)
    return dataclasses.replace(chosen, threshold=threshold, rule=rule)


def _cosine_threshold(tail: falsealarm.TailFit, pairs: falsealarm.UnrelatedPairs, lo: float, hi: float) -> float:
    """The lowest cosine meeting the budget alone, clamped into [lo, hi]."""
    for t in np.arange(lo, hi + 1e-9, 0.0025):
        p_pair = tail.survival(float(t), pairs.similarities)
        if falsealarm.FalseAlarmModel.rate(BUDGET_SIZE, p_pair, 0.0, 0.0, 0) <= BUDGET:
            return round(float(t), 4)
    return round(hi, 4)
