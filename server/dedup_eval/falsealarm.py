"""How often an unrelated image wrongly matches, as the collection grows: measured, and extrapolated by a model.

Model (stated in the report). A query of an image that is not in the collection is answered "duplicate" when some
unrelated stored image scores at or above the top of the verification band (hi), or when one of the (at most K)
band candidates verified passes the geometric rule. With N unrelated stored images, independent pairs:

    FA(N) = 1 - (1 - p_hi)^N * (1 - q)^min(K, N * p_band)

- p_hi = P(s >= hi) for an unrelated pair: the empirical survival of the unrelated-pair cosine up to u (its
  99th percentile), and beyond u the peaks-over-threshold model of extreme-value theory: a generalised Pareto
  distribution fitted to the exceedances by maximum likelihood (scipy). Its shape comes out negative here (a
  bounded tail, as a cosine's must be), so far enough out the point estimate is 0; the interval says how sure.
- p_band = P(lo <= s < hi) the same way; q = the share of unrelated band pairs whose evidence passes the rule.
- The 95 % interval: queries resampled with replacement (bootstrap, fixed seed) for p_hi and p_band, and the
  Wilson interval for q (Wilson's upper bound stays above 0 when no unrelated pair passed).
Measured: the same decision on random sub-collections of the indexed photos (several draws per size), for the
distractor queries, which have no copy in any of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy.stats import genpareto

from .runner import QueryResult

TAIL_QUANTILE = 0.99
BOOTSTRAP = 200
_SEED = 20261202


@dataclasses.dataclass(frozen=True)
class UnrelatedPairs:
    """Every unrelated (query, indexed photo) cosine the harness saw, and how many pairs there were in all."""

    similarities: np.ndarray  # float64, of pairs with similarity >= the raw threshold
    per_query: Sequence[np.ndarray]  # the same, grouped by query (for the bootstrap)
    pairs_per_query: Sequence[int]  # unrelated pairs of each query (indexed photos minus its own)
    # The same pairs without those whose similarity is the framed photo's (framing.py): such a pair is verified
    # however high it scores, so it never counts towards p_hi (accepted alone); it counts in the band, p_band.
    whole_per_query: Sequence[np.ndarray] = ()

    @property
    def total(self) -> int:
        return int(sum(self.pairs_per_query))

    def whole(self) -> UnrelatedPairs:
        """The pairs that can be accepted on cosine alone (every listed pair when none is framed)."""
        if not self.whole_per_query:
            return self
        return UnrelatedPairs(similarities=np.concatenate(self.whole_per_query), per_query=self.whole_per_query,
                              pairs_per_query=self.pairs_per_query)


def unrelated_pairs(results: Sequence[QueryResult], indexed: int) -> UnrelatedPairs:
    per_query, whole, counts = [], [], []
    for result in results:
        unrelated = [c for c in result.candidates if c.id != result.expected]
        per_query.append(np.array([c.similarity for c in unrelated]))
        whole.append(np.array([c.similarity for c in unrelated if not c.framed]))
        counts.append(indexed - (result.expected is not None))
    return UnrelatedPairs(similarities=np.concatenate(per_query) if per_query else np.zeros(0),
                          per_query=per_query, pairs_per_query=counts, whole_per_query=whole)


@dataclasses.dataclass(frozen=True)
class TailFit:
    threshold: float  # u
    exceed_share: float  # P(s >= u)
    shape: float  # of the generalised Pareto distribution of s - u given s > u (negative: bounded)
    scale: float
    total: int

    def survival(self, t: float, empirical: np.ndarray) -> float:
        """P(s >= t) for an unrelated pair."""
        if t > 1.0:
            return 0.0  # a cosine; 1.0 itself only for identical pixels
        if t <= self.threshold:
            return float((empirical >= t).sum()) / self.total
        z = (t - self.threshold) / self.scale
        if abs(self.shape) < 1e-9:
            return self.exceed_share * math.exp(-z)
        base = 1.0 + self.shape * z
        return self.exceed_share * base ** (-1.0 / self.shape) if base > 0 else 0.0


def fit_tail(similarities: np.ndarray, total: int) -> TailFit:
    # The quantile over *all* pairs: pairs below the raw threshold are not listed but count.
    ranked = np.sort(similarities)[::-1]
    k = max(10, int(round((1 - TAIL_QUANTILE) * total)))
    k = min(k, len(ranked) - 1) if len(ranked) > 1 else 0
    u = float(ranked[k]) if len(ranked) else 1.0
    excess = ranked[ranked > u] - u
    if len(excess) < 10:
        shape, scale = 0.0, float(excess.mean()) if len(excess) else 1e-3
    else:
        shape, _, scale = (float(v) for v in genpareto.fit(excess, floc=0.0))
    return TailFit(threshold=u, exceed_share=float((ranked >= u).sum()) / total, shape=shape,
                   scale=max(scale, 1e-4), total=total)


def wilson(passed: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    if trials == 0:
        return 0.0, 1.0
    p = passed / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclasses.dataclass(frozen=True)
class FalseAlarmModel:
    lo: float
    hi: float
    max_candidates: int
    p_hi: float
    p_band: float
    q: float
    q_interval: tuple[float, float]
    p_hi_interval: tuple[float, float]
    p_band_interval: tuple[float, float]
    band_pairs: int  # unrelated band pairs with evidence, q's sample
    band_passed: int
    tail: TailFit

    @staticmethod
    def rate(n: float, p_hi: float, p_band: float, q: float, k: int) -> float:
        verified = min(float(k), n * p_band)
        return 1.0 - math.exp(n * math.log1p(-min(p_hi, 1 - 1e-15)) + verified * math.log1p(-min(q, 1 - 1e-15)))

    def at(self, n: float) -> float:
        return self.rate(n, self.p_hi, self.p_band, self.q, self.max_candidates)

    def interval(self, n: float) -> tuple[float, float]:
        low = self.rate(n, self.p_hi_interval[0], self.p_band_interval[0], self.q_interval[0], self.max_candidates)
        high = self.rate(n, self.p_hi_interval[1], self.p_band_interval[1], self.q_interval[1], self.max_candidates)
        return low, high

    def summary(self, sizes: Sequence[int]) -> dict[str, object]:
        return {
            "model": "FA(N) = 1 - (1 - p_hi)^N * (1 - q)^min(K, N * p_band); generalised Pareto tail beyond u",
            "band": [self.lo, self.hi], "K": self.max_candidates,
            "p_hi": self.p_hi, "p_hi_95": list(self.p_hi_interval),
            "p_band": self.p_band, "p_band_95": list(self.p_band_interval),
            "q": self.q, "q_95": list(self.q_interval), "q_sample": [self.band_passed, self.band_pairs],
            "tail": dataclasses.asdict(self.tail),
            "expected": {str(n): {"rate": self.at(n), "95": list(self.interval(n))} for n in sizes},
        }


def model(
    pairs: UnrelatedPairs, *, lo: float, hi: float, max_candidates: int, band_passed: int, band_pairs: int,
    bootstrap: int = BOOTSTRAP,
) -> FalseAlarmModel:
    """The model for a band [lo, hi) whose unrelated band pairs passed verification band_passed of band_pairs."""
    # p_hi from the pairs that can be accepted alone; p_band from every pair at or above lo, less those.
    whole = pairs.whole()
    tail, tail_whole = fit_tail(pairs.similarities, pairs.total), fit_tail(whole.similarities, whole.total)
    p_hi = tail_whole.survival(hi, whole.similarities)
    p_band = max(0.0, tail.survival(lo, pairs.similarities) - p_hi)
    draws_hi, draws_band = [], []
    for (fitted, sims), (fitted_whole, sims_whole) in zip(
        bootstrap_tails(pairs, bootstrap), bootstrap_tails(whole, bootstrap), strict=True
    ):
        draw_hi = fitted_whole.survival(hi, sims_whole)
        draws_hi.append(draw_hi)
        draws_band.append(max(0.0, fitted.survival(lo, sims) - draw_hi))
    q = band_passed / band_pairs if band_pairs else 0.0
    return FalseAlarmModel(
        lo=lo, hi=hi, max_candidates=max_candidates, p_hi=p_hi, p_band=p_band, q=q,
        q_interval=wilson(band_passed, band_pairs),
        p_hi_interval=_percentiles(draws_hi, p_hi), p_band_interval=_percentiles(draws_band, p_band),
        band_pairs=band_pairs, band_passed=band_passed, tail=tail,
    )


def bootstrap_tails(pairs: UnrelatedPairs, draws: int = BOOTSTRAP) -> list[tuple[TailFit, np.ndarray]]:
    """The tail fitted again on ``draws`` resamples of the queries (with replacement, fixed seed)."""
    rng = np.random.default_rng(_SEED)
    n = len(pairs.per_query)
    out = []
    for _ in range(draws if n else 0):
        chosen = rng.integers(0, n, size=n)
        sims = np.concatenate([pairs.per_query[i] for i in chosen])
        total = int(sum(pairs.pairs_per_query[i] for i in chosen))
        out.append((fit_tail(sims, total), sims))
    return out


def upper_survival(tails: Sequence[tuple[TailFit, np.ndarray]], t: float) -> float:
    """The 97.5th percentile over the bootstrap of P(s >= t)."""
    return float(np.percentile([tail.survival(t, sims) for tail, sims in tails], 97.5)) if tails else 1.0


def _percentiles(draws: Sequence[float], point: float) -> tuple[float, float]:
    if not draws:
        return point, point
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def measured(
    distractors: Sequence[QueryResult], indexed_ids: Sequence[str], sizes: Sequence[int],
    decide_within: Callable[[QueryResult, frozenset[str]], bool], *, draws: int = 20,
) -> Mapping[int, float]:
    """Share of distractor queries answered "duplicate" against random sub-collections of each size."""
    rng = np.random.default_rng(_SEED)
    out = {}
    for size in sizes:
        if size > len(indexed_ids):
            continue
        alarms = trials = 0
        for _ in range(draws if size < len(indexed_ids) else 1):
            subset = frozenset(rng.choice(indexed_ids, size=size, replace=False).tolist())
            for result in distractors:
                alarms += decide_within(result, subset)
                trials += 1
        out[size] = alarms / trials if trials else 0.0
    return out
