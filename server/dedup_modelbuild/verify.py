"""Check an exported ONNX file before it is installed: same numbers as torch, unit norms, and
embeddings that mean something (a photo is closer to its own flip or downscale than to any other photo,
and unrelated photos are far apart). The verification photos must be distinct from each other.

Random or wrongly normalised weights fail the last check; a broken export fails the first ones.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image

from .card import VerificationReport
from .errors import ExportVerificationError
from .graph import INPUT_NAME, OUTPUT_NAME, EmbeddingGraph
from .photos import to_input

logger = logging.getLogger(__name__)

MIN_COSINE_TORCH_VS_ONNX: Final = 0.9999
MAX_NORM_ERROR: Final = 1e-4
MIN_COSINE_BATCH_VS_SINGLE: Final = 0.99999
MAX_MEDIAN_COSINE_DIFFERENT: Final = 0.8
"""Pretrained CNNs put unrelated photos well apart (EfficientNet-Lite0 ~0.25, ResNet-50 pooled features higher
because they are non-negative); random weights put everything near 0.95."""


def cpu_session(path: Path, *, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    (embeddings,) = session.run([OUTPUT_NAME], {INPUT_NAME: images})
    return np.asarray(embeddings, dtype=np.float32)


def verify_export(
    graph: EmbeddingGraph, onnx_path: Path, photos: list[Image.Image], *, check_meaning: bool = True
) -> VerificationReport:
    """Compare ``onnx_path`` with ``graph`` on ``photos``; raise ExportVerificationError on any failure.

    ``check_meaning`` is off only for tests with random weights, whose features mean nothing.
    """
    if len(photos) < 3:
        raise ExportVerificationError(f"need at least 3 photos to verify, got {len(photos)}")
    session = cpu_session(onnx_path)
    originals = np.stack([to_input(p) for p in photos])
    with torch.no_grad():
        reference = graph.eval()(torch.from_numpy(originals)).numpy()
    embedded = _run(session, originals)

    cosine = np.sum(reference * embedded, axis=1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(embedded, axis=1)
    )
    max_abs = float(np.max(np.abs(reference - embedded)))
    single = _run(session, originals[:1])[0]
    batch_vs_single = float(np.dot(single, embedded[0]) / (np.linalg.norm(single) * np.linalg.norm(embedded[0])))

    variants = []
    for photo in photos:
        width, height = photo.size
        variants.append(to_input(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
        variants.append(to_input(photo.resize((max(1, width // 2), max(1, height // 2)), Image.Resampling.BILINEAR)))
    variant_embeddings = _run(session, np.stack(variants))
    all_norms = np.linalg.norm(np.concatenate([embedded, variant_embeddings, single[None]]), axis=1)

    near = np.sum(np.repeat(embedded, 2, axis=0) * variant_embeddings, axis=1)
    similarity = embedded @ embedded.T
    different = similarity[~np.eye(len(photos), dtype=bool)]
    report = VerificationReport(
        images=len(photos),
        min_cosine_torch_vs_onnx=float(np.min(cosine)),
        max_abs_diff_torch_vs_onnx=max_abs,
        max_norm_error=float(np.max(np.abs(all_norms - 1.0))),
        min_cosine_batch_vs_single=batch_vs_single,
        min_cosine_near_duplicate=float(np.min(near)),
        max_cosine_different=float(np.max(different)),
        median_cosine_different=float(np.median(different)),
    )
    logger.info(
        "verify: torch vs ONNX min cosine %.7f (max |diff| %.2e); max | ||e|| - 1 | %.1e; batch vs single %.7f",
        report.min_cosine_torch_vs_onnx,
        report.max_abs_diff_torch_vs_onnx,
        report.max_norm_error,
        report.min_cosine_batch_vs_single,
    )
    logger.info(
        "verify: near-duplicates (flip, 50%% downscale) cosine >= %.3f; different photos cosine <= %.3f "
        "(median %.3f)",
        report.min_cosine_near_duplicate,
        report.max_cosine_different,
        report.median_cosine_different,
    )

    failures = []
    if report.min_cosine_torch_vs_onnx < MIN_COSINE_TORCH_VS_ONNX:
        failures.append(f"ONNX differs from torch: cosine {report.min_cosine_torch_vs_onnx:.6f}")
    if report.max_norm_error > MAX_NORM_ERROR:
        failures.append(f"embeddings are not unit length (error {report.max_norm_error:.2e})")
    if report.min_cosine_batch_vs_single < MIN_COSINE_BATCH_VS_SINGLE:
        failures.append(f"batching changes the result: cosine {report.min_cosine_batch_vs_single:.6f}")
    if check_meaning and report.min_cosine_near_duplicate <= report.max_cosine_different:
        failures.append(
            f"features look meaningless: a near-duplicate scores {report.min_cosine_near_duplicate:.3f} but two "
            f"different photos score {report.max_cosine_different:.3f} (wrong weights or normalisation, or the "
            "verification folder holds duplicates?)"
        )
    if check_meaning and report.median_cosine_different > MAX_MEDIAN_COSINE_DIFFERENT:
        failures.append(
            f"features look meaningless: different photos have median cosine {report.median_cosine_different:.3f} "
            f"(> {MAX_MEDIAN_COSINE_DIFFERENT}); random or wrongly loaded weights give about 0.95"
        )
    if failures:
        raise ExportVerificationError(f"{onnx_path}: " + "; ".join(failures))
    return report
