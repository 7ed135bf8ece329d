"""The layout thumbnail's vectorised block mean gives the same thumbnail as the per-cell definition."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from dedup_server.layout import SIDE, layout_of


def per_cell(pixels: np.ndarray) -> bytes:
    grey = pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    rows = np.array_split(np.arange(grey.shape[0]), SIDE)
    cols = np.array_split(np.arange(grey.shape[1]), SIDE)
    thumb = np.array([[grey[np.ix_(r, c)].mean() for c in cols] for r in rows], dtype=np.float32)
    return np.clip(np.rint(thumb), 0, 255).astype(np.uint8).tobytes()


@pytest.mark.parametrize("shape", [pytest.param((224, 224, 3), id="model-input"), pytest.param((50, 37, 3), id="odd")])
def test_layout_is_the_block_mean_thumbnail(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        assert base64.b64decode(layout_of(pixels)) == per_cell(pixels)
