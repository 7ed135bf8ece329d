"""The layout thumbnail (Pillow's luma and box filter) is the per-cell mean grey, to within one level."""

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


def _thumb(layout: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(layout), dtype=np.uint8).astype(int)


@pytest.mark.parametrize("smooth", [pytest.param(False, id="noise"), pytest.param(True, id="photo-like")])
def test_layout_is_the_cell_mean_thumbnail(smooth: bool) -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        pixels = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
        if smooth:  # gradients and flat areas, where rounding differences would show most
            ramp = np.linspace(0, 255, 224)
            pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (224, 1)), np.full((224, 224), 40.0)], -1)
            pixels = pixels.astype(np.uint8)
        thumb = _thumb(layout_of(pixels))
        assert thumb.shape == (SIDE * SIDE,)
        assert np.abs(thumb - np.frombuffer(per_cell(pixels), dtype=np.uint8).astype(int)).max() <= 1


def test_layout_of_other_sizes() -> None:
    # Cells that do not divide the image evenly: Pillow's box filter weighs the pixels a cell cuts by overlap.
    pixels = np.zeros((50, 37, 3), dtype=np.uint8)
    pixels[:, :, 1] = 200  # green: luma 0.587 * 200 = 117.4
    pixels[:25] = 0  # the top half black
    thumb = _thumb(layout_of(pixels)).reshape(SIDE, SIDE)
    assert (thumb[: SIDE // 2] == 0).all() and (thumb[SIDE // 2 :] == 117).all()
