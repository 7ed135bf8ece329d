"""Duplicate groups as people and tools read them: text, JSON and CSV, each group once with its members.

Every format carries the same facts per member: id and path, the best similarity joining it to the group, the
member it is closest to, the keeper, whether it is the keeper mirrored, and its size, bytes, format and when it
was indexed. Pure: groups in, text out.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

from .results import DuplicateGroup, GroupMember

CSV_COLUMNS = (
    "group", "size", "keep", "id", "path", "similarity", "closest", "mirrored", "width", "height", "bytes",
    "format", "indexed_at",
)


def human_bytes(count: int) -> str:
    if count <= 0:
        return "?"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def dimensions(member: GroupMember) -> str:
    return f"{member.width}x{member.height}" if member.width and member.height else "?"


def indexed_at(member: GroupMember) -> str:
    """ISO-8601 UTC, to the second ("" when not known)."""
    if not member.indexed_at_ms:
        return ""
    moment = dt.datetime.fromtimestamp(member.indexed_at_ms / 1000, tz=dt.timezone.utc)
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def removable_count(groups: Sequence[DuplicateGroup]) -> int:
    return sum(len(g.ids) - 1 for g in groups)


def removable_bytes(groups: Sequence[DuplicateGroup]) -> int:
    return sum(m.bytes for g in groups for m in g.removable)


def to_text(groups: Sequence[DuplicateGroup], keep: str) -> str:
    """Each group once: the keeper first, then every other member with the similarity that joins it."""
    if not groups:
        return "no duplicates"
    lines: list[str] = []
    for number, group in enumerate(groups, 1):
        keeper = next((m for m in group.members if m.keeper), None)
        lines.append(
            f"group {number}: {len(group.ids)} images, keep {keeper.path if keeper else group.keeper or '?'}"
        )
        width = max((len(m.path) for m in group.members), default=0)
        for member in group.members:
            flags = "  mirrored" if member.mirrored else ""
            lines.append(
                f"  {'keep' if member.keeper else '    '}  {member.path:<{width}}  {member.similarity:.4f}  "
                f"{dimensions(member):>9}  {member.format or '?':<4}  {human_bytes(member.bytes):>8}{flags}"
            )
    lines.append(
        f"{len(groups)} groups; {removable_count(groups)} images could go ({human_bytes(removable_bytes(groups))}), "
        f"keeping one per group ({keep})"
    )
    return "\n".join(lines)


def member_json(member: GroupMember) -> dict[str, Any]:
    return {
        "id": member.id, "path": member.path, "similarity": member.similarity, "closest": member.closest,
        "keeper": member.keeper, "mirrored": member.mirrored, "width": member.width, "height": member.height,
        "bytes": member.bytes, "format": member.format, "indexed_at": indexed_at(member),
        "metadata": dict(member.metadata),
    }


def to_json(groups: Sequence[DuplicateGroup]) -> list[dict[str, Any]]:
    return [
        {"group": number, "size": len(group.ids), "keeper": group.keeper, "ids": list(group.ids),
         "members": [member_json(m) for m in group.members]}
        for number, group in enumerate(groups, 1)
    ]


def to_csv(groups: Sequence[DuplicateGroup]) -> str:
    """One row per member, with its group's number and size; ``keep`` is 1 for the keeper."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for number, group in enumerate(groups, 1):
        for m in group.members:
            writer.writerow([
                number, len(group.ids), int(m.keeper), m.id, m.path, f"{m.similarity:.4f}", m.closest,
                int(m.mirrored), m.width, m.height, m.bytes, m.format, indexed_at(m),
            ])
    return out.getvalue()
