"""Duplicate groups of a collection: the connected components of the "is a duplicate of" pairs.

Pure Python, fed pairs as a scan of the collection finds them. A union-find keeps memory at one entry per image
that is in some pair; images with no duplicate never enter it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class DuplicatePair:
    id_a: str
    id_b: str
    similarity: float


@dataclasses.dataclass(frozen=True)
class DuplicateGroup:
    ids: tuple[str, ...]  # sorted
    pairs: tuple[DuplicatePair, ...]  # best first


class GroupBuilder:
    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._pairs: dict[tuple[str, str], float] = {}

    def _root(self, item: str) -> str:
        parent = self._parent.setdefault(item, item)
        while parent != self._parent[parent]:
            self._parent[parent] = self._parent[self._parent[parent]]  # path halving
            parent = self._parent[parent]
        return parent

    def add(self, id_a: str, id_b: str, similarity: float) -> None:
        if id_a == id_b:
            return
        key = (id_a, id_b) if id_a < id_b else (id_b, id_a)
        # The same pair is found from both sides (a's neighbours, b's neighbours): keep one, the best score.
        self._pairs[key] = max(similarity, self._pairs.get(key, -1.0))
        root_a, root_b = self._root(id_a), self._root(id_b)
        if root_a != root_b:
            self._parent[max(root_a, root_b)] = min(root_a, root_b)

    def add_all(self, pairs: Iterable[DuplicatePair]) -> None:
        for pair in pairs:
            self.add(pair.id_a, pair.id_b, pair.similarity)

    def groups(self) -> list[DuplicateGroup]:
        """Every group, largest first (then by first id), each with its pairs best first."""
        members: dict[str, list[str]] = {}
        for item in self._parent:
            members.setdefault(self._root(item), []).append(item)
        pairs_by_root: dict[str, list[DuplicatePair]] = {}
        for (id_a, id_b), similarity in self._pairs.items():
            pairs_by_root.setdefault(self._root(id_a), []).append(DuplicatePair(id_a, id_b, similarity))
        result = [
            DuplicateGroup(
                ids=tuple(sorted(ids)),
                pairs=tuple(sorted(pairs_by_root.get(root, []), key=lambda p: (-p.similarity, p.id_a, p.id_b))),
            )
            for root, ids in members.items()
        ]
        result.sort(key=lambda g: (-len(g.ids), g.ids[0]))
        return result
