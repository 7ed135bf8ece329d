"""Every stored image's nearest others, found in the front by one blockwise self-join instead of one Milvus search an
image: what FindDuplicateGroups needs at a million images.

Why: a groups scan through Milvus searches every row against every sealed segment; at 1M rows on 2 cores that ran at
49.5 rows/s (50 HNSW segments) and 239 rows/s (one IVF_FLAT segment), hours for 1M (deploy/CAPACITY.md). The same
neighbours come from dense matrix products, which BLAS runs at ~140 GMAC/s on the same 2 cores:

1. the vectors, read once from the collection, are appended to a spill file (float32, unit length) on disk, so the
   front's memory stays bounded by a few blocks, not by the collection;
2. up to ``exact_max_rows`` rows, every row is compared with every other (exact);
3. above it, spherical k-means on a sample cuts the rows into lists of ~``rows_per_list``; the file is rewritten in
   list order, and each list is compared with the rows of its ``probes`` nearest lists (itself first), an IVF self-join:
   N^2 * probes / lists multiply-adds instead of N^2;
4. of each row's candidates only those at or above ``min_similarity`` (the bottom of the verification band: nothing
   below it can be a duplicate) are kept, the best ``k`` of them.

The cosines are the same dot products of unit vectors Milvus' COSINE metric returns. The join is approximate above
``exact_max_rows`` the way an IVF index is: a pair whose rows fall in lists that are not among each other's probes
is missed; `make bench-scale` measures how often on planted copies.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

#: Elements of one similarity block (float32): bounds the join's working memory to ~128 MB a block.
BLOCK_ELEMENTS = 1 << 25
#: Query rows compared with a list at a time (~160 MB of float32 at 1280-d), read into one reused buffer.
PART_ROWS = 32_768
#: Rows read at a time when a pass goes over the whole spill file.
CHUNK_ROWS = 32_768


class JoinCancelled(Exception):
    """The caller's should_stop said stop."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class JoinConfig:
    exact_max_rows: int = 20_000  # up to this many rows every pair is compared
    rows_per_list: int = 1_000  # k-means lists: about rows / rows_per_list
    probes: int = 32  # nearest lists each row is compared with, its own first (1M: every planted pair found, 26 min)
    train_rows_per_list: int = 64  # k-means sample: this many rows a list
    iterations: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.exact_max_rows, self.rows_per_list, self.probes, self.train_rows_per_list, self.iterations) < 1:
            raise ValueError(f"self-join settings must be positive: {self}")


@dataclasses.dataclass(frozen=True)
class Neighbours:
    """Row r's nearest others: rows[r, :] (row numbers in append order, -1 where fewer were found), best first."""

    rows: np.ndarray  # int32 [N, k]
    similarities: np.ndarray  # float32 [N, k]

    def of(self, row: int) -> list[tuple[int, float]]:
        found = self.rows[row] >= 0
        return list(zip(self.rows[row][found].tolist(), self.similarities[row][found].tolist(), strict=True))


class VectorSpill:
    """Unit float32 vectors appended to a file of a temporary directory; row numbers in append order."""

    def __init__(self, dim: int, directory: Path | None = None) -> None:
        self.dim = dim
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        self._dir = tempfile.TemporaryDirectory(prefix="dedup-join-", dir=directory)
        self.path = Path(self._dir.name) / "vectors.f32"
        self._file = open(self.path, "w+b")  # noqa: SIM115 - closed by close()
        self._rows = 0

    @property
    def row_bytes(self) -> int:
        return 4 * self.dim

    def __len__(self) -> int:
        return self._rows

    def append(self, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of dimension {self.dim}, got shape {vectors.shape}")
        self._file.seek(0, os.SEEK_END)
        self._file.write(np.ascontiguousarray(_unit(vectors.astype(np.float32))).tobytes())
        self._file.flush()  # reads go to the descriptor (pread), under Python's buffer
        self._rows += len(vectors)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop), read into memory (no mapping: the page cache is not the front's memory)."""
        count = max(0, stop - start)
        data = os.pread(self._file.fileno(), count * self.row_bytes, start * self.row_bytes)
        return np.frombuffer(data, dtype=np.float32).reshape(count, self.dim)

    def read_rows(self, rows: np.ndarray, buffer: np.ndarray) -> np.ndarray:
        """Rows (ascending, at most len(buffer)) read into ``buffer``, runs of consecutive rows in one call."""
        flat = buffer.data.cast("B")
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        at = 0
        for first, count in zip(np.concatenate([[0], breaks]).tolist(),
                                np.diff(np.concatenate([[0], breaks, [len(rows)]])).tolist(), strict=True):
            size = count * self.row_bytes
            os.preadv(self._file.fileno(), [flat[at:at + size]], int(rows[first]) * self.row_bytes)
            at += size
        return buffer[:len(rows)]

    def chunks(self, rows: int = CHUNK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self._rows, rows):
            yield start, self.read(start, min(self._rows, start + rows))

    def reorder(self, destination: np.ndarray) -> None:
        """Rewrite the file so that row r moves to row destination[r]."""
        sorted_path = self.path.with_suffix(".sorted")
        with open(sorted_path, "w+b") as out:
            out.truncate(self._rows * self.row_bytes)
            for start, block in self.chunks():
                targets = destination[start:start + len(block)]
                order = np.argsort(targets)
                # Runs of consecutive targets are written as one: rows of one list arrive in order.
                runs = np.flatnonzero(np.diff(targets[order]) != 1) + 1
                for run in np.split(order, runs):
                    os.pwrite(out.fileno(), block[run].tobytes(), int(targets[run[0]]) * self.row_bytes)
        self._file.close()
        os.replace(sorted_path, self.path)
        self._file = open(self.path, "r+b")  # noqa: SIM115 - closed by close()

    def close(self) -> None:
        self._file.close()
        self._dir.cleanup()


def nearest_others(
    spill: VectorSpill, *, k: int, min_similarity: float, config: JoinConfig = JoinConfig(),
    should_stop: Callable[[], bool] = lambda: False, progress: Callable[[int], None] = lambda done: None,
) -> Neighbours:
    """Each row's best ``k`` others at or above ``min_similarity``. ``progress`` hears how many rows are done (the
    k-means and the reordering count as the first 10 %); ``should_stop`` is asked between blocks (JoinCancelled).
    Reorders the spill file when it clusters."""
    total = len(spill)
    best = _Best(total, k)
    if total < 2 or k < 1:
        return best.neighbours(np.arange(total))
    if total <= config.exact_max_rows:
        position = np.arange(total)
        starts = np.array([0, total])
        asking: list[np.ndarray] = [np.arange(total)]
    else:
        clusters = _clusters(spill, config, should_stop)
        position = _reorder(spill, clusters.lists)
        starts = np.searchsorted(np.sort(clusters.lists), np.arange(len(clusters.centroids) + 1))
        asking = _askers(clusters.probes[np.argsort(position)], len(clusters.centroids))
    progress(total // 10)
    buffer = np.empty((PART_ROWS, spill.dim), dtype=np.float32)
    asked = sum(len(a) for a in asking)
    done = 0
    for listed in range(len(starts) - 1):
        begin, end = int(starts[listed]), int(starts[listed + 1])
        if begin == end or len(asking[listed]) == 0:
            continue
        candidates = spill.read(begin, end)  # the list's rows; then every row whose probes include it
        for part in range(0, len(asking[listed]), PART_ROWS):
            if should_stop():
                raise JoinCancelled
            rows = asking[listed][part:part + PART_ROWS]
            queries = spill.read_rows(rows, buffer)
            step = max(1, BLOCK_ELEMENTS // (end - begin))
            for q in range(0, len(rows), step):
                similarity = queries[q:q + step] @ candidates.T
                own = rows[q:q + step]
                mine = np.flatnonzero((own >= begin) & (own < end))
                similarity[mine, own[mine] - begin] = -np.inf  # itself is no other
                query, column = np.nonzero(similarity >= min_similarity)
                best.add(own[query], column + begin, similarity[query, column])
        done += len(asking[listed])
        progress(total // 10 + int(done / asked * (total - total // 10)))
    return best.neighbours(position)


class _Best:
    """Each row's best k candidates so far (rows in file order), merged from candidate triples in batches."""

    MERGE_EVERY = 4_000_000  # triples held before a merge (~48 MB)

    def __init__(self, total: int, k: int) -> None:
        self.rows = np.full((total, k), -1, dtype=np.int64)
        self.sims = np.full((total, k), -np.inf, dtype=np.float32)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._held = 0

    def add(self, query: np.ndarray, column: np.ndarray, score: np.ndarray) -> None:
        if len(query):
            self._pending.append((query, column, score))
            self._held += len(query)
            if self._held >= self.MERGE_EVERY:
                self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        query = np.concatenate([p[0] for p in self._pending])
        column = np.concatenate([p[1] for p in self._pending])
        score = np.concatenate([p[2] for p in self._pending])
        self._pending, self._held = [], 0
        touched = np.unique(query)
        k = self.rows.shape[1]
        held = self.rows[touched] >= 0
        query = np.concatenate([np.repeat(touched, k)[held.ravel()], query])
        column = np.concatenate([self.rows[touched][held], column])
        score = np.concatenate([self.sims[touched][held], score])
        order = np.lexsort((column, -score, query))  # by row, best first (ties: the lower row)
        query, column, score = query[order], column[order], score[order]
        rank = np.arange(len(query)) - np.searchsorted(query, query, side="left")
        kept = rank < k
        self.rows[touched] = -1
        self.sims[touched] = -np.inf
        self.rows[query[kept], rank[kept]] = column[kept]
        self.sims[query[kept], rank[kept]] = score[kept]

    def neighbours(self, position: np.ndarray) -> Neighbours:
        """In append order: row r sits at position[r] of the file; its neighbours' positions become their rows."""
        self._merge()
        row_at = np.empty(len(position), dtype=np.int64)
        row_at[position] = np.arange(len(position))
        rows = self.rows[position]
        mapped = np.where(rows >= 0, row_at[np.maximum(rows, 0)], -1).astype(np.int32)
        return Neighbours(mapped, self.sims[position])


def _askers(probes: np.ndarray, lists: int) -> list[np.ndarray]:
    """For each list, the file rows whose probes include it, ascending (probes: [rows, p] in file order)."""
    flat = probes.ravel()
    order = np.argsort(flat, kind="stable")  # stable: within a list, rows stay ascending
    bounds = np.searchsorted(flat[order], np.arange(lists + 1))
    ordered = (order // probes.shape[1]).astype(np.int32)
    del order
    return [ordered[bounds[i]:bounds[i + 1]] for i in range(lists)]


@dataclasses.dataclass(frozen=True)
class _Clusters:
    lists: np.ndarray  # each row's list (append order)
    probes: np.ndarray  # each row's nearest lists, its own first ([rows, p], append order)
    centroids: np.ndarray  # unit, of the centred vectors
    mean: np.ndarray


def _clusters(spill: VectorSpill, config: JoinConfig, should_stop: Callable[[], bool]) -> _Clusters:
    """Spherical k-means on a sample, and every row's list."""
    total = len(spill)
    count = max(1, round(total / config.rows_per_list))
    rng = np.random.default_rng(config.seed)
    picked = np.sort(rng.choice(total, size=min(total, count * config.train_rows_per_list), replace=False))
    sample = np.concatenate([block[picked[(picked >= start) & (picked < start + len(block))] - start]
                             for start, block in spill.chunks()])
    # Clustered around the mean, not the origin: embeddings share a common direction (mean pairwise cosine ~0.24),
    # and centroids near it become hubs that take most rows, which makes the join nearly exhaustive.
    mean = sample.mean(axis=0)
    sample = _unit(sample - mean)
    centroids = sample[rng.choice(len(sample), size=count, replace=False)].copy()
    for _ in range(config.iterations):
        if should_stop():
            raise JoinCancelled
        assigned = _nearest_centroids(sample, centroids, 1)[:, 0]
        sums = np.zeros_like(centroids)
        np.add.at(sums, assigned, sample)
        empty = np.bincount(assigned, minlength=count) == 0
        sums[empty] = sample[rng.choice(len(sample), size=int(empty.sum()), replace=False)]  # re-seeded
        centroids = _unit(sums)
    count_probed = min(config.probes, count)
    probes = np.concatenate([_nearest_centroids(block - mean, centroids, count_probed) for _, block in spill.chunks()])
    return _Clusters(lists=probes[:, 0].copy(), probes=probes, centroids=centroids, mean=mean)


def _nearest_centroids(vectors: np.ndarray, centroids: np.ndarray, count: int) -> np.ndarray:
    """Each vector's ``count`` nearest centroids, nearest first ([len(vectors), count])."""
    step = max(1, BLOCK_ELEMENTS // len(centroids))
    found = []
    for i in range(0, len(vectors), step):
        scores = vectors[i:i + step] @ centroids.T
        top = np.argpartition(-scores, count - 1, axis=1)[:, :count] if count < len(centroids) else \
            np.broadcast_to(np.arange(len(centroids)), scores.shape).copy()
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        found.append(np.take_along_axis(top, order, axis=1).astype(np.int32))
    return np.concatenate(found)


def _reorder(spill: VectorSpill, lists: np.ndarray) -> np.ndarray:
    """Rewrite the spill in list order; returns each row's new position."""
    order = np.argsort(lists, kind="stable")
    position = np.empty(len(lists), dtype=np.int64)
    position[order] = np.arange(len(lists))
    spill.reorder(position)
    return position


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)
