"""`dedup dedupe` on a copy of ../shared/eval through the real front: the plan first (nothing moves), then every
copy but each group's keeper moved to a quarantine with its relative path, then `dedup undo`: every file back,
byte-identical."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from dedup_client import DedupClient
from dedup_client.cleanup import MANIFEST_FORMAT, folder_collection
from dedup_client.cli import main as cli_main

pytestmark = pytest.mark.integration


def _tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_dedupe_a_copy_of_the_eval_folder_and_undo_it(
    client: DedupClient, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "eval"
    shutil.copytree(eval_dir.parent, folder)
    before = _tree(folder)
    quarantine = tmp_path / "quarantine"
    target = ["--target", client.target]

    # 1. The plan: the folder is indexed into a collection of its own, and nothing moves.
    assert cli_main([*target, "dedupe", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"indexed {folder} into collection {folder_collection(folder)!r}" in out
    assert "group 1: keep imagededup/alpha_channel_image.png" in out  # largest: 640x480, the most bytes
    assert "would move imagededup/mixed_images/ukbench00120_hflip.jpg" in out
    assert "nothing was moved" in out
    assert _tree(folder) == before and not quarantine.exists()

    # 2. The moves: the collection is reused; every copy but the keepers goes, with its relative path.
    assert cli_main([*target, "--json", "dedupe", str(folder), "--move-to", str(quarantine)]) == 0
    captured = capsys.readouterr()
    assert "reusing collection" in captured.err
    report = json.loads(captured.out)
    moved = [m["relative"] for m in report["moves"]]
    keepers = {m["keeper"] for m in report["moves"]}
    assert report["moved"] and moved and "imagededup/mixed_images/ukbench00120_hflip.jpg" in moved
    assert "imagededup/alpha_channel_image.png" in keepers and not keepers & set(moved)
    manifest = Path(report["manifest"])
    in_place, quarantined = _tree(folder), _tree(quarantine)
    quarantined.pop(manifest.relative_to(quarantine).as_posix())
    assert sorted(quarantined) == sorted(moved)
    assert {**in_place, **quarantined} == before and not set(in_place) & set(quarantined)
    assert keepers <= set(in_place)  # one file of each group stays
    assert "imagededup/base_images/ukbench00120.jpg" in moved and "imagededup/ukbench00120_gray.jpg" in moved
    assert "imagededup/mixed_images/ukbench09268_corrupt.jpg" in in_place  # INVALID: never in a group
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert lines[0]["format"] == MANIFEST_FORMAT and [r["move"] for r in lines if "move" in r] == moved

    # 3. Undo: everything back where it was, byte for byte.
    assert cli_main([*target, "undo", str(manifest)]) == 0
    assert f"restored {len(moved)} files" in capsys.readouterr().out
    assert _tree(folder) == before
    assert [p.name for p in quarantine.iterdir()] == [manifest.name]


def test_dedupe_refuses_a_quarantine_inside_the_folder(
    client: DedupClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    assert cli_main(["--target", client.target, "dedupe", str(folder), "--move-to", str(folder / "dupes")]) == 2
    assert "inside" in capsys.readouterr().err
