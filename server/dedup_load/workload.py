"""What the load clients send: real photos and transformed copies of them (the edits people re-upload)."""

from __future__ import annotations

import random
from pathlib import Path

from dedup_eval.transforms import DISTRACTOR_TRANSFORMS, apply
from PIL import Image, UnidentifiedImageError

DEFAULT_EVAL_DIR = Path(__file__).resolve().parents[3] / "shared" / "eval" / "imagededup"
_PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


class Workload:
    """Every photo under `eval_dir` (JPEG/PNG) as JPEG, plus seeded copies: scaled, cropped, grey, re-encoded."""

    def __init__(self, eval_dir: Path = DEFAULT_EVAL_DIR, *, seed: int = 0) -> None:
        paths = sorted(p for p in eval_dir.rglob("*") if p.suffix.lower() in _PHOTO_SUFFIXES)
        images: list[bytes] = []
        for n, path in enumerate(paths):
            try:
                with Image.open(path) as opened:
                    photo = opened.convert("RGB")
            except (OSError, UnidentifiedImageError):
                continue  # the corpus holds a few deliberately broken files
            images.extend(apply(name, photo, seed + n) for name in DISTRACTOR_TRANSFORMS)
        if not images:
            raise FileNotFoundError(f"no photos under {eval_dir} (set DEDUP_EVAL_DIR or --eval-dir)")
        self.images = images
        self.photos = len(images) // len(DISTRACTOR_TRANSFORMS)

    def pick(self, rng: random.Random) -> bytes:
        return rng.choice(self.images)

    @property
    def mean_bytes(self) -> float:
        return sum(len(image) for image in self.images) / len(self.images)
