"""A self-contained HTML gallery of duplicate groups: one file, no network, thumbnails inline.

The page embeds the groups as JSON and renders one page of them at a time (PAGE_SIZE groups), so 10,000 groups
stay usable: the browser parses the data once and keeps only one page in the DOM. Filters: the weakest similarity
of a group (from/to sliders) and a search box over ids and paths; the state lives in the URL's fragment, so a view
can be bookmarked. A Content-Security-Policy forbids every request: images are ``data:`` URIs, scripts and styles
inline.

Thumbnails are small JPEGs made here with Pillow from the local files (``locate`` finds a member's file); a member
without one shows its id instead.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps
from tqdm import tqdm

from .files import DEFAULT_EXTENSIONS
from .results import DuplicateGroup, GroupMember

PAGE_SIZE = 50
THUMB_SIDE = 128
THUMB_QUALITY = 70
# Files larger than this are not opened for a thumbnail (the page shows the id).
MAX_THUMB_SOURCE_BYTES = 64 * 1024 * 1024

Locate = Callable[[GroupMember], Path | None]


@dataclasses.dataclass(frozen=True)
class GalleryInfo:
    """What the page says about itself, in its header."""

    collection: str
    keep: str  # the keep policy, as the CLI spells it
    threshold: float = 0.0  # 0: the server's default
    generated_at: str = ""


@dataclasses.dataclass(frozen=True)
class GalleryResult:
    path: Path
    groups: int
    images: int
    thumbnails: int  # members shown with a thumbnail; the others show their id


def thumbnail_data_uri(path: Path, side: int = THUMB_SIDE) -> str | None:
    """A JPEG thumbnail (longest side ``side``) of an image file as a data: URI; None when it cannot be read."""
    try:
        if path.suffix.lower().lstrip(".") not in DEFAULT_EXTENSIONS or path.stat().st_size > MAX_THUMB_SOURCE_BYTES:
            return None
        with Image.open(path) as opened:
            if opened.format in ("JPEG", "MPO"):
                opened.draft("RGB", (side * 2, side * 2))  # decode at a fraction of the size: much faster
            opened.seek(0)
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(flat, rgba)
            image = image.convert("RGB")
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    except Exception:  # unreadable, not an image, truncated: the page shows the id
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def make_thumbnails(
    paths: Sequence[Path | None], *, side: int = THUMB_SIDE, progress: bool = False
) -> list[str | None]:
    """Thumbnails of ``paths`` in order (None where a path is None or unreadable), a few at a time."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumb") as pool, tqdm(
        total=len(paths), desc="thumbnails", unit="img", disable=not progress, file=sys.stderr
    ) as bar:
        results: list[str | None] = []
        for thumb in pool.map(lambda p: thumbnail_data_uri(p, side) if p is not None else None, paths):
            results.append(thumb)
            bar.update(1)
    return results


def page_data(groups: Sequence[DuplicateGroup], thumbs: dict[str, int], info: GalleryInfo) -> dict[str, Any]:
    """What the page's script reads: groups (largest first, as the server sent them), members with their facts."""
    return {
        "collection": info.collection,
        "keep": info.keep,
        "threshold": info.threshold,
        "generated_at": info.generated_at,
        "page_size": PAGE_SIZE,
        "groups": [
            {
                "keeper": group.keeper,
                "members": [
                    {"id": m.id, "path": m.path, "w": m.width, "h": m.height, "b": m.bytes, "f": m.format,
                     "s": round(m.similarity, 4), "c": m.closest, "k": int(m.keeper), "m": int(m.mirrored),
                     "t": thumbs.get(m.id, -1)}
                    for m in group.members
                ],
            }
            for group in groups
        ],
    }


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: no "</script>" or "<!--" can appear."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def render_page(groups: Sequence[DuplicateGroup], thumbnails: Sequence[str], thumb_of: dict[str, int],
                info: GalleryInfo) -> str:
    data = page_data(groups, thumb_of, info)
    title = f"dedup: duplicate groups of {info.collection}"
    return (
        _TEMPLATE.replace("__TITLE__", _html_text(title))
        .replace("__DATA__", _script_json(data))
        .replace("__THUMBS__", _script_json(list(thumbnails)))
    )


def write_gallery(
    path: Path, groups: Sequence[DuplicateGroup], info: GalleryInfo, *, locate: Locate,
    side: int = THUMB_SIDE, progress: bool = False,
) -> GalleryResult:
    """Write the page to ``path`` (atomically: a half-written page never replaces a good one)."""
    if not info.generated_at:
        info = dataclasses.replace(
            info, generated_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
        )
    ids = list(dict.fromkeys(m.id for g in groups for m in g.members))
    by_id = {m.id: m for g in groups for m in g.members}
    made = make_thumbnails([locate(by_id[i]) for i in ids], side=side, progress=progress)
    thumbnails: list[str] = []
    thumb_of: dict[str, int] = {}
    for image_id, thumb in zip(ids, made, strict=True):
        if thumb is not None:
            thumb_of[image_id] = len(thumbnails)
            thumbnails.append(thumb)
    page = render_page(groups, thumbnails, thumb_of, info)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(page, encoding="utf-8")
    os.replace(partial, path)
    return GalleryResult(path=path, groups=len(groups), images=len(ids), thumbnails=len(thumbnails))


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<link rel="icon" href="data:,">
<title>__TITLE__</title>
<style>
  :root { --keep: #1a7f37; --mirror: #b35900; --line: #d0d7de; --muted: #57606a; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328;
         background: #f6f8fa; }
  header { position: sticky; top: 0; z-index: 1; background: #fff; border-bottom: 1px solid var(--line);
           padding: 10px 16px; }
  h1 { font-size: 18px; margin: 0 0 4px; }
  #summary { color: var(--muted); margin: 0 0 8px; }
  #controls { display: flex; flex-wrap: wrap; gap: 8px 18px; align-items: center; }
  #controls label { display: inline-flex; gap: 6px; align-items: center; }
  #controls input[type=search] { width: 18em; padding: 3px 6px; }
  output { font-variant-numeric: tabular-nums; min-width: 3.5em; display: inline-block; }
  #pager button { padding: 2px 10px; }
  main { padding: 12px 16px 40px; }
  .group { background: #fff; border: 1px solid var(--line); border-radius: 8px; margin: 0 0 14px; padding: 10px 12px; }
  .group h2 { font-size: 15px; margin: 0 0 8px; }
  .group h2 .muted { color: var(--muted); font-weight: normal; }
  .members { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 10px; }
  .member { border: 2px solid var(--line); border-radius: 6px; padding: 6px; background: #fff; min-width: 0; }
  .member.keeper { border-color: var(--keep); background: #f0fff4; }
  .member.hit { outline: 3px solid #0969da; }
  .frame { height: 132px; display: flex; align-items: center; justify-content: center; background: #eaeef2;
           border-radius: 4px; overflow: hidden; }
  .frame img { max-width: 100%; max-height: 132px; display: block; }
  .noimg { color: var(--muted); font-size: 12px; padding: 6px; word-break: break-all; text-align: center; }
  .path { font-weight: 600; word-break: break-all; margin-top: 4px; }
  .facts, .sim { color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
  .badge { display: inline-block; font-size: 11px; font-weight: 700; border-radius: 10px; padding: 0 7px;
           margin: 3px 4px 0 0; color: #fff; }
  .badge.keep { background: var(--keep); }
  .badge.mirrored { background: var(--mirror); }
  #empty { color: var(--muted); }
</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1>
  <p id="summary"></p>
  <div id="controls">
    <label>weakest similarity from <input id="min-sim" type="range" step="0.001"><output id="min-out"></output></label>
    <label>to <input id="max-sim" type="range" step="0.001"><output id="max-out"></output></label>
    <label>search <input id="search" type="search" placeholder="id or path"></label>
    <span id="pager"><button id="prev" type="button">&larr; prev</button>
      <span id="page-info"></span>
      <button id="next" type="button">next &rarr;</button></span>
    <span id="shown"></span>
  </div>
</header>
<main id="groups"></main>
<script type="application/json" id="dedup-data">__DATA__</script>
<script type="application/json" id="dedup-thumbs">__THUMBS__</script>
<script>
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("dedup-data").textContent);
  const thumbs = JSON.parse(document.getElementById("dedup-thumbs").textContent);
  const pageSize = data.page_size;
  const groups = data.groups.map(function (g, i) {
    // A group's weakest link: the lowest of its members' best similarities (what the sliders filter on).
    const sims = g.members.map(function (m) { return m.s; });
    return {
      number: i + 1, keeper: g.keeper, members: g.members,
      weakest: sims.reduce(function (a, b) { return Math.min(a, b); }, 1),
      text: g.members.map(function (m) { return (m.path + "\\n" + m.id).toLowerCase(); }).join("\\n"),
    };
  });
  const $ = function (id) { return document.getElementById(id); };
  const minInput = $("min-sim"), maxInput = $("max-sim"), search = $("search"), list = $("groups");
  const weakest = groups.map(function (g) { return g.weakest; });
  // Not Math.min.apply: argument lists have a limit, and there may be 100,000 groups.
  const low = Math.floor(weakest.reduce(function (a, b) { return Math.min(a, b); }, 1) * 1000) / 1000;
  for (const input of [minInput, maxInput]) { input.min = String(low); input.max = "1"; }
  const state = { min: low, max: 1, q: "", page: 0 };

  function bytes(n) {
    if (!n) return "?";
    const units = ["B", "KB", "MB", "GB"];
    let v = n, u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
    return (u ? v.toFixed(1) : String(v)) + " " + units[u];
  }
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const num = function (key, fallback) {
      const v = parseFloat(params.get(key));
      return Number.isFinite(v) ? v : fallback;
    };
    state.min = num("min", low); state.max = num("max", 1);
    state.q = params.get("q") || ""; state.page = Math.max(0, Math.floor(num("page", 1)) - 1);
  }
  function writeHash() {
    const params = new URLSearchParams();
    if (state.min > low) params.set("min", state.min.toFixed(3));
    if (state.max < 1) params.set("max", state.max.toFixed(3));
    if (state.q) params.set("q", state.q);
    if (state.page) params.set("page", String(state.page + 1));
    const hash = params.toString();
    history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }
  function matches(g) {
    return g.weakest >= state.min - 1e-9 && g.weakest <= state.max + 1e-9 &&
      (!state.q || g.text.indexOf(state.q.toLowerCase()) >= 0);
  }
  function member(m) {
    const card = el("div", "member" + (m.k ? " keeper" : ""));
    card.dataset.id = m.id;
    if (state.q && (m.path + "\\n" + m.id).toLowerCase().indexOf(state.q.toLowerCase()) >= 0) card.classList.add("hit");
    const frame = el("div", "frame");
    if (m.t >= 0) {
      const img = el("img", "thumb");
      img.alt = m.path; img.src = thumbs[m.t]; img.loading = "lazy";
      frame.appendChild(img);
    } else {
      frame.appendChild(el("div", "noimg", m.id));
    }
    card.appendChild(frame);
    const path = el("div", "path", m.path);
    path.title = m.id;
    card.appendChild(path);
    card.appendChild(el("div", "facts",
      (m.w && m.h ? m.w + "\\u00d7" + m.h : "?") + " \\u00b7 " + (m.f || "?") + " \\u00b7 " + bytes(m.b)));
    const sim = el("div", "sim", "similarity " + m.s.toFixed(4) + (m.c ? " to " + m.c.split("/").pop() : ""));
    sim.title = m.c;
    card.appendChild(sim);
    if (m.k) card.appendChild(el("span", "badge keep", "KEEP"));
    if (m.m) card.appendChild(el("span", "badge mirrored", "mirrored"));
    return card;
  }
  function group(g) {
    const section = el("section", "group");
    section.dataset.group = String(g.number);
    const title = el("h2", null, "Group " + g.number + " \\u00b7 " + g.members.length + " images ");
    title.appendChild(el("span", "muted", "\\u00b7 weakest similarity " + g.weakest.toFixed(4) + " \\u00b7 keep " +
      (g.members.find(function (m) { return m.k; }) || { path: g.keeper }).path));
    section.appendChild(title);
    const grid = el("div", "members");
    for (const m of g.members) grid.appendChild(member(m));
    section.appendChild(grid);
    return section;
  }
  function render() {
    const shown = groups.filter(matches);
    const pages = Math.max(1, Math.ceil(shown.length / pageSize));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * pageSize;
    const nodes = shown.slice(start, start + pageSize).map(group);
    if (!nodes.length) nodes.push(el("p", null, groups.length ? "No group matches the filters." : "No duplicates."));
    if (!nodes[0].classList.contains("group")) nodes[0].id = "empty";
    list.replaceChildren.apply(list, nodes);
    $("page-info").textContent = "page " + (state.page + 1) + " of " + pages;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
    $("shown").textContent = shown.length + " of " + groups.length + " groups shown";
    $("shown").dataset.count = String(shown.length);
    minInput.value = String(state.min); maxInput.value = String(state.max); search.value = state.q;
    $("min-out").textContent = state.min.toFixed(3); $("max-out").textContent = state.max.toFixed(3);
    writeHash();
  }
  const images = groups.reduce(function (n, g) { return n + g.members.length; }, 0);
  const removable = groups.reduce(function (n, g) {
    return n + g.members.filter(function (m) { return !m.k; }).reduce(function (b, m) { return b + m.b; }, 0);
  }, 0);
  $("summary").textContent = groups.length + " groups, " + images + " images; " + (images - groups.length) +
    " could go (" + bytes(removable) + ") keeping one per group (" + data.keep + ")" +
    " \\u00b7 threshold " + (data.threshold ? data.threshold.toFixed(4) : "server default") +
    " \\u00b7 " + data.generated_at;
  minInput.addEventListener("input", function () {
    state.min = parseFloat(minInput.value); if (state.max < state.min) state.max = state.min; state.page = 0; render();
  });
  maxInput.addEventListener("input", function () {
    state.max = parseFloat(maxInput.value); if (state.min > state.max) state.min = state.max; state.page = 0; render();
  });
  search.addEventListener("input", function () { state.q = search.value.trim(); state.page = 0; render(); });
  $("prev").addEventListener("click", function () { state.page -= 1; render(); window.scrollTo(0, 0); });
  $("next").addEventListener("click", function () { state.page += 1; render(); window.scrollTo(0, 0); });
  window.addEventListener("hashchange", function () { readHash(); render(); });
  readHash();
  render();
  document.body.dataset.ready = "1";
})();
</script>
</body>
</html>
"""
