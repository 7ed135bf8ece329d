"""Real embeddings of real photos and of their edits, decoded as the front decodes (grey when the model reads
luma), with the signature and layout the service stores; cached per model and photo count."""

from __future__ import annotations

import dataclasses
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from dedup_bench import measure
from dedup_bench.photos import encode_jpeg, source_photos, variant
from dedup_server.decode import DecodeLimits, decode_with_thumbnail
from dedup_server.layout import layout_of
from dedup_server.verification import signature
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

EDITS = ("planted", "light", "heavy")  # planted: stored beside its original; light, heavy: the queries


@dataclasses.dataclass(frozen=True)
class RealSet:
    originals: np.ndarray  # [P, D]: one distinct photo each, stored
    planted: np.ndarray  # [P, D]: an edit of each (grey + resized to 60 %, re-encoded), stored too
    light: np.ndarray  # [P, D]: queries, JPEG q=60 and 5 % brighter
    heavy: np.ndarray  # [P, D]: queries, another crop (45-100 %), maybe mirrored, exposure and contrast changed
    original_signatures: list[str]
    planted_signatures: list[str]
    original_layouts: list[str]
    planted_layouts: list[str]


def _edits(photo: Image.Image, rng: np.random.Generator) -> dict[str, bytes]:
    photo = photo.convert("RGB")
    small = ImageOps.grayscale(photo).resize((max(1, photo.width * 3 // 5), max(1, photo.height * 3 // 5)))
    bright = photo.point(lambda v: min(255, int(v * 1.05)))
    out = io.BytesIO()
    bright.save(out, format="JPEG", quality=60)
    return {"original": encode_jpeg(photo, quality=92), "planted": encode_jpeg(small.convert("RGB"), quality=80),
            "light": out.getvalue(), "heavy": encode_jpeg(variant(photo, rng), quality=85)}


def real_set(model_file: Path, eval_cache: Path, cache_dir: Path, *, photos: int, grey: bool) -> RealSet:
    key = f"{model_file.stat().st_size}-{int(model_file.stat().st_mtime)}-{photos}-{int(grey)}"
    cached = cache_dir / f"real-{key}.npz"
    if cached.is_file():
        data = np.load(cached, allow_pickle=False)
        return RealSet(originals=data["originals"], planted=data["planted"], light=data["light"],
                       heavy=data["heavy"], original_signatures=list(data["original_signatures"]),
                       planted_signatures=list(data["planted_signatures"]),
                       original_layouts=list(data["original_layouts"]), planted_layouts=list(data["planted_layouts"]))
    sources = source_photos(eval_cache)[:photos]
    rng = np.random.default_rng(17)
    encoded = [_edits(photo, rng) for photo in sources]
    limits = DecodeLimits()

    def decode(data: bytes) -> tuple[np.ndarray, str, str]:
        decoded = decode_with_thumbnail(data, limits, grey=grey, thumbnail_side=signature.SIDE)
        return decoded.pixels, layout_of(decoded.pixels), signature.make_signature(decoded.thumbnail)

    session = measure.cpu_session(model_file)
    kinds: dict[str, tuple[np.ndarray, list[str], list[str]]] = {}
    with ThreadPoolExecutor(2) as pool:
        for kind in ("original", *EDITS):
            decoded = list(pool.map(decode, [e[kind] for e in encoded]))
            pixels = np.stack([d[0] for d in decoded])
            kinds[kind] = (measure.embed_all(session, pixels), [d[1] for d in decoded], [d[2] for d in decoded])
            logger.info("embedded %d %s images", len(pixels), kind)
    result = RealSet(
        originals=kinds["original"][0], planted=kinds["planted"][0], light=kinds["light"][0],
        heavy=kinds["heavy"][0], original_signatures=kinds["original"][2], planted_signatures=kinds["planted"][2],
        original_layouts=kinds["original"][1], planted_layouts=kinds["planted"][1],
    )
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(cached, originals=result.originals, planted=result.planted, light=result.light, heavy=result.heavy,
             original_signatures=np.array(result.original_signatures), planted_signatures=np.array(
                 result.planted_signatures), original_layouts=np.array(result.original_layouts),
             planted_layouts=np.array(result.planted_layouts))
    return result
