"""The folder clean-up without a server: plan, move to a quarantine with a manifest, undo; interrupted runs; the
safety checks. Files come back byte-identical, and nothing is ever deleted or overwritten."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from dedup_client import cleanup
from dedup_client.results import DuplicateGroup, GroupMember


def _tree(root: Path) -> dict[str, str]:
    """Every file under root (relative path -> sha256), manifests aside."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith("dedup-manifest")
    }


def _member(root: Path, relative: str, *, keeper: bool = False, similarity: float = 0.95,
            file_key: bool = True) -> GroupMember:
    path = root / relative
    metadata = {"path": relative, **({"file": str(path.absolute())} if file_key else {})}
    return GroupMember(id=relative, similarity=similarity, closest="x", keeper=keeper, mirrored=False,
                       metadata=metadata, bytes=path.stat().st_size if path.exists() else 0)


def _group(root: Path, keeper: str, *copies: str) -> DuplicateGroup:
    members = (_member(root, keeper, keeper=True),) + tuple(_member(root, c) for c in copies)
    return DuplicateGroup(ids=tuple(sorted(m.id for m in members)), pairs=(), members=members, keeper=keeper)


@pytest.fixture
def library(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for relative, content in {
        "a.jpg": b"A" * 300, "copies/a-small.jpg": b"a" * 100, "copies/deep/a-again.jpg": b"a2" * 40,
        "b.png": b"B" * 200, "b-copy.png": b"b" * 150, "unique.gif": b"U" * 50,
    }.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)
    return root


def _groups(root: Path) -> list[DuplicateGroup]:
    return [_group(root, "a.jpg", "copies/a-small.jpg", "copies/deep/a-again.jpg"), _group(root, "b.png", "b-copy.png")]


def test_plan_moves_every_copy_but_the_keeper(library: Path) -> None:
    plan = cleanup.plan_moves(library, _groups(library))
    assert [(m.group, m.relative, m.keeper) for m in plan.moves] == [
        (1, "copies/a-small.jpg", "a.jpg"), (1, "copies/deep/a-again.jpg", "a.jpg"), (2, "b-copy.png", "b.png"),
    ]
    assert plan.groups == 2 and plan.bytes == 100 + 80 + 150 and not plan.skipped


def test_move_then_undo_gives_every_file_back_byte_identical(library: Path, tmp_path: Path) -> None:
    before = _tree(library)
    quarantine = tmp_path / "quarantine"
    result = cleanup.apply_plan(cleanup.plan_moves(library, _groups(library)), quarantine, collection="c", keep="x")
    assert sorted(m.relative for m in result.moved) == ["b-copy.png", "copies/a-small.jpg", "copies/deep/a-again.jpg"]
    assert sorted(_tree(library)) == ["a.jpg", "b.png", "unique.gif"]  # keepers and the unique file stay
    assert _tree(quarantine) == {k: before[k] for k in ("b-copy.png", "copies/a-small.jpg", "copies/deep/a-again.jpg")}
    lines = [json.loads(line) for line in result.manifest.read_text().splitlines()]
    assert lines[0]["format"] == cleanup.MANIFEST_FORMAT and lines[0]["root"] == str(library.resolve())
    assert [line["move"] for line in lines[1:-1]] == [m.relative for m in result.moved]
    assert lines[1]["sha256"] == before["copies/a-small.jpg"] and lines[-1]["moved"] == 3

    undone = cleanup.undo(result.manifest)
    assert (undone.restored, undone.already_in_place, undone.problems) == (3, 0, ())
    assert _tree(library) == before
    assert [p.name for p in quarantine.iterdir()] == [result.manifest.name]  # empty folders it made are gone
    again = cleanup.undo(result.manifest)  # idempotent
    assert (again.restored, again.already_in_place, again.problems) == (0, 3, ())
    assert _tree(library) == before


def test_an_interrupted_move_leaves_every_file_in_place_or_quarantined_and_listed(
    library: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _tree(library)
    real_rename = os.rename
    calls = {"n": 0}

    def crash_on_second(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C (or a crash) after the manifest line, before the rename
        real_rename(src, dst)

    monkeypatch.setattr(cleanup.os, "rename", crash_on_second)
    quarantine = tmp_path / "q"
    manifest = tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        cleanup.apply_plan(cleanup.plan_moves(library, _groups(library)), quarantine, manifest=manifest)
    monkeypatch.setattr(cleanup.os, "rename", real_rename)
    in_place, quarantined = _tree(library), _tree(quarantine)
    assert set(in_place) | set(quarantined) == set(before) and not set(in_place) & set(quarantined)
    assert {**in_place, **quarantined} == before
    listed = {json.loads(line).get("move") for line in manifest.read_text().splitlines()}
    assert set(quarantined) <= listed
    undone = cleanup.undo(manifest)
    assert (undone.restored, undone.already_in_place) == (1, 1)
    assert _tree(library) == before


def test_a_manifest_cut_mid_line_still_undoes(library: Path, tmp_path: Path) -> None:
    before = _tree(library)
    result = cleanup.apply_plan(cleanup.plan_moves(library, _groups(library)), tmp_path / "q")
    text = result.manifest.read_text().splitlines()
    result.manifest.write_text("\n".join(text[:-1]) + '\n{"move": "half')  # the last line torn by a crash
    assert cleanup.undo(result.manifest).restored == 3
    assert _tree(library) == before


def test_safety_checks(library: Path, tmp_path: Path) -> None:
    (library / "changed.jpg").write_bytes(b"c" * 10)
    changed = _member(library, "changed.jpg")
    (library / "changed.jpg").write_bytes(b"c" * 11)  # edited since it was indexed
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(b"o")
    keeper = _member(library, "a.jpg", keeper=True)
    stray = GroupMember(id="../elsewhere.jpg", similarity=0.9, closest="a.jpg", keeper=False, mirrored=False,
                        metadata={"path": "../elsewhere.jpg"})
    gone = GroupMember(id="gone.jpg", similarity=0.9, closest="a.jpg", keeper=False, mirrored=False,
                       metadata={"path": "gone.jpg"})
    no_keeper = DuplicateGroup(ids=("x", "b-copy.png"), pairs=(), keeper="x", members=(
        GroupMember(id="x", similarity=0.9, closest="b-copy.png", keeper=True, mirrored=False,
                    metadata={"path": "x-is-not-here.jpg"}),
        _member(library, "b-copy.png")))
    groups = [DuplicateGroup(ids=(), pairs=(), keeper="a.jpg", members=(keeper, changed, stray, gone)), no_keeper]
    plan = cleanup.plan_moves(library, groups)
    assert plan.moves == ()
    reasons = {s.relative: s.reason for s in plan.skipped}
    assert "changed since it was indexed" in reasons["changed.jpg"]
    assert reasons["../elsewhere.jpg"] == "not in the folder" and reasons["gone.jpg"] == "no such file"
    assert "its keeper 'x' is not in the folder" in reasons["b-copy.png"]  # never quarantine a group's last copy
    assert outside.read_bytes() == b"o"

    with pytest.raises(cleanup.CleanupError, match="inside"):
        cleanup.check_quarantine(library, library / "dupes")
    with pytest.raises(cleanup.CleanupError, match="contains"):
        cleanup.check_quarantine(library, tmp_path)


def test_nothing_in_the_quarantine_is_overwritten_and_manifests_are_never_replaced(
    library: Path, tmp_path: Path
) -> None:
    quarantine = tmp_path / "q"
    (quarantine / "copies").mkdir(parents=True)
    (quarantine / "copies" / "a-small.jpg").write_bytes(b"already here")
    manifest = tmp_path / "m.jsonl"
    result = cleanup.apply_plan(cleanup.plan_moves(library, _groups(library)), quarantine, manifest=manifest)
    assert "copies/a-small.jpg" not in [m.relative for m in result.moved]
    assert (quarantine / "copies" / "a-small.jpg").read_bytes() == b"already here"
    assert (library / "copies" / "a-small.jpg").exists()
    with pytest.raises(cleanup.CleanupError, match="exists already"):
        cleanup.apply_plan(cleanup.plan_moves(library, _groups(library)), quarantine, manifest=manifest)


def test_undo_never_overwrites_a_file_that_came_back(library: Path, tmp_path: Path) -> None:
    result = cleanup.apply_plan(cleanup.plan_moves(library, _groups(library)), tmp_path / "q")
    (library / "b-copy.png").write_bytes(b"a new file by the user")
    undone = cleanup.undo(result.manifest)
    assert undone.restored == 2 and [p.relative for p in undone.problems] == ["b-copy.png"]
    assert (library / "b-copy.png").read_bytes() == b"a new file by the user"
    assert (tmp_path / "q" / "b-copy.png").exists()


def test_folder_collections_are_valid_names_of_their_own(tmp_path: Path) -> None:
    one, two = tmp_path / "a" / "My Photos", tmp_path / "b" / "My Photos"
    one.mkdir(parents=True)
    two.mkdir(parents=True)
    name = cleanup.folder_collection(one)
    assert name.startswith("folder-My-Photos-") and name != cleanup.folder_collection(two)
    from dedup_server.index import COLLECTION_NAME
    assert COLLECTION_NAME.match(name)


def test_not_a_manifest(tmp_path: Path) -> None:
    bogus = tmp_path / "x.jsonl"
    bogus.write_text('{"hello": 1}\n')
    with pytest.raises(cleanup.CleanupError, match="not a dedup manifest"):
        cleanup.undo(bogus)
    with pytest.raises(cleanup.CleanupError, match="cannot read"):
        cleanup.undo(tmp_path / "missing.jsonl")
