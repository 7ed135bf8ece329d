"""What a new user sees, through the real front (Triton + Milvus): `dedup index ../shared/eval`, then its groups
each once with the keeper, the gallery in a real browser, keep policies on the facts stored at index time, only
real mirrors flagged, and collection names users use."""

from __future__ import annotations

import io
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from dedup_client import DedupClient, DedupError, DuplicateGroup, IndexItem, IndexStatus, KeepPolicy
from dedup_client.cli import main as cli_main
from PIL import Image

from tests.browser import artifact, open_page

pytestmark = pytest.mark.integration

UKBENCH = "imagededup/base_images/ukbench00120.jpg"
# ukbench00120 with an alpha channel: as many pixels as the JPEG copies (640x480), and the most bytes (a PNG).
ALPHA = "imagededup/alpha_channel_image.png"


@pytest.fixture(scope="module")
def eval_collection(client: DedupClient, eval_dir: Path) -> str:
    """../shared/eval indexed by the CLI, as the README tells a new user to (one file there is corrupt: exit 1)."""
    name = "new-user.eval"
    assert cli_main(["--target", client.target, "--collection", name, "index", str(eval_dir.parent)]) == 1
    return name


def _groups_json(client: DedupClient, collection: str, capsys: pytest.CaptureFixture[str], *args: str
                 ) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert cli_main(["--target", client.target, "--collection", collection, "--json", "groups", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_folder_groups_each_once_with_a_keeper(
    client: DedupClient, eval_collection: str, capsys: pytest.CaptureFixture[str]
) -> None:
    groups = _groups_json(client, eval_collection, capsys)
    first = groups[0]
    members = {m["id"]: m for m in first["members"]}
    assert UKBENCH in members and ALPHA in members  # the ukbench00120 group is the largest
    # Its three identical files, the grey copy, both resizes and both mirrors at least (the 8-degree rotations
    # join when the threshold lets them).
    assert len(first["members"]) == first["size"] == len(set(members)) >= 9
    assert all(m["id"].split("/")[-1].startswith("ukbench00120") for m in first["members"] if m["id"] != ALPHA)
    keeper = first["members"][0]
    assert keeper["keeper"] and keeper["id"] == first["keeper"] and sum(m["keeper"] for m in first["members"]) == 1
    # largest: most pixels (640x480, against the 300x300 resizes), then most bytes: the PNG.
    assert keeper["id"] == ALPHA and (keeper["width"], keeper["height"], keeper["format"]) == (640, 480, "PNG")
    assert keeper["bytes"] == max(m["bytes"] for m in first["members"])
    assert keeper["metadata"]["path"] == ALPHA and keeper["metadata"]["file"].endswith(ALPHA)
    assert all(k not in m["metadata"] for m in first["members"] for k in ("_dedup_width", "_dedup_format"))
    resize = members["imagededup/mixed_images/ukbench00120_resize.jpg"]
    assert (resize["width"], resize["height"]) == (300, 300) and resize["similarity"] >= 0.9
    assert members["imagededup/mixed_images/ukbench00120_hflip.jpg"]["mirrored"]
    assert not members["imagededup/ukbench00120_gray.jpg"]["mirrored"] and not members[UKBENCH]["mirrored"]
    rotations = ["imagededup/mixed_images/ukbench00120_rotation.jpg",
                 "imagededup/mixed_nested_images/lvl1/lvl2a/ukbench00120_rotation.jpg"]
    calibration = client.stats().calibration
    if calibration is not None and calibration.verify_below > 0:
        # Under the threshold on cosine, the 8-degree rotations are verified in by their local features, as
        # CheckDuplicate would: the group is what the service calls duplicates, not the cosine alone.
        assert all(r in members and not members[r]["mirrored"] for r in rotations)
        cosine = [g for g in client.groups(collection=eval_collection, cosine_only=True)
                  if isinstance(g, DuplicateGroup)]
        assert not set(rotations) & set(cosine[0].ids)
    assert all(m["indexed_at"].endswith("Z") and m["bytes"] > 0 for m in first["members"])
    # The text lists each member once, the keeper first, and no pairs.
    assert cli_main(["--target", client.target, "--collection", eval_collection, "groups"]) == 0
    text = capsys.readouterr().out
    assert text.count("ukbench00120_hflip.jpg") == 2 and f"keep  {ALPHA}" in text and "~" not in text
    assert f"group 1: {first['size']} images, keep {ALPHA}" in text
    # --limit and --min-size
    assert len(_groups_json(client, eval_collection, capsys, "--limit", "1")) == 1
    assert all(g["size"] >= 3 for g in _groups_json(client, eval_collection, capsys, "--min-size", "3"))


def test_check_flags_only_real_mirrors(client: DedupClient, eval_collection: str, eval_dir: Path) -> None:
    # A threshold low enough for the 8-degree rotations to be listed, on cosine alone: what the bug report saw.
    result = client.check((eval_dir / "ukbench00120_gray.jpg").read_bytes(), collection=eval_collection, top_k=20,
                          threshold=0.6, cosine_only=True)
    flags = {m.id: m.mirrored for m in result.matches}
    assert flags["imagededup/mixed_images/ukbench00120_rotation.jpg"] is False  # the bug: it was "(mirrored)"
    assert flags["imagededup/mixed_nested_images/lvl1/lvl2a/ukbench00120_rotation.jpg"] is False
    assert flags["imagededup/mixed_images/ukbench00120_hflip.jpg"] is True
    assert flags[UKBENCH] is False
    assert all(set(m.metadata) == {"path", "file"} for m in result.matches)  # no reserved key reaches a client


def test_check_a_folder_one_json_object_per_line(
    client: DedupClient, eval_collection: str, eval_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    folder = eval_dir / "mixed_images"
    argv = ["--target", client.target, "--collection", eval_collection, "--json", "check", str(folder)]
    assert cli_main(argv) == 1  # the corrupt file
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [Path(line["file"]).name for line in lines] == sorted(p.name for p in folder.iterdir())
    by_name = {Path(line["file"]).name: line for line in lines}
    assert by_name["ukbench09268_corrupt.jpg"]["error"].startswith("INVALID_ARGUMENT")
    assert by_name["ukbench00120_rotation.jpg"]["is_duplicate"] is True


def _photo_copies(folder: Path, eval_dir: Path) -> dict[str, Path]:
    """One photo as a lossless PNG, as a big JPEG and as a small JPEG: what the policies choose between."""
    with Image.open(eval_dir / "base_images" / "ukbench09348.jpg") as opened:
        image = opened.convert("RGB")
    folder.mkdir(parents=True)
    files = {"original.png": folder / "original.png", "big.jpg": folder / "big.jpg", "small.jpg": folder / "small.jpg"}
    image.save(files["original.png"])
    image.resize((1280, 960)).save(files["big.jpg"], quality=90)
    image.resize((320, 240)).save(files["small.jpg"], quality=80)
    return files


@pytest.mark.parametrize(
    ("keep", "keeper"),
    [
        pytest.param(KeepPolicy.LARGEST, "big.jpg", id="largest"),
        pytest.param(KeepPolicy.ORIGINAL_FORMAT, "original.png", id="original-format"),
        pytest.param(KeepPolicy.OLDEST, "small.jpg", id="oldest"),
        pytest.param(KeepPolicy.NEWEST, "original.png", id="newest"),
        pytest.param(KeepPolicy.DEFAULT, "big.jpg", id="default"),
    ],
)
def test_keep_policies_on_facts_stored_at_index_time(
    client: DedupClient, eval_dir: Path, tmp_path: Path, collection: str, keep: KeepPolicy, keeper: str
) -> None:
    files = _photo_copies(tmp_path / "photos", eval_dir)
    for name in ("small.jpg", "big.jpg", "original.png"):  # indexed in this order, one write each
        results = list(client.index([IndexItem(id=name, image=files[name].read_bytes(), collection=collection)]))
        assert results[0].status is IndexStatus.INDEXED
    (group,) = [g for g in client.groups(collection=collection, keep=keep) if isinstance(g, DuplicateGroup)]
    assert group.keeper == keeper and group.members[0].id == keeper
    facts = {m.id: (m.width, m.height, m.format, m.bytes) for m in group.members}
    assert facts == {
        "original.png": (640, 480, "PNG", files["original.png"].stat().st_size),
        "big.jpg": (1280, 960, "JPEG", files["big.jpg"].stat().st_size),
        "small.jpg": (320, 240, "JPEG", files["small.jpg"].stat().st_size),
    }
    indexed = {m.id: m.indexed_at_ms for m in group.members}
    assert indexed["small.jpg"] < indexed["big.jpg"] < indexed["original.png"]


def test_gallery_of_the_eval_folder_in_a_browser(
    client: DedupClient, eval_collection: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    groups = _groups_json(client, eval_collection, capsys)
    report = tmp_path / "report.html"
    argv = ["--target", client.target, "--collection", eval_collection, "groups", "--html", str(report)]
    assert cli_main(argv) == 0
    members = sum(g["size"] for g in groups)
    assert f"({len(groups)} groups, {members} images, {members} thumbnails)" in capsys.readouterr().out
    with open_page(report.as_uri()) as (page, log):
        assert page.locator("section.group").count() == len(groups)
        assert page.locator("img.thumb").count() == members  # every member from its local file
        first = page.locator("section.group").first
        keeper = first.locator(".member.keeper")
        assert keeper.count() == 1 and keeper.get_attribute("data-id") == ALPHA
        assert keeper.locator(".badge.keep").text_content() == "KEEP"
        hflip = first.locator(".member[data-id='imagededup/mixed_images/ukbench00120_hflip.jpg']")
        assert hflip.locator(".badge.mirrored").count() == 1
        assert "640\u00d7480 \u00b7 PNG" in keeper.locator(".facts").text_content()
        page.screenshot(path=str(artifact("gallery.png")))

        page.fill("#search", "rotation")
        assert page.get_attribute("#shown", "data-count") == "1"
        page.fill("#search", "")
        weakest = sorted(min(m["similarity"] for m in g["members"]) for g in groups)
        cut = round((weakest[0] + weakest[-1]) / 2, 3) if weakest[0] < weakest[-1] else weakest[0]
        page.eval_on_selector("#min-sim", f"(el) => {{ el.value = '{cut}'; el.dispatchEvent(new Event('input')); }}")
        expected = sum(1 for w in weakest if w >= cut - 1e-9)
        assert int(page.get_attribute("#shown", "data-count")) == expected
        assert page.locator("section.group").count() == expected
        assert log.errors == []
        assert all(url.startswith(("file://", "data:")) for url in log.requests)
    shutil.copy(report, artifact("gallery.html"))


@pytest.mark.parametrize("name", ["my-photos", str(uuid.UUID(int=42)), "tenant-42", "photos.2026"])
def test_collection_names_users_use(client: DedupClient, eval_dir: Path, name: str) -> None:
    photo = (eval_dir / "base_images" / "ukbench09380.jpg").read_bytes()
    results = list(client.index([IndexItem(id="one", image=photo, collection=name, metadata={"path": "one.jpg"})]))
    assert results[0].status is IndexStatus.INDEXED
    assert name in [c.name for c in client.stats().collections]
    (stats,) = client.stats(collection=name).collections
    assert (stats.name, stats.image_count) == (name, 1)
    match = client.check(photo, collection=name).matches[0]
    assert (match.id, match.metadata) == ("one", {"path": "one.jpg"})


@pytest.mark.parametrize("name", ["../etc", "a/b", "a\\b", "..", "x" * 256])
def test_path_like_names_are_refused(client: DedupClient, name: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "PNG")
    with pytest.raises(DedupError) as refused:
        client.check(buffer.getvalue(), collection=name, insert_if_unique=True, id="x")
    assert refused.value.code == "INVALID_ARGUMENT" and "is invalid: use 1-255" in str(refused.value)
