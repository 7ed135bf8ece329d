"""Duplicate groups of a collection: the connected components of the "is a duplicate of" pairs, each with its keeper.

Pure Python, fed pairs as a scan of the collection finds them. A union-find keeps memory at one entry per image
that is in some pair; images with no duplicate never enter it, and only those in a pair keep their facts.

Each group answers its members once: the best similarity joining each, the keeper the policy picks (KeepPolicy),
and whether a member is the keeper mirrored left-right, told along the strongest pairs from the keeper (a maximum
spanning tree: the parity of the mirrored pairs on the way).
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
from collections.abc import Callable, Iterable, Mapping

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


class GroupBuilder:
    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._pairs: dict[tuple[str, str], tuple[float, bool]] = {}
        self._described: dict[str, _Description] = {}

    def _root(self, item: str) -> str:
        parent = self._parent.setdefault(item, item)
        while parent != self._parent[parent]:
            self._parent[parent] = self._parent[self._parent[parent]]  # path halving
            parent = self._parent[parent]
        return parent

    def add(self, id_a: str, id_b: str, similarity: float, mirrored: bool = False) -> None:
        if id_a == id_b:
            return
        key = (id_a, id_b) if id_a < id_b else (id_b, id_a)
        # The same pair is found from both sides (a's neighbours, b's neighbours): keep one, the best score.
        known = self._pairs.get(key)
        if known is None or similarity > known[0]:
            self._pairs[key] = (similarity, mirrored)
        root_a, root_b = self._root(id_a), self._root(id_b)
        if root_a != root_b:
            self._parent[max(root_a, root_b)] = min(root_a, root_b)

    def add_all(self, pairs: Iterable[DuplicatePair]) -> None:
        for pair in pairs:
            self.add(pair.id_a, pair.id_b, pair.similarity, pair.mirrored)

    def knows(self, image_id: str) -> bool:
        """Whether the image is in some pair (only those are described)."""
        return image_id in self._parent

    def describe(
        self, image_id: str, facts: ImageFacts, metadata: Mapping[str, str], *, replace: bool = True
    ) -> None:
        """What the keeper is chosen on, and what the answer shows of a member. ``replace=False``: only when the
        image was not described yet (a neighbour's hit knows less than the image's own scan)."""
        if replace or image_id not in self._described:
            self._described[image_id] = _Description(facts, dict(metadata))

    def groups(
        self, policy: KeepPolicy = KeepPolicy.DEFAULT, *, min_size: int = 2, limit: int = 0
    ) -> list[DuplicateGroup]:
        """Groups of at least ``min_size`` images, largest first (then by first id), at most ``limit`` (0: all)."""
        members: dict[str, list[str]] = {}
        for item in self._parent:
            members.setdefault(self._root(item), []).append(item)
        chosen = sorted(
            (sorted(ids) for ids in members.values() if len(ids) >= max(2, min_size)),
            key=lambda ids: (-len(ids), ids[0]),
        )
        if limit:
            chosen = chosen[:limit]
        wanted = {self._root(ids[0]) for ids in chosen}
        pairs_by_root: dict[str, list[DuplicatePair]] = {}
        for (id_a, id_b), (similarity, mirrored) in self._pairs.items():
            root = self._root(id_a)
            if root in wanted:
                pairs_by_root.setdefault(root, []).append(DuplicatePair(id_a, id_b, similarity, mirrored))
        order = keep_order(policy)
        return [self._group(ids, pairs_by_root.get(self._root(ids[0]), []), order) for ids in chosen]

    def _group(self, ids: list[str], pairs: list[DuplicatePair], order: Callable[[str, ImageFacts], SortKey]
               ) -> DuplicateGroup:
        empty = _Description(ImageFacts(), {})
        described = {i: self._described.get(i, empty) for i in ids}
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
