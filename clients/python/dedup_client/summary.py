"""Tallying an index run and rendering its summary (text or JSON-ready dict)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .results import IndexResult, IndexStatus, MatchResult

# Order of the per-status lines; UNSPECIFIED (a server that sent no status) only when seen.
_REPORTED = (IndexStatus.INDEXED, IndexStatus.DUPLICATE, IndexStatus.INVALID, IndexStatus.FAILED)


@dataclass(frozen=True)
class Problem:
    path: str
    status: IndexStatus
    error: str


@dataclass(frozen=True)
class Duplicate:
    path: str
    best: MatchResult


@dataclass
class IndexSummary:
    """Accumulates results as they stream in; ``path_of`` maps ids back to file paths."""

    path_of: dict[str, str]
    counts: dict[IndexStatus, int] = field(default_factory=lambda: {s: 0 for s in _REPORTED})
    problems: list[Problem] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    answered: set[str] = field(default_factory=set)
    from_server: int = 0
    elapsed_s: float = 0.0

    def add(self, result: IndexResult, *, local: bool = False) -> None:
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        self.answered.add(result.id)
        if not local:
            self.from_server += 1
        path = self.path_of.get(result.id, result.id)
        if result.status is IndexStatus.DUPLICATE:
            if result.matches:
                self.duplicates.append(Duplicate(path, result.matches[0]))
            else:
                self.duplicates.append(Duplicate(path, MatchResult(id="?", similarity=0.0)))
        elif not result.status.ok:
            error = result.error or "no reason given by the server"
            self.problems.append(Problem(path, result.status, error))

    def add_unanswered(self) -> None:
        """Every id that was due a result but got none counts as FAILED."""
        for image_id in self.path_of.keys() - self.answered:
            self.add(
                IndexResult(
                    id=image_id,
                    status=IndexStatus.FAILED,
                    error="the server sent no result for this image",
                ),
                local=True,
            )

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def images_per_s(self) -> float:
        return self.from_server / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_text(self) -> str:
        lines = [
            f"{self.total} files in {self.elapsed_s:.1f}s ({self.images_per_s:.1f} images/s)"
        ]
        width = max(len(s.name) for s in self.counts)
        lines += [f"  {s.name:<{width}}  {n}" for s, n in self.counts.items()]
        if self.duplicates:
            lines.append("duplicates:")
            lines += [
                f"  {d.path} -> {d.best.id} ({d.best.similarity:.4f})"
                for d in sorted(self.duplicates, key=lambda d: d.path)
            ]
        for status in (IndexStatus.INVALID, IndexStatus.FAILED, IndexStatus.UNSPECIFIED):
            problems = sorted(
                (p for p in self.problems if p.status is status), key=lambda p: p.path
            )
            if problems:
                lines.append(f"{status.name.lower()}:")
                lines += [f"  {p.path}: {p.error}" for p in problems]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "counts": {s.name: n for s, n in self.counts.items()},
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.images_per_s, 2),
            "duplicates": [
                {
                    "path": d.path,
                    "match": {
                        "id": d.best.id,
                        "similarity": d.best.similarity,
                        "metadata": d.best.metadata,
                    },
                }
                for d in sorted(self.duplicates, key=lambda d: d.path)
            ],
            "problems": [
                {"path": p.path, "status": p.status.name, "error": p.error}
                for p in sorted(self.problems, key=lambda p: p.path)
            ],
        }
