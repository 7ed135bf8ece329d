"""Background vectors whose neighbour similarities match real unrelated photos: a Gaussian in the PCA subspace of
real embeddings, with related photos in clusters.

Fit, on real embeddings of distinct photos (the evaluation corpus): their mean and principal directions (all of
them the sample has, plus an isotropic residual when there are fewer). Each background vector is, on its own, a
draw of that Gaussian: the fitted covariance unchanged, so the mean pairwise cosine is the real one and real
photos sit inside the background, not at its edge (a shrunk Gaussian makes the real vectors outliers that an HNSW
graph reaches badly). Real collections also hold related photos (several shots of one scene, the UKBench objects):
vectors come in clusters of 1 + Poisson(λ) members that share a part sqrt(1 - w²) of their draw and differ by w.
λ and w are chosen on a grid so that the top-1 neighbour similarity among as many vectors as there are real
photos matches the real one's quantiles (printed: fitted vs real). Generation is by seeded chunks (clusters do
not cross chunks), so the bench never holds a million vectors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)
_WITHIN = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
_CLUSTER_EXTRA = (0.0, 0.25, 0.5, 1.0, 1.5, 2.5)


@dataclasses.dataclass(frozen=True)
class BackgroundModel:
    mean: np.ndarray  # [D]
    components: np.ndarray  # [K, D], orthonormal rows
    stddevs: np.ndarray  # [K]
    residual_std: float  # per dimension, outside the subspace
    within: float = 1.0
    """How much of a vector's draw is its own (w); the rest is its cluster's. 1: no clusters."""
    cluster_extra: float = 0.0
    """Mean number of other members in a vector's cluster (λ of the Poisson)."""

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def _draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        z = rng.standard_normal((count, len(self.stddevs)), dtype=np.float32) * self.stddevs
        deviation = z @ self.components
        if self.residual_std > 0:
            noise = rng.standard_normal((count, self.dim), dtype=np.float32) * self.residual_std
            deviation += noise - (noise @ self.components.T) @ self.components  # outside the subspace only
        return deviation

    def sample(self, count: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        sizes = 1 + rng.poisson(self.cluster_extra, size=count)
        cluster = np.repeat(np.arange(count), sizes)[:count]  # cluster of each vector
        shared = self._draw(int(cluster[-1]) + 1, rng)[cluster] if count else np.zeros((0, self.dim), np.float32)
        own = self._draw(count, rng)
        vectors = self.mean + np.sqrt(1 - self.within ** 2) * shared + self.within * own
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors.astype(np.float32, copy=False)

    def chunks(self, count: int, *, chunk: int, seed: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, vectors) for rows [0, count), chunk by chunk; the same seed gives the same vectors."""
        for start in range(0, count, chunk):
            yield start, self.sample(min(chunk, count - start), seed + start // chunk)


def top1_similarities(vectors: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """Each vector's best cosine to another vector of the set (or of ``others``), unit vectors."""
    sims = vectors @ (vectors if others is None else others).T
    if others is None:
        np.fill_diagonal(sims, -np.inf)
    return sims.max(axis=1)


def quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{round(q * 100)}": round(float(np.quantile(values, q)), 4) for q in QUANTILES}


def _mean_cosine(vectors: np.ndarray) -> float:
    return round(float((vectors @ vectors.T)[np.triu_indices(len(vectors), 1)].mean()), 4)


def fit(real: np.ndarray, *, components: int = 0, seed: int = 1) -> tuple[BackgroundModel, dict[str, object]]:
    """Fit on real embeddings of distinct photos (``components`` 0: all the sample has); returns the model and the
    fitted-vs-real report."""
    mean = real.mean(axis=0)
    _, singular, vt = np.linalg.svd(real - mean, full_matrices=False)
    k = min(components or len(real) - 1, len(real) - 1)
    stddevs = (singular[:k] / np.sqrt(len(real) - 1)).astype(np.float32)
    residual_var = float((singular[k:] ** 2).sum() / (len(real) - 1)) / max(1, real.shape[1] - k)
    base = BackgroundModel(mean=mean.astype(np.float32), components=vt[:k].astype(np.float32), stddevs=stddevs,
                           residual_std=float(np.sqrt(residual_var)))
    target = top1_similarities(real)
    goal = np.quantile(target, QUANTILES)
    best: tuple[float, BackgroundModel] | None = None
    for within in _WITHIN:
        for extra in _CLUSTER_EXTRA:
            candidate = dataclasses.replace(base, within=within, cluster_extra=extra)
            errors = [np.abs(np.quantile(top1_similarities(candidate.sample(len(real), seed + s)), QUANTILES) - goal)
                      .mean() for s in range(2)]
            if best is None or float(np.mean(errors)) < best[0]:
                best = (float(np.mean(errors)), candidate)
    assert best is not None
    fitted = best[1]
    check = fitted.sample(len(real), seed + 1000)  # a fresh sample, not one the grid chose on
    # Are real photos typical members of the background? Their best cosine to it vs its own members'.
    crowd = fitted.sample(20 * len(real), seed + 3000)
    report: dict[str, object] = {
        "photos": len(real), "pca_components": k, "within": fitted.within, "cluster_extra": fitted.cluster_extra,
        "real_top1": quantiles(target), "fitted_top1": quantiles(top1_similarities(check)),
        "real_mean_cosine": _mean_cosine(real), "fitted_mean_cosine": _mean_cosine(check),
        "real_to_background_top1_p50": round(float(np.median(top1_similarities(real, crowd))), 4),
        "background_to_background_top1_p50": round(float(np.median(top1_similarities(crowd[: len(real)], crowd[
            len(real):]))), 4),
        "background_size_for_that": len(crowd) - len(real),
    }
    return fitted, report
