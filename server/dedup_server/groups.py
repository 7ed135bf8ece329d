"""Duplicate groups of a collection: the connected components of the "is a duplicate of" pairs, each with its keeper.

Pure Python and numpy, fed pairs as a scan of the collection finds them, with memory bounded for millions of
images (issue 14):

* an image gets an integer row only when it enters a pair (images with no duplicate never do), and the union-find
  is two numpy int32 arrays over those rows (parent, component size: union by size, path halving);
* the pairs are kept as four numpy columns (row a, row b, similarity, mirrored: 17 bytes a pair, at most top_k
  per scanned image), never as Python objects; a pair found from both sides is kept once when groups are made;
* only images in a pair keep their facts and metadata (what the keeper is chosen on and what the answer shows).

``components`` (numpy, run it off the event loop) finds the groups to answer, largest first, and ``group`` builds
one at a time, so the answer is streamed and never all in memory.

Each group answers its members once: the best similarity joining each, the keeper the policy picks (KeepPolicy),
and whether a member is the keeper mirrored left-right, told along the strongest pairs from the keeper (a maximum
spanning tree: the parity of the mirrored pairs on the way).
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np

from .facts import ImageFacts


class KeepPolicy(enum.IntEnum):
    """Values are the contract's (dedup.v1.KeepPolicy), so requests carry them as plain numbers."""

    DEFAULT = 0  # the server default: LARGEST
    LARGEST = 1  # most pixels, then most bytes
    ORIGINAL_FORMAT = 2  # lossless (PNG, TIFF, BMP, PPM) over lossy, then most pixels, then most bytes
    OLDEST = 3  # indexed first
    NEWEST = 4  # indexed last


@dataclasses.dataclass(frozen=True)
class DuplicatePair:
    id_a: str
    id_b: str
    similarity: float
    mirrored: bool = False


@dataclasses.dataclass(frozen=True)
class GroupMember:
    id: str
    similarity: float  # the best similarity joining it to another member
    closest: str  # that member
    keeper: bool
    mirrored: bool  # the keeper mirrored left-right
    facts: ImageFacts = ImageFacts()
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the client's own


@dataclasses.dataclass(frozen=True)
class DuplicateGroup:
    ids: tuple[str, ...]  # sorted
    pairs: tuple[DuplicatePair, ...]  # best first
    members: tuple[GroupMember, ...] = ()  # the keeper first, then best similarity first
    keeper: str = ""


SortKey = tuple[object, ...]


def keep_order(policy: KeepPolicy) -> Callable[[str, ImageFacts], SortKey]:
    """Sort key of a policy: the smallest key is the keeper. Unknown facts (0) never win over known ones."""
    if policy in (KeepPolicy.DEFAULT, KeepPolicy.LARGEST):
        return lambda image_id, f: (-f.pixels, -f.bytes, image_id)
    if policy is KeepPolicy.ORIGINAL_FORMAT:
        return lambda image_id, f: (not f.lossless, -f.pixels, -f.bytes, image_id)
    if policy is KeepPolicy.OLDEST:
        return lambda image_id, f: (f.indexed_at_ms == 0, f.indexed_at_ms, image_id)
    if policy is KeepPolicy.NEWEST:
        return lambda image_id, f: (f.indexed_at_ms == 0, -f.indexed_at_ms, image_id)
    raise ValueError(f"unknown keep policy {policy!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class _Description:
    facts: ImageFacts
    metadata: Mapping[str, str]


_EMPTY = _Description(ImageFacts(), {})


@dataclasses.dataclass(frozen=True)
class Components:
    """The groups to answer, largest first (then by smallest id), as row numbers: ``rows[starts[k]:ends[k]]`` are
    group k's members and ``pairs[pair_starts[k]:pair_ends[k]]`` index its pairs. A snapshot: pairs added later are
    not in it."""

    rows: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    pairs: np.ndarray
    pair_starts: np.ndarray
    pair_ends: np.ndarray
    pair_a: np.ndarray
    pair_b: np.ndarray
    pair_similarity: np.ndarray
    pair_mirrored: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)


class _Column:
    """A growable numpy column (doubling), so appending a pair costs no Python object."""

    def __init__(self, dtype: type, capacity: int = 1024) -> None:
        self._data: np.ndarray = np.zeros(capacity, dtype=dtype)
        self.size = 0

    def append(self, value: object) -> None:
        if self.size == len(self._data):
            self._data = np.concatenate([self._data, np.zeros_like(self._data)])
        self._data[self.size] = value
        self.size += 1

    def view(self) -> np.ndarray:
        return self._data[: self.size]

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes)


class GroupBuilder:
    def __init__(self) -> None:
        self._rows: dict[str, int] = {}  # id -> row, only for images in some pair
        self._ids: list[str] = []  # row -> id
        self._parent = _Column(np.int32)
        self._size = _Column(np.int32)
        self._pair_a, self._pair_b = _Column(np.int32), _Column(np.int32)
        self._pair_similarity, self._pair_mirrored = _Column(np.float64), _Column(np.bool_)
        self._described: dict[int, _Description] = {}

    def __len__(self) -> int:
        """Images in some pair."""
        return len(self._ids)

    @property
    def pair_count(self) -> int:
        """Pairs added (one found from both sides counts twice until groups are made)."""
        return self._pair_a.size

    @property
    def nbytes(self) -> int:
        """What the numpy columns hold (the id map and descriptions come on top: ~150 bytes an image in a pair)."""
        columns = (self._parent, self._size, self._pair_a, self._pair_b, self._pair_similarity, self._pair_mirrored)
        return sum(column.nbytes for column in columns)

    def _row(self, image_id: str) -> int:
        row = self._rows.get(image_id)
        if row is None:
            row = self._rows[image_id] = len(self._ids)
            self._ids.append(image_id)
            self._parent.append(row)
            self._size.append(1)
        return row

    def _root(self, row: int) -> int:
        parent = self._parent.view()
        while parent[row] != row:
            parent[row] = parent[parent[row]]  # path halving
            row = int(parent[row])
        return row

    def add(self, id_a: str, id_b: str, similarity: float, mirrored: bool = False) -> None:
        if id_a == id_b:
            return
        row_a, row_b = self._row(id_a), self._row(id_b)
        self._pair_a.append(min(row_a, row_b))
        self._pair_b.append(max(row_a, row_b))
        self._pair_similarity.append(similarity)
        self._pair_mirrored.append(mirrored)
        root_a, root_b = self._root(row_a), self._root(row_b)
        if root_a != root_b:
            size = self._size.view()
            if size[root_a] < size[root_b]:
                root_a, root_b = root_b, root_a
            self._parent.view()[root_b] = root_a
            size[root_a] += size[root_b]

    def add_all(self, pairs: Iterable[DuplicatePair]) -> None:
        for pair in pairs:
            self.add(pair.id_a, pair.id_b, pair.similarity, pair.mirrored)

    def knows(self, image_id: str) -> bool:
        """Whether the image is in some pair (only those are described)."""
        return image_id in self._rows

    def describe(
        self, image_id: str, facts: ImageFacts, metadata: Mapping[str, str], *, replace: bool = True
    ) -> None:
        """What the keeper is chosen on, and what the answer shows of a member. ``replace=False``: only when the
        image was not described yet (a neighbour's hit knows less than the image's own scan)."""
        row = self._rows.get(image_id)
        if row is None:
            return  # in no pair: never answered
        if replace or row not in self._described:
            self._described[row] = _Description(facts, dict(metadata))

    def components(self, *, min_size: int = 2, limit: int = 0) -> Components:
        """The groups of at least ``min_size`` images, largest first (then by smallest id), at most ``limit``
        (0: all). Numpy over row numbers: blocking, run it in a thread for big collections."""
        count = len(self._ids)
        parent = self._parent.view().copy()
        while True:  # full compression, vectorised: every row points at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
        roots = parent
        sizes = np.bincount(roots, minlength=count) if count else np.zeros(0, dtype=np.int64)
        # Rank of each row's id in sorted order: ties between groups of one size go to the smallest id.
        id_rank = np.empty(count, dtype=np.int64)
        id_rank[np.argsort(np.asarray(self._ids, dtype=object), kind="stable")] = np.arange(count)
        rows = np.lexsort((id_rank, roots)).astype(np.int32)  # by root, then by id
        root_of = roots[rows]
        boundaries = np.flatnonzero(np.diff(root_of)) + 1 if count else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], boundaries]).astype(np.int64) if count else np.zeros(0, dtype=np.int64)
        ends = np.concatenate([boundaries, [count]]).astype(np.int64) if count else np.zeros(0, dtype=np.int64)
        group_size = sizes[root_of[starts]] if count else np.zeros(0, dtype=np.int64)
        first_rank = id_rank[rows[starts]] if count else np.zeros(0, dtype=np.int64)
        chosen = np.flatnonzero(group_size >= max(2, min_size))
        chosen = chosen[np.lexsort((first_rank[chosen], -group_size[chosen]))]
        if limit:
            chosen = chosen[:limit]
        # Pairs by group: each pair once (its best score), sorted by the chosen groups' order.
        pair_a, pair_b = self._pair_a.view(), self._pair_b.view()
        similarity, mirrored = self._pair_similarity.view(), self._pair_mirrored.view()
        group_of_root = np.full(count, -1, dtype=np.int64)
        group_of_root[root_of[starts[chosen]]] = np.arange(len(chosen))
        pair_group = group_of_root[roots[pair_a]] if len(pair_a) else np.zeros(0, dtype=np.int64)
        wanted = np.flatnonzero(pair_group >= 0)
        # Best score first within each (a, b), so the first of each run is the one kept.
        order = wanted[np.lexsort((-similarity[wanted], pair_b[wanted], pair_a[wanted], pair_group[wanted]))]
        if len(order):
            keys_a, keys_b = pair_a[order], pair_b[order]
            first = np.concatenate([[True], (keys_a[1:] != keys_a[:-1]) | (keys_b[1:] != keys_b[:-1])])
            order = order[first]
        ordered_groups = pair_group[order]
        group_index = np.arange(len(chosen))
        return Components(
            rows=rows, starts=starts[chosen], ends=ends[chosen], pairs=order,
            pair_starts=np.searchsorted(ordered_groups, group_index, side="left"),
            pair_ends=np.searchsorted(ordered_groups, group_index, side="right"),
            pair_a=pair_a, pair_b=pair_b, pair_similarity=similarity, pair_mirrored=mirrored,
        )

    def group(self, components: Components, k: int, policy: KeepPolicy = KeepPolicy.DEFAULT) -> DuplicateGroup:
        """Group ``k`` of ``components``, with its members, pairs and keeper."""
        ids = [self._ids[row] for row in components.rows[components.starts[k]:components.ends[k]]]
        rows = components.pairs[components.pair_starts[k]:components.pair_ends[k]]
        pairs = [
            DuplicatePair(self._ids[a], self._ids[b], float(s), bool(m))
            for a, b, s, m in zip(
                components.pair_a[rows].tolist(), components.pair_b[rows].tolist(),
                components.pair_similarity[rows].tolist(), components.pair_mirrored[rows].tolist(), strict=True,
            )
        ]
        return self._group(ids, pairs, keep_order(policy))

    def iter_groups(
        self, policy: KeepPolicy = KeepPolicy.DEFAULT, *, min_size: int = 2, limit: int = 0
    ) -> Iterator[DuplicateGroup]:
        components = self.components(min_size=min_size, limit=limit)
        for k in range(len(components)):
            yield self.group(components, k, policy)

    def groups(
        self, policy: KeepPolicy = KeepPolicy.DEFAULT, *, min_size: int = 2, limit: int = 0
    ) -> list[DuplicateGroup]:
        """Groups of at least ``min_size`` images, largest first (then by first id), at most ``limit`` (0: all)."""
        return list(self.iter_groups(policy, min_size=min_size, limit=limit))

    def _group(self, ids: list[str], pairs: list[DuplicatePair], order: Callable[[str, ImageFacts], SortKey]
               ) -> DuplicateGroup:
        described = {i: self._described.get(self._rows[i], _EMPTY) for i in ids}
        keeper = min(ids, key=lambda i: order(i, described[i].facts))
        best: dict[str, tuple[float, str]] = {}
        for pair in pairs:
            for this, other in ((pair.id_a, pair.id_b), (pair.id_b, pair.id_a)):
                known = best.get(this)
                # The strongest pair; between equal ones, the smaller id (answers do not depend on scan order).
                if known is None or (-pair.similarity, other) < (-known[0], known[1]):
                    best[this] = (pair.similarity, other)
        mirrored = _mirrored_from(keeper, pairs)
        group_members = [
            GroupMember(id=i, similarity=best[i][0], closest=best[i][1], keeper=i == keeper,
                        mirrored=mirrored.get(i, False), facts=described[i].facts,
                        metadata=described[i].metadata)
            for i in ids
        ]
        group_members.sort(key=lambda m: (not m.keeper, -m.similarity, m.id))
        return DuplicateGroup(
            ids=tuple(ids),
            pairs=tuple(sorted(pairs, key=lambda p: (-p.similarity, p.id_a, p.id_b))),
            members=tuple(group_members),
            keeper=keeper,
        )


def _mirrored_from(root: str, pairs: Iterable[DuplicatePair]) -> dict[str, bool]:
    """For each member: is it ``root`` mirrored? Along a maximum spanning tree from ``root`` (Prim), the parity of
    the mirrored pairs on the path: the strongest evidence joining each member to the keeper."""
    neighbours: dict[str, list[tuple[float, str, bool]]] = {}
    for pair in pairs:
        neighbours.setdefault(pair.id_a, []).append((pair.similarity, pair.id_b, pair.mirrored))
        neighbours.setdefault(pair.id_b, []).append((pair.similarity, pair.id_a, pair.mirrored))
    result = {root: False}
    frontier = [(-similarity, other, mirrored, root) for similarity, other, mirrored in neighbours.get(root, [])]
    heapq.heapify(frontier)
    while frontier:
        _, image_id, mirrored, parent = heapq.heappop(frontier)
        if image_id in result:
            continue
        result[image_id] = result[parent] != mirrored
        for similarity, other, pair_mirrored in neighbours.get(image_id, []):
            if other not in result:
                heapq.heappush(frontier, (-similarity, other, pair_mirrored, image_id))
    return result
