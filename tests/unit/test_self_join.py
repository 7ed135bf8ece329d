"""The front's self-join for FindDuplicateGroups (self_join.py): exact up to its limit, an IVF join above it, bounded
by a spill file on disk; against brute force on vectors with planted copies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dedup_server.self_join import JoinCancelled, JoinConfig, VectorSpill, nearest_others


def _collection(rows: int, dim: int, pairs: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Clustered vectors (a common direction, 20 themes, noise) and `pairs` planted near copies: (vectors, pairs)."""
    rng = np.random.default_rng(seed)
    themes = rng.standard_normal((20, dim))
    vectors = 0.8 * rng.standard_normal(dim) + themes[rng.integers(0, 20, rows)] + rng.standard_normal((rows, dim))
    chosen = rng.choice(rows, size=2 * pairs, replace=False).reshape(pairs, 2)
    vectors[chosen[:, 1]] = vectors[chosen[:, 0]] + 0.15 * rng.standard_normal((pairs, dim))
    return vectors.astype(np.float32), chosen


def _spill(vectors: np.ndarray, directory: Path) -> VectorSpill:
    spill = VectorSpill(vectors.shape[1], directory)
    for start in range(0, len(vectors), 97):  # pages of an odd size, as a scan hands them over
        spill.append(vectors[start:start + 97])
    return spill


def _brute_force(vectors: np.ndarray, k: int, min_similarity: float) -> list[list[tuple[int, float]]]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    found = []
    for row in similarity:
        best = np.argsort(-row, kind="stable")[:k]
        found.append([(int(j), float(row[j])) for j in best if row[j] >= min_similarity])
    return found


def test_up_to_its_limit_the_join_is_exact(tmp_path: Path) -> None:
    vectors, _ = _collection(1_500, 48, 40)
    spill = _spill(vectors, tmp_path)
    found = nearest_others(spill, k=4, min_similarity=0.3, config=JoinConfig(exact_max_rows=1_500))
    expected = _brute_force(vectors, 4, 0.3)
    for row in range(len(vectors)):
        got = found.of(row)
        assert [j for j, _ in got] == [j for j, _ in expected[row]]
        assert np.allclose([s for _, s in got], [s for _, s in expected[row]], atol=1e-5)
    spill.close()


def test_above_it_the_clustered_join_finds_every_planted_copy_with_its_true_cosine(tmp_path: Path) -> None:
    vectors, pairs = _collection(6_000, 48, 60)
    spill = _spill(vectors, tmp_path)
    done: list[int] = []
    config = JoinConfig(exact_max_rows=1_000, rows_per_list=200, probes=4)  # 30 lists, 4 probed by each row
    found = nearest_others(spill, k=3, min_similarity=0.5, config=config, progress=done.append)
    for a, b in pairs:
        assert found.of(int(a))[0][0] == b and found.of(int(b))[0][0] == a
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for row in range(0, len(vectors), 250):
        for other, similarity in found.of(row):
            assert other != row and similarity >= 0.5
            assert similarity == pytest.approx(float(unit[row] @ unit[other]), abs=1e-5)
    assert done == sorted(done) and done[-1] == len(vectors)
    # It compared far fewer pairs than all of them; the file was rewritten in list order and is still whole.
    assert len(spill) == len(vectors) and spill.path.stat().st_size == len(vectors) * spill.row_bytes
    spill.close()


def test_it_stops_when_asked_and_the_spill_leaves_nothing_behind(tmp_path: Path) -> None:
    vectors, _ = _collection(3_000, 16, 10)
    spill = _spill(vectors, tmp_path)
    with pytest.raises(JoinCancelled):
        nearest_others(spill, k=2, min_similarity=0.5, config=JoinConfig(exact_max_rows=100, rows_per_list=100),
                       should_stop=lambda: True)
    assert list(tmp_path.iterdir())
    spill.close()
    assert not list(tmp_path.iterdir())


def test_a_spill_takes_only_vectors_of_its_dimension(tmp_path: Path) -> None:
    spill = VectorSpill(8, tmp_path)
    with pytest.raises(ValueError, match="dimension 8"):
        spill.append(np.zeros((2, 9), dtype=np.float32))
    assert nearest_others(spill, k=3, min_similarity=0.0).rows.shape == (0, 3)
    spill.close()
