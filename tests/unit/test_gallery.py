"""The gallery page without a browser: its data, thumbnails from local files, and ids that try to break out."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

from dedup_client import gallery
from dedup_client.results import DuplicateGroup, GroupMember
from PIL import Image


def _group(*ids: str, keeper: str) -> DuplicateGroup:
    members = tuple(
        GroupMember(id=i, similarity=0.9 + n / 100, closest=ids[0], keeper=i == keeper, mirrored=n == 2,
                    metadata={"path": f"dir/{i}"}, width=64, height=48, bytes=1000 * (n + 1), format="PNG")
        for n, i in enumerate(ids)
    )
    return DuplicateGroup(ids=tuple(sorted(ids)), pairs=(), members=members, keeper=keeper)


def _embedded(page: str, element_id: str) -> object:
    match = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', page, re.S)
    assert match is not None
    return json.loads(match.group(1))


def test_page_embeds_groups_and_thumbnails_and_requests_nothing(tmp_path: Path) -> None:
    image = tmp_path / "dir" / "a.png"
    image.parent.mkdir()
    Image.new("RGBA", (400, 300), (0, 128, 255, 128)).save(image)
    hostile = '</script><script>alert(1)</script><!--'
    groups = [_group("a.png", "b.png", hostile, keeper="b.png"), _group("c.png", "d.png", keeper="c.png")]
    out = tmp_path / "report.html"
    result = gallery.write_gallery(
        out, groups, gallery.GalleryInfo(collection="my-<photos>", keep="largest", threshold=0.63),
        locate=lambda m: tmp_path / m.metadata["path"],
    )
    assert (result.groups, result.images, result.thumbnails) == (2, 5, 1)
    page = out.read_text()
    assert page.count("<script>") == 1 and "alert(1)</script>" not in page  # the id stays data
    assert "<title>dedup: duplicate groups of my-&lt;photos&gt;</title>" in page
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # nothing fetched, ever
    data = _embedded(page, "dedup-data")
    assert isinstance(data, dict) and data["page_size"] == gallery.PAGE_SIZE and data["keep"] == "largest"
    first = data["groups"][0]
    assert first["keeper"] == "b.png" and [m["id"] for m in first["members"]] == ["a.png", "b.png", hostile]
    assert [m["k"] for m in first["members"]] == [0, 1, 0] and first["members"][2]["m"] == 1
    assert [m["t"] for m in first["members"]] == [0, -1, -1]
    (thumb,) = _embedded(page, "dedup-thumbs")  # type: ignore[misc]
    assert thumb.startswith("data:image/jpeg;base64,")
    with Image.open(io.BytesIO(base64.b64decode(thumb.split(",", 1)[1]))) as decoded:
        assert decoded.format == "JPEG" and max(decoded.size) == gallery.THUMB_SIDE
    assert not (tmp_path / "report.html.partial").exists()


def test_thumbnails_of_what_is_not_an_image_are_none(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a JPEG")
    assert gallery.thumbnail_data_uri(text) is None
    assert gallery.thumbnail_data_uri(tmp_path / "missing.png") is None
    secret = tmp_path / "id_rsa"
    secret.write_bytes(b"-----BEGIN")
    assert gallery.thumbnail_data_uri(secret) is None  # only image files are ever opened
    assert gallery.make_thumbnails([None, text]) == [None, None]
