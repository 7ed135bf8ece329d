"""A safe clean-up of a folder: move every copy but the keeper of each duplicate group to a quarantine, and back.

Nothing is ever deleted. A move is one rename (the quarantine must be on the folder's filesystem, so no copy and
delete is ever needed), recorded in the manifest *before* it happens: the manifest is JSON Lines, a header and
then one line per file, each flushed and fsynced before the rename. Wherever a run is interrupted, every file is
in place or in the quarantine, and every file in the quarantine is listed; ``undo`` moves back each listed file
that is in the quarantine, skips those still in place, and never overwrites a file.

Safety checks before any move: the keeper must be on disk in the folder (else its group is left alone), a copy
must be inside the folder, a regular file, and as large as when it was indexed (else it changed since: skipped),
and nothing in the quarantine is overwritten.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from .files import FILE_KEY, PATH_KEY
from .results import DuplicateGroup, GroupMember

MANIFEST_FORMAT = "dedup-manifest/1"


class CleanupError(Exception):
    """The clean-up cannot start (or undo cannot read its manifest): nothing was moved."""


@dataclasses.dataclass(frozen=True)
class PlannedMove:
    group: int  # 1-based, as `dedup groups` numbers them
    relative: str  # the copy, relative to the folder ('/' separators); also its place in the quarantine
    keeper: str  # the file kept in its place, relative to the folder
    similarity: float  # the best similarity joining the copy to its group
    closest: str  # the id it is closest to
    bytes: int
    mirrored: bool = False


@dataclasses.dataclass(frozen=True)
class Skipped:
    relative: str
    reason: str


@dataclasses.dataclass(frozen=True)
class Plan:
    root: Path
    groups: int  # groups that have something to move
    moves: tuple[PlannedMove, ...]
    skipped: tuple[Skipped, ...]

    @property
    def bytes(self) -> int:
        return sum(m.bytes for m in self.moves)


@dataclasses.dataclass(frozen=True)
class MoveResult:
    manifest: Path
    quarantine: Path
    moved: tuple[PlannedMove, ...]
    skipped: tuple[Skipped, ...]


@dataclasses.dataclass(frozen=True)
class UndoResult:
    restored: int
    already_in_place: int
    problems: tuple[Skipped, ...]  # left where they are, with why


def folder_collection(root: Path) -> str:
    """A collection name of its own for a folder: readable, and distinct for two folders of the same name."""
    absolute = root.resolve()
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", absolute.name).strip("-.")[:60] or "root"
    return f"folder-{readable}-{hashlib.sha256(str(absolute).encode()).hexdigest()[:10]}"


def member_file(root: Path, member: GroupMember) -> Path | None:
    """Where a member's file is under ``root`` (None when it is not in the folder): its absolute path as indexed
    when recorded (so a collection indexed from another folder never names a file here by accident), else its
    relative path."""
    recorded = member.metadata.get(FILE_KEY)
    candidate = Path(recorded) if recorded else root / (member.metadata.get(PATH_KEY) or member.id)
    try:
        resolved_root = root.resolve()
        candidate = candidate.absolute()
        # The folder itself must contain it: no "..", no symlinked folder leading out.
        candidate.parent.resolve().relative_to(resolved_root)
    except (ValueError, OSError):
        return None
    return candidate


def _relative(root: Path, path: Path) -> str:
    return (path.parent.resolve() / path.name).relative_to(root.resolve()).as_posix()


def plan_moves(root: Path, groups: Sequence[DuplicateGroup]) -> Plan:
    """Which copies would move: every member but the keeper, when safe (see the module's docstring)."""
    moves: list[PlannedMove] = []
    skipped: list[Skipped] = []
    touched = 0
    for number, group in enumerate(groups, 1):
        keeper = next((m for m in group.members if m.keeper), None)
        keeper_file = member_file(root, keeper) if keeper is not None else None
        if keeper is None or keeper_file is None or not keeper_file.is_file():
            reason = f"group {number}: its keeper {group.keeper!r} is not in the folder"
            skipped += [Skipped(member.path, reason) for member in group.members]
            continue
        keeper_relative = _relative(root, keeper_file)
        before = len(moves)
        for member in group.members:
            if member.keeper:
                continue
            path = member_file(root, member)
            if path is None:
                skipped.append(Skipped(member.path, "not in the folder"))
                continue
            reason = _unsafe(path, member)
            if reason:
                skipped.append(Skipped(_relative(root, path), reason))
                continue
            moves.append(PlannedMove(
                group=number, relative=_relative(root, path), keeper=keeper_relative, similarity=member.similarity,
                closest=member.closest, bytes=path.lstat().st_size, mirrored=member.mirrored,
            ))
        touched += len(moves) > before
    return Plan(root=root, groups=touched, moves=tuple(moves), skipped=tuple(skipped))


def _unsafe(path: Path, member: GroupMember) -> str:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return "no such file"
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    if path.is_symlink() or not path.is_file():
        return "not a regular file"
    if member.bytes and info.st_size != member.bytes:
        return f"changed since it was indexed ({info.st_size} bytes, was {member.bytes})"
    return ""


def check_quarantine(root: Path, quarantine: Path) -> None:
    """The quarantine must be outside the folder (a later index would find the copies again), must not contain
    it, and must be on its filesystem (a move is one rename)."""
    resolved_root, resolved_q = root.resolve(), quarantine.resolve()
    if resolved_q == resolved_root or resolved_root in resolved_q.parents:
        raise CleanupError(f"the quarantine {quarantine} is inside {root}: choose a folder outside it")
    if resolved_q in resolved_root.parents:
        raise CleanupError(f"the quarantine {quarantine} contains {root}: choose a folder beside it")
    existing = resolved_q
    while not existing.exists():
        existing = existing.parent
    if os.stat(existing).st_dev != os.stat(resolved_root).st_dev:
        raise CleanupError(
            f"the quarantine {quarantine} is on another filesystem than {root}: files are only ever renamed "
            "(never copied and deleted), so choose a folder on the same one"
        )


def default_manifest(quarantine: Path) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return quarantine / f"dedup-manifest-{stamp}.jsonl"


class _Journal:
    """Append-only JSON Lines, each line on disk (fsync) before the caller goes on."""

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def apply_plan(
    plan: Plan, quarantine: Path, *, manifest: Path | None = None, collection: str = "", keep: str = "",
    progress: bool = False,
) -> MoveResult:
    """Move the plan's copies into ``quarantine`` (same relative paths), recording each in the manifest first."""
    root = plan.root.resolve()
    check_quarantine(root, quarantine)
    quarantine.mkdir(parents=True, exist_ok=True)
    quarantine = quarantine.resolve()
    manifest = (manifest or default_manifest(quarantine)).absolute()
    moved: list[PlannedMove] = []
    skipped: list[Skipped] = []
    try:
        handle = manifest.open("x", encoding="utf-8")  # never overwrite a manifest: it is the way back
    except FileExistsError as exc:
        raise CleanupError(f"the manifest {manifest} exists already: name another one") from exc
    with handle:
        journal = _Journal(handle)
        journal.write({"format": MANIFEST_FORMAT, "root": str(root), "quarantine": str(quarantine),
                       "collection": collection, "keep": keep, "started_at": _now(), "planned": len(plan.moves)})
        for move in tqdm(plan.moves, desc="moving", unit="file", disable=not progress, file=sys.stderr):
            source, target = root / move.relative, quarantine / move.relative
            if target.exists() or target.is_symlink():
                skipped.append(Skipped(move.relative, f"{target} exists already: not overwritten"))
                continue
            if not source.is_file():
                skipped.append(Skipped(move.relative, "gone since the plan was made"))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            journal.write({"move": move.relative, "keeper": move.keeper, "group": move.group,
                           "similarity": move.similarity, "bytes": move.bytes, "sha256": _sha256(source)})
            os.rename(source, target)  # atomic: the file is in one place or the other, never in neither
            moved.append(move)
        journal.write({"finished_at": _now(), "moved": len(moved), "skipped": len(skipped)})
    return MoveResult(manifest=manifest, quarantine=quarantine, moved=tuple(moved), skipped=tuple(skipped))


@dataclasses.dataclass(frozen=True)
class _Manifest:
    root: Path
    quarantine: Path
    moves: tuple[dict[str, Any], ...]


def read_manifest(path: Path) -> _Manifest:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CleanupError(f"cannot read the manifest {path}: {exc.strerror or exc}") from exc
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # a last line cut short by a crash: the move it announced never started
            raise CleanupError(f"{path}:{number} is not JSON: not a dedup manifest?") from None
        records.append(record)
    if not records or records[0].get("format") != MANIFEST_FORMAT:
        raise CleanupError(f"{path} is not a dedup manifest (no {MANIFEST_FORMAT!r} header)")
    header = records[0]
    moves = tuple(r for r in records[1:] if isinstance(r.get("move"), str))
    for record in moves:
        if Path(record["move"]).is_absolute() or ".." in Path(record["move"]).parts:
            raise CleanupError(f"{path}: path {record['move']!r} is not relative to the folder")
    return _Manifest(root=Path(header["root"]), quarantine=Path(header["quarantine"]), moves=moves)


def undo(manifest_path: Path, *, progress: bool = False) -> UndoResult:
    """Move every listed file that is in the quarantine back to its place; never overwrite; idempotent."""
    manifest = read_manifest(manifest_path)
    restored = in_place = 0
    problems: list[Skipped] = []
    for record in tqdm(list(reversed(manifest.moves)), desc="restoring", unit="file", disable=not progress,
                       file=sys.stderr):
        relative = record["move"]
        source, target = manifest.root / relative, manifest.quarantine / relative
        quarantined = target.is_file()
        if source.exists() or source.is_symlink():
            if quarantined:
                problems.append(Skipped(relative, f"{source} exists again: left in the quarantine"))
            else:
                in_place += 1  # never moved (interrupted before the rename), or restored by an earlier undo
            continue
        if not quarantined:
            problems.append(Skipped(relative, f"in neither place: not at {source} nor at {target}"))
            continue
        source.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target, source)
        restored += 1
        if record.get("sha256") and _sha256(source) != record["sha256"]:
            problems.append(Skipped(relative, "restored, but its content changed while in the quarantine"))
        _remove_empty_parents(target.parent, manifest.quarantine)
    with manifest_path.open("a", encoding="utf-8") as handle:
        _Journal(handle).write({"undone_at": _now(), "restored": restored, "already_in_place": in_place,
                                "problems": len(problems)})
    return UndoResult(restored=restored, already_in_place=in_place, problems=tuple(problems))


def _remove_empty_parents(folder: Path, stop: Path) -> None:
    """Folders the moves made in the quarantine, once empty (rmdir refuses any that is not)."""
    for current in _upwards(folder, stop):
        try:
            current.rmdir()
        except OSError:
            return


def _upwards(folder: Path, stop: Path) -> Iterator[Path]:
    while folder != stop and stop in folder.parents:
        yield folder
        folder = folder.parent
