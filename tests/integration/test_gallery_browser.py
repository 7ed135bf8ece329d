"""The gallery in a real browser at scale: 10,000 groups stay usable (one page of groups in the DOM at a time),
the filters and the pager work, and the page asks for nothing but itself."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from dedup_client import gallery
from dedup_client.results import DuplicateGroup, GroupMember
from PIL import Image

from tests.browser import open_page

pytestmark = pytest.mark.slow

GROUPS = 10_000


def _synthetic(count: int) -> list[DuplicateGroup]:
    """Groups of 2-4 members, the weakest similarity of group n falling from 1.0 as n grows."""
    groups = []
    for n in range(count):
        size = 2 + n % 3
        weakest = round(1.0 - 0.3 * n / count, 4)
        ids = [f"g{n:05d}/img{k}.jpg" for k in range(size)]
        members = tuple(
            GroupMember(id=i, similarity=1.0 if k == 0 else weakest, closest=ids[0], keeper=k == 0,
                        mirrored=k == 2, metadata={"path": i}, width=640, height=480, bytes=100_000 - k,
                        format="JPEG")
            for k, i in enumerate(ids)
        )
        groups.append(DuplicateGroup(ids=tuple(ids), pairs=(), members=members, keeper=ids[0]))
    groups.sort(key=lambda g: -len(g.ids))  # largest first, as the server answers
    return groups


def _shown(page: Any) -> int:
    return int(page.get_attribute("#shown", "data-count"))


def test_ten_thousand_groups_stay_usable(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (320, 240), (30, 90, 200)).save(photo)
    groups = _synthetic(GROUPS)
    first_page = {m.id for g in groups[: gallery.PAGE_SIZE] for m in g.members}
    report = tmp_path / "big.html"
    gallery.write_gallery(report, groups, gallery.GalleryInfo(collection="big", keep="largest"),
                          locate=lambda m: photo if m.id in first_page else None)
    started = time.monotonic()
    with open_page(report.as_uri()) as (page, log):
        loaded_s = time.monotonic() - started
        assert loaded_s < 20, f"{GROUPS} groups took {loaded_s:.1f} s to show"
        assert _shown(page) == GROUPS
        assert page.locator("section.group").count() == gallery.PAGE_SIZE  # one page in the DOM
        assert page.locator("img.thumb").count() == len(first_page)
        assert page.text_content("#page-info") == f"page 1 of {GROUPS // gallery.PAGE_SIZE}"
        page.click("#next")
        assert page.locator("section.group").first.get_attribute("data-group") == str(gallery.PAGE_SIZE + 1)
        assert page.text_content("#page-info") == f"page 2 of {GROUPS // gallery.PAGE_SIZE}"
        assert page.locator("img.thumb").count() == 0 and page.locator(".noimg").count() > 0

        page.fill("#search", "g01234/")
        assert _shown(page) == 1 and page.text_content("#page-info") == "page 1 of 1"
        assert page.locator(".member.hit").count() == 2 + 1234 % 3
        page.fill("#search", "")

        expected = sum(1 for g in groups if min(m.similarity for m in g.members) >= 0.85 - 1e-9)
        page.eval_on_selector("#min-sim", "(el) => { el.value = '0.85'; el.dispatchEvent(new Event('input')); }")
        assert _shown(page) == expected and 0 < expected < GROUPS
        assert "min=0.850" in page.evaluate("location.hash")  # the view is in the URL
        page.eval_on_selector("#max-sim", "(el) => { el.value = '0.9'; el.dispatchEvent(new Event('input')); }")
        between = sum(1 for g in groups if 0.85 - 1e-9 <= min(m.similarity for m in g.members) <= 0.9 + 1e-9)
        assert _shown(page) == between
        assert log.errors == []
        assert all(url.startswith(("file://", "data:")) for url in log.requests), log.requests
