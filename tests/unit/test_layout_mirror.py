"""A match is mirrored only when the mirrored layout explains it clearly: the real files of the bug report."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from dedup_server.decode import DecodeLimits, decode_image
from dedup_server.layout import is_mirror, layout_of


def _layout(path: Path, grey: bool) -> str:
    return layout_of(decode_image(path.read_bytes(), DecodeLimits(), grey=grey))


@pytest.mark.parametrize("grey", [pytest.param(True, id="grey-decoding"), pytest.param(False, id="colour")])
def test_rotated_copy_is_not_mirrored_and_a_flip_is(eval_dir: Path, grey: bool) -> None:
    gray = _layout(eval_dir / "ukbench00120_gray.jpg", grey)
    rotation = _layout(eval_dir / "mixed_images" / "ukbench00120_rotation.jpg", grey)
    hflip = _layout(eval_dir / "mixed_images" / "ukbench00120_hflip.jpg", grey)
    original = _layout(eval_dir / "base_images" / "ukbench00120.jpg", grey)
    resize = _layout(eval_dir / "mixed_images" / "ukbench00120_resize.jpg", grey)
    # The bug: the grey copy listed the 8-degree rotation as mirrored (own 0.30, mirrored 0.44: neither explains it).
    assert not is_mirror(gray, rotation) and not is_mirror(rotation, gray)
    assert not is_mirror(original, rotation)
    for unmirrored in (gray, original, resize):
        assert is_mirror(unmirrored, hflip) and is_mirror(hflip, unmirrored)
    for a, b in itertools.permutations((gray, original, resize), 2):
        assert not is_mirror(a, b)
