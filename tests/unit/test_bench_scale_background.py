"""The bench-scale background (dedup_bench_scale/background.py): its fit follows the real neighbour similarities,
keeps the real mean cosine, and its chunks are reproducible without holding every vector."""

from __future__ import annotations

import numpy as np
from dedup_bench_scale import background


def _real_like(count: int = 300, dim: int = 128, seed: int = 0) -> np.ndarray:
    """Unit vectors with a common direction and some related pairs, as photo embeddings have."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0.6, 1.0, size=(count, dim))
    base[1::3] = base[0::3][: len(base[1::3])] + rng.normal(0, 0.6, size=(len(base[1::3]), dim))
    return (base / np.linalg.norm(base, axis=1, keepdims=True)).astype(np.float32)


def test_fit_matches_the_real_top1_quantiles_and_mean_cosine() -> None:
    model, report = background.fit(_real_like())
    real, fitted = report["real_top1"], report["fitted_top1"]
    assert isinstance(real, dict) and isinstance(fitted, dict)
    assert abs(fitted["p50"] - real["p50"]) < 0.08 and abs(fitted["p90"] - real["p90"]) < 0.1
    assert abs(float(report["fitted_mean_cosine"]) - float(report["real_mean_cosine"])) < 0.05  # type: ignore[arg-type]
    assert model.dim == 128


def test_chunks_are_unit_vectors_and_reproducible() -> None:
    model, _ = background.fit(_real_like())
    first = list(model.chunks(2500, chunk=1000, seed=3))
    assert [start for start, _ in first] == [0, 1000, 2000] and len(first[-1][1]) == 500
    again = list(model.chunks(2500, chunk=1000, seed=3))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(first, again, strict=True))
    assert np.allclose(np.linalg.norm(first[0][1], axis=1), 1.0, atol=1e-5)
