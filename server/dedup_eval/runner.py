"""Drive the running service through its gRPC API: IndexStream the originals, CheckDuplicate every query.

Each query is checked once with a near-zero threshold and cosine_only, to record the raw similarities of its
nearest TOP_K photos (for calibration, the precision-recall curve and the false-alarm model); on the split that is
reported (``decided``), once more exactly as a client using the server's defaults decides (the official numbers,
geometric verification included), and once with flip_policy MIRROR_IS_DISTINCT.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from dedup_client import DedupClient, FlipPolicy, IndexItem
from tqdm import tqdm

from .benchmark import Query, Split

logger = logging.getLogger(__name__)

# The lowest threshold the API accepts that still returns every neighbour worth looking at.
RAW_THRESHOLD = 0.01
# The API's maximum: enough neighbours per query to see the unrelated-pair tail and to rebuild sub-collections.
TOP_K = 100


@dataclasses.dataclass(frozen=True)
class Candidate:
    id: str
    similarity: float
    framed: bool = False  # the similarity is the framed photo's (framing.py): verified however high


@dataclasses.dataclass(frozen=True)
class QueryResult:
    id: str
    transform: str
    expected: str | None
    candidates: Sequence[Candidate]  # raw cosine: best first, similarity >= RAW_THRESHOLD
    decided: Sequence[str]  # the server's own matches at its defaults, best first
    decided_mirrors_distinct: Sequence[str]  # the same, with flip_policy MIRROR_IS_DISTINCT
    decided_similarity: float = 0.0  # of the server's best match (0 when it said "not a duplicate")
    verified: bool = False  # the server's best match was geometrically verified

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


@dataclasses.dataclass(frozen=True)
class SplitRun:
    split: str
    collection: str
    indexed: int
    results: Sequence[QueryResult]
    default_threshold: float


class EvalError(RuntimeError):
    pass


def run_split(client: DedupClient, split: Split, *, concurrency: int = 8, decided: bool = True) -> SplitRun:
    """``decided``: also ask for the server's own decisions (the split that is reported); else raw only."""
    collection = f"eval_{split.name}_{uuid.uuid4().hex[:8]}"
    items = [IndexItem(id=photo_id, image=image, collection=collection) for photo_id, image in split.originals]
    failed = [r for r in client.index(items) if not r.status.ok]
    if failed:
        raise EvalError(f"indexing {split.name} failed for {[(r.id, r.error) for r in failed]}")
    logger.info("%s: indexed %d photos into %s", split.name, len(items), collection)
    queries = split.queries
    default_threshold = client.stats().default_threshold

    def check(query: Query) -> QueryResult:
        raw = client.check(query.image, collection=collection, threshold=RAW_THRESHOLD, top_k=TOP_K,
                           cosine_only=True)
        candidates = [Candidate(m.id, m.similarity, m.framed) for m in raw.matches]
        if not decided:
            return QueryResult(id=query.id, transform=query.transform, expected=query.expected,
                               candidates=candidates, decided=(), decided_mirrors_distinct=())
        official = client.check(query.image, collection=collection)
        distinct = client.check(query.image, collection=collection, flip_policy=FlipPolicy.MIRROR_IS_DISTINCT)
        best = official.matches[0] if official.matches else None
        return QueryResult(
            id=query.id, transform=query.transform, expected=query.expected, candidates=candidates,
            decided=[m.id for m in official.matches],
            decided_mirrors_distinct=[m.id for m in distinct.matches],
            decided_similarity=best.similarity if best else 0.0, verified=bool(best and best.verified),
        )

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(tqdm(pool.map(check, queries), total=len(queries), desc=f"{split.name} queries",
                                unit="query"))
    finally:
        client.delete([photo.id for photo in split.indexed], collection=collection)
    return SplitRun(split=split.name, collection=collection, indexed=len(items), results=results,
                    default_threshold=default_threshold)
