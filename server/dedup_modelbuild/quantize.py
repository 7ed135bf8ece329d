"""Static INT8 quantisation of the exported FP32 embedding ONNX: a separate step applied to whatever the export wrote.

Recipe (measured on this kind of 2-core AVX-512 VNNI CPU; see shared/notes/model.md): QDQ format, per-channel
symmetric INT8 weights, unsigned INT8 activations, ranges calibrated on real photos pushed through exactly the
serving preprocessing (uint8 NHWC, direct resize). Dynamic quantisation is ~20x slower here: never use it.

What stays FP32, and why:
* the head of the graph, before the first convolution (uint8 -> float cast and the per-channel normalisation):
  the graph input stays uint8 NHWC, and quantising the normalisation would only round pixel values twice;
* the first ``LEADING_FP32_CONVS`` convolutions, at full resolution, where activations still follow the pixels:
  one UINT8 range per tensor, calibrated on ordinary photos, leaves a dark photo only a few levels there.
  Measured on EfficientNet-Lite0 (INT8 vs FP32 cosine on scikit-image photos at exposures 0.15x-1.6x, and on
  the evaluation corpus afterwards): 0 FP32 convs: median 0.961 at 0.15x exposure, min 0.83, a dark wallpaper
  0.63; 3: median 0.988, min 0.93; 6: median 0.997 at every exposure, min 0.988 (the knee); 10: no better.
  Cost: 264 vs 290 images/s at batch 32 (FP32: 162);
* the tail, after the last convolution (activation, pooling, max-scaling and L2 normalisation): pooling averages
  away most quantisation noise, and the unit length of the output is a contract (cosine == dot product).

The calibration photos must not be the evaluation harness's photos (server/dedup_eval): by default they are the
real photos bundled with scikit-image (photos.CALIBRATION_PHOTOS), each seen as a few seeded crops, flips and
exposure changes so the ranges cover the transformations duplicates undergo. The check after quantising runs on
other photos (the build's verification photos).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from PIL import Image, ImageEnhance

from .card import QuantizationReport
from .errors import ExportVerificationError
from .graph import INPUT_NAME, OUTPUT_NAME
from .photos import to_input
from .verify import cpu_session

logger = logging.getLogger(__name__)

CALIBRATION_METHODS: Final = {method.name: method for method in CalibrationMethod}
DEFAULT_CALIBRATION_METHOD: Final = "Percentile"
LEADING_FP32_CONVS: Final = 6
MIN_MEDIAN_COSINE: Final = 0.95
"""Refuse an INT8 model whose embeddings drift this far from FP32 (measured: median ~0.99 when calibrated well)."""


def calibration_inputs(photos: Sequence[Image.Image], *, variants: int = 6, seed: int = 0) -> np.ndarray:
    """uint8 [N, 224, 224, 3]: each photo as is plus ``variants - 1`` seeded crops, flips and exposure changes."""
    rng = np.random.default_rng(seed)
    inputs = []
    for photo in photos:
        rgb = photo.convert("RGB")
        inputs.append(to_input(rgb))
        width, height = rgb.size
        for _ in range(variants - 1):
            scale = rng.uniform(0.6, 0.95)
            crop_w, crop_h = max(1, int(width * scale)), max(1, int(height * scale))
            left = int(rng.integers(0, width - crop_w + 1))
            top = int(rng.integers(0, height - crop_h + 1))
            variant = rgb.crop((left, top, left + crop_w, top + crop_h))
            if rng.random() < 0.5:
                variant = variant.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            variant = ImageEnhance.Brightness(variant).enhance(rng.uniform(0.7, 1.3))
            inputs.append(to_input(variant))
    return np.stack(inputs)


class _BatchReader(CalibrationDataReader):
    """Feeds the calibrator batches of uint8 images, all of one size: the histogram calibrators stack them, so a
    short last batch is filled up from the start of the set."""

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        batch_size = min(batch_size, len(images))
        count = -(-len(images) // batch_size) * batch_size
        padded = np.take(images, np.arange(count) % len(images), axis=0)
        self._batches = [padded[i : i + batch_size] for i in range(0, count, batch_size)]
        self._iterator: Iterator[np.ndarray] = iter(self._batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iterator, None)
        return None if batch is None else {INPUT_NAME: batch}

    def rewind(self) -> None:
        self._iterator = iter(self._batches)


def fp32_nodes(model: onnx.ModelProto, *, leading_convs: int = LEADING_FP32_CONVS) -> list[str]:
    """Names of the nodes that stay FP32: those before the first Conv (head), the first ``leading_convs`` Convs,
    and those after the last Conv (tail)."""
    nodes = list(model.graph.node)  # topologically sorted, as ONNX requires
    conv_positions = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    if not conv_positions:
        raise ExportVerificationError("the model has no Conv node: nothing to quantise")
    head = nodes[: conv_positions[0]]
    leading = [nodes[i] for i in conv_positions[: min(leading_convs, len(conv_positions) - 1)]]
    tail = nodes[conv_positions[-1] + 1 :]
    kept = head + leading + tail
    unnamed = [node.op_type for node in kept if not node.name]
    if unnamed:
        raise ExportVerificationError(f"nodes without names cannot be excluded from quantisation: {unnamed[:5]}")
    return [node.name for node in kept]


def quantize_embedder(
    fp32_path: Path,
    int8_path: Path,
    calibration: np.ndarray,
    *,
    method: str = DEFAULT_CALIBRATION_METHOD,
    batch_size: int = 16,
) -> int:
    """Write the INT8 QDQ model for ``fp32_path`` to ``int8_path`` atomically; returns how many nodes stay FP32."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}: one of {sorted(CALIBRATION_METHODS)}")
    if calibration.dtype != np.uint8 or calibration.ndim != 4 or len(calibration) == 0:
        raise ValueError(f"calibration must be uint8 [N, H, W, 3], got {calibration.dtype} {calibration.shape}")
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=int8_path.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        # Shape inference (symbolic, then ONNX) and ORT's basic fusions first, as ORT's quantiser expects.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        model = onnx.load(str(prepared))
        excluded = fp32_nodes(model)
        logger.info("quantising %s: %d nodes stay FP32 (%s ... %s)", fp32_path, len(excluded), excluded[0],
                    excluded[-1])
        extra_options = {"ActivationSymmetric": False, "WeightSymmetric": True}
        tmp = Path(work) / "int8.onnx"
        with _quiet_root_logger():
            quantize_static(
                str(prepared),
                str(tmp),
                _BatchReader(calibration, batch_size),
                quant_format=QuantFormat.QDQ,
                # Every op type ORT can quantise: Clip/Relu after a Conv must be among them, so the quantiser folds
                # them into the Conv's output range (quantising only Conv leaves them FP32: cosine fell to 0.83).
                op_types_to_quantize=None,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=excluded,
                calibrate_method=CALIBRATION_METHODS[method],
                extra_options=extra_options,
            )
        quantized = onnx.load(str(tmp))
        # Keep the export's metadata (model id, weights, recipe) and say what was done on top.
        del quantized.metadata_props[:]
        for prop in onnx.load(str(fp32_path), load_external_data=False).metadata_props:
            quantized.metadata_props.add(key=prop.key, value=prop.value)
        quantized.metadata_props.add(key="precision", value="int8")
        quantized.metadata_props.add(key="calibration", value=f"{method}, {len(calibration)} inputs")
        onnx.save_model(quantized, str(tmp), save_as_external_data=False)
        onnx.checker.check_model(str(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, int8_path)
    logger.info("wrote %s (%.1f MB)", int8_path, int8_path.stat().st_size / 1e6)
    return len(excluded)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ORT's quantiser logs one INFO line per rescaled weight channel (hundreds) on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def embed(path: Path, images: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    session = cpu_session(path)
    parts = [
        session.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size]})[0]
        for i in range(0, len(images), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32, copy=False)


def compare_precisions(fp32_path: Path, int8_path: Path, images: np.ndarray) -> tuple[float, float, float]:
    """(median cosine, min cosine, max | ||e|| - 1 |) of INT8 against FP32 embeddings of ``images``."""
    reference, quantized = embed(fp32_path, images), embed(int8_path, images)
    norms = np.linalg.norm(quantized, axis=1)
    cosine = np.sum(reference * quantized, axis=1) / (np.linalg.norm(reference, axis=1) * norms)
    return float(np.median(cosine)), float(np.min(cosine)), float(np.max(np.abs(norms - 1.0)))


def build_int8(
    fp32_path: Path,
    int8_path: Path,
    *,
    calibration_photos: Sequence[Image.Image],
    calibration_source: str,
    compare_photos: Sequence[Image.Image],
    compare_source: str,
    method: str = DEFAULT_CALIBRATION_METHOD,
) -> QuantizationReport:
    """Quantise, compare with FP32 on ``compare_photos`` (other photos than the calibration ones), and install
    ``int8_path`` only when the INT8 embeddings stay close to FP32 and of unit length."""
    started = time.perf_counter()
    calibration = calibration_inputs(calibration_photos)
    staging = int8_path.with_name(f".staging-{int8_path.name}")  # *.onnx: git-ignored if left behind
    try:
        kept = quantize_embedder(fp32_path, staging, calibration, method=method)
        compared = calibration_inputs(compare_photos, variants=3, seed=1)
        median, minimum, norm_error = compare_precisions(fp32_path, staging, compared)
        logger.info(
            "INT8 vs FP32 on %d inputs from %s: cosine median %.4f, min %.4f; max | ||e|| - 1 | %.1e",
            len(compared), compare_source, median, minimum, norm_error,
        )
        if median < MIN_MEDIAN_COSINE or norm_error > 1e-3:
            raise ExportVerificationError(
                f"INT8 model drifts from FP32: median cosine {median:.4f} (minimum allowed {MIN_MEDIAN_COSINE}), "
                f"norm error {norm_error:.1e}; calibrate with more representative photos or build --precision fp32"
            )
        os.replace(staging, int8_path)
    finally:
        staging.unlink(missing_ok=True)
    return QuantizationReport(
        method=method,
        calibration_inputs=len(calibration),
        calibration_source=calibration_source,
        compared_images=len(compared),
        compared_source=compare_source,
        median_cosine_int8_vs_fp32=round(median, 5),
        min_cosine_int8_vs_fp32=round(minimum, 5),
        fp32_nodes=kept,
        seconds=round(time.perf_counter() - started, 1),
    )
